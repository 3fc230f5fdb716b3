"""The OpenAPI document as a contract a generated client can rely on (issue 25)."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from escrowflow.api.app import create_app
from escrowflow.event_bodies import BODIES, EventNote, party_events
from escrowflow.settings import Settings
from tests.helpers import Scenario
from tests.live import Api
from workflows.registry import EFFECTS


def _document(sc: Scenario) -> dict[str, Any]:
    return create_app(Settings(), engine=sc.engine).openapi()


def test_the_document_validates_and_every_party_event_has_its_operation_and_model(
    sc: Scenario,
) -> None:
    document = _document(sc)
    validate(document)  # raises on any breach of OpenAPI 3.1
    schemas = document["components"]["schemas"]
    operations = {
        op["operationId"]: op for ops in document["paths"].values() for op in ops.values()
    }
    for entity, event in party_events():
        operation = operations[f"{entity}_{event}"]
        model = BODIES.get((entity, event), EventNote)
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model.__name__}"}, (entity, event)
        assert model.__name__ in schemas
        effect = EFFECTS.get((entity, event))
        takes = set(effect.takes) if effect else set()
        assert set(model.model_fields) - {"reason"} == takes, (entity, event)
        actor = [p for p in operation["parameters"] if p["name"] == "Escrowflow-Actor"]
        assert actor and actor[0]["required"] is True
        assert {"ETag", "Idempotent-Replayed", "X-Request-Id"} <= set(
            operation["responses"]["200"]["headers"]
        )
    assert (
        "release_above_limit" in operations["milestone_release"]["responses"]["409"]["description"]
    )  # MS14's refusal, listed under its status
    entity = schemas["EntityOut"]["properties"]
    assert "in_review" in entity["state"]["enum"] and "refund" in entity["entity"]["enum"]
    assert schemas["LedgerOut"]["properties"]["at"]["format"] == "date-time"


def test_every_list_answers_items_and_next_cursor(sc: Scenario) -> None:
    document = _document(sc)
    schemas = document["components"]["schemas"]
    lists = ["/v1/events", "/v1/contracts/{entity_id}/ledger", "/v1/contracts",
             "/v1/{collection}/{entity_id}/history", "/v1/deadlines", "/v1/refunds"]  # fmt: skip
    for path in lists:
        answer = document["paths"][path]["get"]["responses"]["200"]["content"]
        ref = answer["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert set(schemas[ref]["properties"]) == {"items", "next_cursor"}, path


def test_history_and_ledger_page_by_cursor_and_name_a_missing_entity(
    sc: Scenario, api: Api
) -> None:
    contract, m = sc.in_review(50_000)
    token = api.token("read")
    first = api.ok("GET", f"/v1/milestones/{m}/history", token=token, params={"limit": 2})
    rest = api.ok("GET", f"/v1/milestones/{m}/history", token=token,
                  params={"cursor": first["next_cursor"]})  # fmt: skip
    events = [h["event"] for h in first["items"] + rest["items"]]
    assert events == ["create", "fund", "submit"] and rest["next_cursor"] is None
    ledger = api.ok("GET", f"/v1/contracts/{contract}/ledger", token=token, params={"limit": 1})
    assert [e["kind"] for e in ledger["items"]] == ["deposit"] and ledger["next_cursor"] is None
    for path in ("/v1/contracts/999/ledger", "/v1/milestones/999/history"):
        missing = api.request("GET", path, token=token)
        assert missing.status_code == 404 and missing.json()["code"].endswith("_not_found")

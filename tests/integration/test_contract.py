"""The OpenAPI document as a contract a generated client can rely on (issue 25)."""

from __future__ import annotations

import json
from typing import Any

from openapi_spec_validator import validate

from escrowflow.api.app import create_app
from escrowflow.event_bodies import BODIES, EventNote, party_events
from escrowflow.settings import Settings
from tests.helpers import ADMIN, CLIENT, Scenario
from tests.live import Api
from workflows import bulk, dossier, forecast, views
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
    # Each entity is shown with its own typed fields; enums are named schemas, each once.
    entity = schemas["MilestoneOut"]["properties"]
    assert entity["state"] == {"$ref": "#/components/schemas/State"}
    assert entity["fields"] == {"$ref": "#/components/schemas/MilestoneFields"}
    assert {"amount", "escrow", "released_amount", "due_date"} <= set(
        schemas["MilestoneFields"]["properties"]
    )
    assert "in_review" in schemas["State"]["enum"] and "refund" in schemas["Entity"]["enum"]
    inline = [name for name, schema in schemas.items() if "'enum': ['AED'" in str(schema)]
    assert inline == ["Currency"], inline
    assert schemas["LedgerOut"]["properties"]["at"]["format"] == "date-time"
    # No answer is left untyped: every 2xx JSON body is a named model.
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                content = response.get("content", {}).get("application/json")
                if status.startswith("2") and content is not None:
                    assert "$ref" in content["schema"], (method, path, status)


LISTS = [
    "/v1/events", "/v1/contracts/{entity_id}/ledger", "/v1/contracts",
    "/v1/contracts/{entity_id}/milestones", "/v1/change_requests", "/v1/proposals",
    "/v1/refunds", "/v1/deadlines", "/v1/{collection}/{entity_id}/history", "/v1/webhooks",
    "/v1/webhooks/deliveries", "/v1/approvals", "/v1/terms", "/v1/terms/migrations",
    "/v1/contracts/{entity_id}/next",
]  # fmt: skip


def test_every_list_answers_items_and_next_cursor(sc: Scenario) -> None:
    """One envelope for every list, declared; and no GET answers a bare array."""
    document = _document(sc)
    schemas = document["components"]["schemas"]
    for path in LISTS:
        answer = document["paths"][path]["get"]["responses"]["200"]["content"]
        ref = answer["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert set(schemas[ref]["properties"]) == {"items", "next_cursor"}, path
        assert "$ref" in schemas[ref]["properties"]["items"]["items"], path  # typed items
    for path, methods in document["paths"].items():
        content = methods.get("get", {}).get("responses", {}).get("200", {}).get("content", {})
        schema = content.get("application/json", {}).get("schema", {})
        assert schema.get("type") != "array", path
        ref = schema.get("$ref", "").rsplit("/", 1)[-1]
        if "items" in schemas.get(ref, {}).get("properties", {}):
            assert path in LISTS, f"{path} answers a list: add it to LISTS"


def test_every_list_answers_its_envelope_and_refuses_an_unknown_parameter(
    sc: Scenario, api: Api
) -> None:
    contract, _m = sc.in_review(50_000)
    token = api.token("read", "webhooks", "act:admin")
    concrete = {"{entity_id}": str(contract), "{collection}": "contracts"}
    for listed in LISTS:
        path = listed
        for placeholder, value in concrete.items():
            path = path.replace(placeholder, value)
        actor = "admin:disputes" if path == "/v1/approvals" else None
        answered = api.request("GET", path, token=token, actor=actor)
        assert answered.status_code == 200, (path, answered.text)
        assert set(answered.json()) == {"items", "next_cursor"}, path
        refused = api.request("GET", path, token=token, actor=actor, params={"bogus": 1})
        assert (refused.status_code, refused.json()["code"]) == (422, "unknown_filter"), path


def _drops_nothing(raw: Any, answered: Any, where: str = "") -> None:
    """Everything `raw` (what the engine gave) holds is in `answered` (the typed answer),
    unchanged: a response model dropping a field would fail here."""
    if isinstance(raw, dict):
        assert isinstance(answered, dict), where
        for key, value in raw.items():
            assert key in answered, f"{where}.{key} dropped"
            _drops_nothing(value, answered[key], f"{where}.{key}")
    elif isinstance(raw, list):
        assert isinstance(answered, list) and len(raw) == len(answered), where
        for i, (a, b) in enumerate(zip(raw, answered, strict=True)):
            _drops_nothing(a, b, f"{where}[{i}]")
    else:
        assert raw == answered, f"{where}: {raw!r} became {answered!r}"


def test_typed_answers_drop_nothing_the_engine_gives(sc: Scenario, api: Api) -> None:
    contract, m = sc.in_review(50_000)
    sc.fire("milestone", m, "release", CLIENT, {"amount": 20_000})
    other, _ = sc.in_review(30_000)
    admin = api.token("read", "act:admin")
    preview = sc.engine.preview_bulk(ADMIN, "pause", {"client_id": "acme"})
    shown = views.show(sc.db, "milestone", m)
    columns = set(sc.rows("milestones")[0]) - {"id", "state", "version", "contract_id"}
    raw = {
        f"/v1/contracts/{contract}/dossier": dossier.dossier(sc.db, contract),
        "/v1/forecast": forecast.forecast(sc.db, sc.clock.now(), 30),
        f"/v1/deadlines/bulk/{preview['id']}": bulk.show(sc.db, preview["id"]),
        f"/v1/contracts/{other}/next": {"items": views.what_next(sc.db, other)},
        f"/v1/milestones/{m}": {"fields": {k: shown[k] for k in columns}},
    }
    for path, engine_gave in raw.items():
        answered = api.request("GET", path, token=admin, actor="admin:disputes")
        assert answered.status_code == 200, (path, answered.text)
        _drops_nothing(json.loads(json.dumps(engine_gave, default=str)), answered.json(), path)


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

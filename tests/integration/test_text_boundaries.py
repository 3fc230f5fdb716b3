"""Text storage cannot keep is refused at the boundary, on every write route alike, and
text stored before that renders safely (no page answers 500 because of a row)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine as DBEngine

from storage.models import HISTORY
from tests.conftest import table_counts
from tests.helpers import CLIENT, Scenario
from tests.live import Api

# A lone surrogate, NUL, another C0 control, DEL, a C1 control: as JSON escapes.
REFUSED = ["\\ud800", "\\u0000", "\\u001b", "\\u007f", "\\u0085"]


def _write_routes(api: Api) -> list[tuple[str, str, list[str]]]:
    """Every mutating operation of the served OpenAPI document, with its body's string
    fields (the generic event route takes any JSON: `reason` stands for its text)."""
    document = api.http.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    routes = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method not in ("post", "put", "patch", "delete"):
                continue
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            fields = ["reason"]
            if body is not None:
                ref = body["schema"].get("$ref", "")
                properties = schemas.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
                named = [n for n, p in properties.items() if _is_text(p)]
                fields = named or fields
            concrete = re.sub(r"\{[^}]+\}", lambda m: "events" if "event" in m[0] else "1", path)
            routes.append(
                (method.upper(), concrete.replace("/events/events", "/events/accept"), fields)
            )
    return routes


def _is_text(prop: dict[str, Any]) -> bool:
    kinds = [prop.get("type")] + [p.get("type") for p in prop.get("anyOf", [])]
    return "string" in kinds


def test_control_characters_and_lone_surrogates_are_refused_on_every_write_route(
    api: Api, sc: Scenario, db: DBEngine
) -> None:
    sc.in_review(10_000)
    token = api.token("act:client", "act:freelancer", "act:admin", "webhooks")
    routes = _write_routes(api)
    assert len(routes) >= 10, routes
    before = table_counts(db)
    for method, path, fields in routes:
        for field in fields:
            for bad in REFUSED:
                body = ('{"' + field + '": "a' + bad + 'b"}').encode()
                answer = api.http.request(
                    method,
                    path,
                    content=body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Escrowflow-Actor": "client:acme",
                        "Content-Type": "application/json",
                    },
                )
                assert answer.status_code == 422, (method, path, field, bad, answer.text)
                assert answer.json()["code"] == "invalid_text"
                assert answer.json()["details"]["field"] == field
    # Nested fields are named by their path; query strings are checked too.
    offer = b'{"freelancer_id": "ada", "title": "t", "milestones": [{"title": "x\\u0000"}]}'
    answer = api.http.post(
        "/v1/contracts",
        content=offer,
        headers={"Authorization": f"Bearer {token}", "Escrowflow-Actor": "client:acme"},
    )
    assert answer.json()["details"]["field"] == "milestones.0.title"
    listed = api.http.get(
        "/v1/contracts", params={"client_id": "a\x00"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert listed.status_code == 422 and listed.json()["details"]["field"] == "client_id"
    assert table_counts(db) == before  # nothing stored


def test_text_stored_before_the_boundary_still_renders(
    api: Api, sc: Scenario, db: DBEngine
) -> None:
    _contract, milestone = sc.in_review(10_000)
    sc.fire("milestone", milestone, "request_changes", CLIENT, {"reason": "fine"})
    with db.begin() as conn:  # as the engine stored it before the boundary checked text
        conn.execute(
            sa.update(HISTORY)
            .where(HISTORY.c.entity == "milestone", HISTORY.c.event == "request_changes")
            .values(payload={"reason": "bad \ud800 text"})
        )
    token = api.token("read")
    answer = api.http.get(
        f"/v1/milestones/{milestone}/history", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text
    assert "bad \ufffd text" in answer.text  # U+FFFD where the surrogate was


@pytest.mark.parametrize("value", ["²", "٣٠٠", "1" * 5000, "-5", "12.555", "1e3"])
def test_console_amounts_are_ascii_digits_within_bounds(value: str) -> None:
    from storage.errors import ValidationError
    from workflows.policy import parse_money

    with pytest.raises(ValidationError):
        parse_money(value, "USD", "to the client")
    assert parse_money(" 25.00 ", "USD", "to the client") == 2500

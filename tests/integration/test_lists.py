"""Lists over the real HTTP server: filters, paging by cursor, who sees what."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from storage import models
from tests.helpers import CLIENT, FREELANCER, Scenario
from tests.live import Api
from workflows.actors import Actor, Role

BOLT = Actor(Role.CLIENT, "bolt")


def _offer(sc: Scenario, client: Actor = CLIENT, freelancer: str = "ada", *amounts: int) -> int:
    payload: dict[str, Any] = {"freelancer_id": freelancer, "title": "Site", "currency": "USD"}
    if amounts:
        payload["milestones"] = [{"title": f"M{i}", "amount": a} for i, a in enumerate(amounts)]
    return int(sc.engine.create_contract(client, payload)["id"])


def _all_pages(api: Api, path: str, token: str, between: Any = None, **kw: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        params = {**kw.pop("params", {}), **({"cursor": cursor} if cursor else {})}
        page = api.ok("GET", path, token=token, params={**params, "limit": 50}, **kw)
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        if between is not None:
            between()


def test_250_contracts_paged_by_50_with_no_repeat_or_gap_while_new_ones_are_inserted(
    sc: Scenario, api: Api
) -> None:
    for _ in range(250):
        _offer(sc)
    read = api.token("read")
    inserted = []

    def insert_three() -> None:
        inserted.extend(_offer(sc) for _ in range(3))

    seen = [c["id"] for c in _all_pages(api, "/v1/contracts", read, between=insert_three)]
    with sc.db.connect() as conn:
        every = conn.execute(sa.select(models.CONTRACTS.c.id)).scalars().all()
    assert len(inserted) >= 12  # four page boundaries at least, three new ones at each
    assert len(seen) == len(set(seen)), "a contract came twice"
    assert seen == sorted(every), "a contract was skipped"


def test_contract_filters_and_a_party_sees_only_its_own_contracts(sc: Scenario, api: Api) -> None:
    acme_ada = _offer(sc, CLIENT, "ada")
    acme_bob = _offer(sc, CLIENT, "bob")
    bolt_ada = _offer(sc, BOLT, "ada")
    sc.fire("contract", acme_ada, "accept", FREELANCER)
    read = api.token("read")

    def ids(token: str, actor: str | None = None, **params: Any) -> list[int]:
        page = api.ok("GET", "/v1/contracts", token=token, actor=actor, params=params)
        return [c["id"] for c in page["items"]]

    assert ids(read) == [acme_ada, acme_bob, bolt_ada]
    assert ids(read, client_id="acme") == [acme_ada, acme_bob]
    assert ids(read, freelancer_id="ada") == [acme_ada, bolt_ada]
    assert ids(read, state="active") == [acme_ada]
    assert ids(read, client_id="acme", freelancer_id="bob", state="offer") == [acme_bob]

    party = api.token("act:client", "act:freelancer")
    assert ids(party, "client:acme") == [acme_ada, acme_bob]
    assert ids(party, "client:bolt") == [bolt_ada]
    assert ids(party, "freelancer:ada") == [acme_ada, bolt_ada]
    assert ids(party, "client:acme", client_id="bolt") == []  # a filter never widens
    admin = api.token("act:admin")
    assert ids(admin) == [acme_ada, acme_bob, bolt_ada]


def test_a_party_token_must_name_its_party_and_hold_its_scope(sc: Scenario, api: Api) -> None:
    _offer(sc)
    client_only = api.token("act:client")
    no_actor = api.request("GET", "/v1/contracts", token=client_only)
    assert (no_actor.status_code, no_actor.json()["code"]) == (422, "actor_required")
    wrong_role = api.request("GET", "/v1/contracts", token=client_only, actor="freelancer:ada")
    assert (wrong_role.status_code, wrong_role.json()["code"]) == (403, "scope_missing")
    assert api.request("GET", "/v1/contracts", token=None).status_code == 401


def test_bad_list_parameters_are_refused_with_a_clear_code(sc: Scenario, api: Api) -> None:
    _offer(sc)
    read = api.token("read")

    def refused(path: str, **params: Any) -> tuple[int, str]:
        response = api.request("GET", path, token=read, params=params)
        return response.status_code, response.json()["code"]

    assert refused("/v1/contracts", limit=201) == (422, "invalid_request")
    assert refused("/v1/contracts", limit=0) == (422, "invalid_request")
    assert refused("/v1/contracts", colour="red") == (422, "unknown_filter")
    assert refused("/v1/refunds", client_id="acme") == (422, "unknown_filter")
    assert refused("/v1/contracts", cursor="not-a-cursor") == (422, "invalid_cursor")
    assert refused("/v1/deadlines", due_before="2026-12-01T00:00:00") == (422, "naive_time")
    assert refused("/v1/contracts/999/milestones") == (404, "contract_not_found")
    ok = api.request("GET", "/v1/contracts", token=read, params={"limit": 200})
    assert ok.status_code == 200


def test_a_contracts_milestones_are_listed_in_contract_order(sc: Scenario, api: Api) -> None:
    contract, (m1, m2, m3) = sc.offer(10_000, 20_000, 30_000)
    sc.fire("contract", contract, "reorder_milestones", CLIENT, {"order": [m3, m1, m2]})
    sc.offer(40_000)  # another contract's milestone is not listed
    read = api.token("read")
    page = api.ok("GET", f"/v1/contracts/{contract}/milestones", token=read)
    assert [m["id"] for m in page["items"]] == [m3, m1, m2]
    assert [m["amount"] for m in page["items"]] == [30_000, 10_000, 20_000]
    small = api.ok("GET", f"/v1/contracts/{contract}/milestones", token=read, params={"limit": 2})
    rest = api.ok(
        "GET",
        f"/v1/contracts/{contract}/milestones",
        token=read,
        params={"limit": 2, "cursor": small["next_cursor"]},
    )
    assert [m["id"] for m in small["items"] + rest["items"]] == [m3, m1, m2]
    assert rest["next_cursor"] is None
    party = api.token("act:client")
    mallory = api.ok(
        "GET", f"/v1/contracts/{contract}/milestones", token=party, actor="client:mallory"
    )
    assert mallory["items"] == []


def test_the_dispute_queue_and_the_deadlines_due_this_week(sc: Scenario, api: Api) -> None:
    disputed_contract, (m1,) = sc.active_contract(10_000)
    sc.fire("milestone", m1, "fund", CLIENT)
    sc.fire("contract", disputed_contract, "end", CLIENT)
    refund = sc.fire("contract", disputed_contract, "request_refund", CLIENT, {"reason": "x"})
    refund_id = next(c["id"] for c in refund["created"] if c["entity"] == "refund")
    sc.fire("refund", refund_id, "dispute", FREELANCER, {"reason": "done"})
    waiting_contract, (m2,) = sc.active_contract(20_000)
    sc.fire("milestone", m2, "fund", CLIENT)
    sc.fire("contract", waiting_contract, "end", CLIENT)
    waiting = sc.fire("contract", waiting_contract, "request_refund", CLIENT, {"reason": "y"})
    waiting_id = next(c["id"] for c in waiting["created"] if c["entity"] == "refund")
    review_contract, m3 = sc.in_review(30_000)
    read = api.token("read")

    queue = api.ok("GET", "/v1/refunds", token=read, params={"state": "disputed"})
    assert [r["id"] for r in queue["items"]] == [refund_id]
    requested = api.ok("GET", "/v1/refunds", token=read, params={"state": "requested"})
    assert [r["id"] for r in requested["items"]] == [waiting_id]

    week = (sc.clock.now() + timedelta(days=8)).isoformat()
    due = api.ok("GET", "/v1/deadlines", token=read, params={"due_before": week})
    assert [(d["entity"], d["entity_id"], d["event"]) for d in due["items"]] == [
        ("refund", waiting_id, "refund_by_default")
    ]
    fortnight = (sc.clock.now() + timedelta(days=15)).isoformat()
    due = api.ok("GET", "/v1/deadlines", token=read, params={"due_before": fortnight})
    assert [d["event"] for d in due["items"]] == ["refund_by_default", "auto_approve"]
    only = api.ok("GET", "/v1/deadlines", token=read, params={"contract_id": review_contract})
    assert [(d["entity_id"], d["event"]) for d in only["items"]] == [(m3, "auto_approve")]
    by_event = api.ok("GET", "/v1/deadlines", token=read, params={"event": "auto_approve"})
    assert [d["entity_id"] for d in by_event["items"]] == [m3]
    party = api.token("act:client")
    theirs = api.ok("GET", "/v1/deadlines", token=party, actor="client:mallory")
    assert theirs["items"] == []

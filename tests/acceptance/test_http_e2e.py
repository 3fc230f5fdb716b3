"""End to end: `escrowflow serve` (API and worker) as a process on 127.0.0.1, driven over
HTTP through a contract's whole life, with its clock moved through a test-only setting
(ESCROWFLOW_TEST_CLOCK_FILE; the server has no endpoint for it)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine as DBEngine

from escrowflow import tokens
from tests.helpers import check_invariants
from tests.served import START, Server, until

# A served process through a whole lifecycle.
pytestmark = pytest.mark.slow


def test_a_contract_lives_its_life_over_http_with_timers_firing_in_the_server(
    server: Server, db: DBEngine
) -> None:
    token = tokens.create(db, START, "web", ["act:client", "act:freelancer"])["token"]
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})

    def act(party: str, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        headers = {"Escrowflow-Actor": party, **({"Idempotency-Key": key} if key else {})}
        response = http.request(method, path, json=body, headers=headers)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def state(path: str) -> str:
        return str(http.get(path).json()["state"])

    client, freelancer = "client:acme", "freelancer:ada"
    offered = act(
        client,
        "POST",
        "/v1/contracts",
        {
            "freelancer_id": "ada",
            "title": "Shop",
            "currency": "USD",
            "milestones": [{"title": "Design", "amount": 50_000}],
        },
        key="offer",
    )
    c = offered["id"]
    (m1,) = [x["id"] for x in offered["created"] if x["entity"] == "milestone"]
    added = act(
        client,
        "POST",
        f"/v1/contracts/{c}/milestones",
        {"milestones": [{"title": "Build", "amount": 30_000}]},
    )
    (m2,) = [x["id"] for x in added["created"] if x["entity"] == "milestone"]
    act(freelancer, "POST", f"/v1/contracts/{c}/events/accept")
    act(client, "POST", f"/v1/milestones/{m1}/events/fund", key="fund-1")
    act(freelancer, "POST", f"/v1/milestones/{m1}/events/submit")
    act(client, "POST", f"/v1/milestones/{m1}/events/request_changes", {"reason": "logo"})
    act(freelancer, "POST", f"/v1/milestones/{m1}/events/submit")
    act(client, "POST", f"/v1/milestones/{m1}/events/release", {"amount": 20_000}, key="rel-1")
    refund = act(client, "POST", f"/v1/contracts/{c}/refunds", {"reason": "scope cut"})
    (r,) = [x["id"] for x in refund["created"] if x["entity"] == "refund"]
    nxt = http.get(f"/v1/contracts/{c}/next").json()["items"]
    assert [(n["event"], n["money"]["amount"]) for n in nxt] == [("refund_by_default", 30_000)]

    # RF2: the freelancer says nothing for 7 days; the server's worker refunds the client.
    server.set_clock(START + timedelta(days=7, seconds=1))
    until(lambda: state(f"/v1/refunds/{r}") == "refunded", "the default refund")
    (fired,) = [
        h
        for h in http.get(f"/v1/refunds/{r}/history").json()["items"]
        if h["event"] == "refund_by_default"
    ]
    assert fired["cause"] == "timer" and fired["due_at"] is not None

    # MS10: a submission nobody reviews is approved after 14 days.
    act(client, "POST", f"/v1/milestones/{m2}/events/fund")
    act(freelancer, "POST", f"/v1/milestones/{m2}/events/submit")
    server.set_clock(START + timedelta(days=21, seconds=2))
    until(lambda: state(f"/v1/milestones/{m2}") == "released", "the auto-approval")

    ledger = [
        (e["kind"], e["amount"]) for e in http.get(f"/v1/contracts/{c}/ledger").json()["items"]
    ]
    assert ledger == [
        ("deposit", 50_000),
        ("release", 20_000),
        ("refund", 30_000),
        ("deposit", 30_000),
        ("release", 30_000),
    ]
    events = http.get("/v1/events", params={"limit": 1000}).json()["items"]
    timers = [(e["type"], e["data"]["cause"]) for e in events if e["data"].get("cause") == "timer"]
    assert ("refund.refund_by_default", "timer") in timers
    assert ("milestone.auto_approve", "timer") in timers
    # A retried release with its key, long after: answered, never paid twice.
    again = http.post(
        f"/v1/milestones/{m1}/events/release",
        json={"amount": 20_000},
        headers={"Escrowflow-Actor": client, "Idempotency-Key": "rel-1"},
    )
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert len(http.get(f"/v1/contracts/{c}/ledger").json()["items"]) == 5
    http.close()
    check_invariants(db)
    assert server.stop() == 0

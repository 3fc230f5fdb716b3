"""PA4: a dispute resolution moving more than the threshold waits for a second, different
admin; at or below it one admin suffices; a rejected proposal moves nothing."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine as DBEngine

from storage.errors import ConflictError, PermissionDenied
from tests.helpers import CLIENT, FREELANCER, Scenario
from tests.integration.test_cli_admin import cli
from tests.integration.test_deadline_failures import _shift_held as shift_held
from tests.live import Api
from workflows import bulk
from workflows.actors import Actor, Role
from workflows.engine import EscrowEngine
from workflows.retry import DEADLINE_RETRY
from workflows.sweeper import fire_due

ALICE = Actor(Role.ADMIN, "alice")
BOB = Actor(Role.ADMIN, "bob")
ABOVE = 1_000  # major units: 1,000.00 EUR


@pytest.fixture
def desk(sc: Scenario) -> Scenario:
    """The scenario's engine with a threshold of 1,000.00 (in each currency's units)."""
    sc.engine = EscrowEngine(sc.db, sc.engine.policy, sc.clock, second_approval_above=ABOVE)
    return sc


def _disputed(sc: Scenario, amount: int) -> tuple[int, int]:
    """An EUR contract ended with its milestone funded; the client asks for the money
    back, the freelancer disputes: (contract, refund)."""
    contract, (m,) = sc.offer(amount, currency="EUR")
    sc.fire("contract", contract, "accept", FREELANCER)
    sc.fire("milestone", m, "fund", CLIENT)
    sc.fire("contract", contract, "end", CLIENT)
    made = sc.fire("contract", contract, "request_refund", CLIENT, {"reason": "not delivered"})
    refund = made["created"][0]["id"]
    sc.fire("refund", refund, "dispute", FREELANCER, {"reason": "it was delivered"})
    return contract, refund


def _money(sc: Scenario, contract: int) -> list[tuple[str, int]]:
    return [(e["kind"], e["amount"]) for e in sc.rows("ledger_entries", contract_id=contract)]


def test_pa4_a_resolution_above_the_threshold_waits_for_a_second_different_admin(
    desk: Scenario,
) -> None:
    sc = desk
    contract, refund = _disputed(sc, 120_000)  # 1,200.00 EUR
    before = _money(sc, contract)
    split = {"to_client": 60_000, "to_freelancer": 60_000, "reason": "half delivered"}
    proposed = sc.engine.apply("refund", refund, "resolve", ALICE, split)
    approval = proposed["approval"]
    assert (approval["status"], approval["shown"], proposed["state"]) == (
        "pending", "1,200.00 EUR", "disputed",
    )  # fmt: skip
    assert sc.state("refund", refund) == "disputed" and _money(sc, contract) == before
    with pytest.raises(PermissionDenied) as own:
        sc.engine.approve_decision(ALICE, approval["id"])
    assert own.value.code == "same_admin"
    with pytest.raises(PermissionDenied):
        sc.engine.approve_decision(CLIENT, approval["id"])
    done = sc.engine.approve_decision(BOB, approval["id"], "checked the evidence")
    assert (done["state"], done["approval"]["status"]) == ("resolved", "approved")
    assert _money(sc, contract) == [*before, ("refund", 60_000), ("release", 60_000)]
    history = [
        (h["event"], h["actor_party"], h["payload"].get("approval_id"))
        for h in sc.rows("history", entity="refund", entity_id=refund)
    ]
    assert history[-3:] == [
        ("resolve_proposed", "alice", approval["id"]),
        ("resolve", "bob", None),
        ("resolve_approved", "bob", approval["id"]),
    ]
    with pytest.raises(ConflictError) as twice:
        sc.engine.approve_decision(BOB, approval["id"])
    assert twice.value.code == "approval_decided"
    sc.check_invariants()


def test_pa4_at_or_below_the_threshold_one_admin_suffices(desk: Scenario) -> None:
    sc = desk
    contract, refund = _disputed(desk, 100_000)  # 1,000.00 EUR: not above
    done = sc.engine.apply("refund", refund, "resolve", ALICE, {"to_client": 100_000})
    assert done["state"] == "resolved" and done.get("approval") is None
    assert ("refund", 100_000) in _money(sc, contract)


def test_pa4_a_rejected_proposal_moves_nothing_and_one_waits_per_refund(desk: Scenario) -> None:
    sc = desk
    contract, refund = _disputed(sc, 250_000)
    before = _money(sc, contract)
    bad = {"to_client": 1, "to_freelancer": 1}
    with pytest.raises(Exception) as refused:  # checked when proposed, not when approved
        sc.engine.apply("refund", refund, "resolve", ALICE, bad)
    assert getattr(refused.value, "code", "") == "split_does_not_add_up"
    first = sc.engine.apply("refund", refund, "resolve", ALICE, {"to_freelancer": 250_000})
    with pytest.raises(ConflictError) as waiting:
        sc.engine.apply("refund", refund, "resolve", BOB, {"to_client": 250_000})
    assert waiting.value.code == "approval_pending"
    rejected = sc.engine.reject_decision(BOB, first["approval"]["id"], "no evidence of work")
    assert (rejected["status"], rejected["decided_by"]) == ("rejected", "bob")
    second = sc.engine.apply("refund", refund, "resolve", BOB, {"to_client": 250_000})
    assert sc.state("refund", refund) == "disputed" and _money(sc, contract) == before
    assert [d["status"] for d in sc.engine.decisions(ALICE, None)] == ["pending", "rejected"]
    done = sc.engine.approve_decision(ALICE, second["approval"]["id"])  # bob proposed
    assert done["state"] == "resolved"
    assert _money(sc, contract) == [*before, ("refund", 250_000)]
    sc.check_invariants()


def test_pa4_over_http_the_resolution_answers_202_and_another_admin_approves(
    desk: Scenario, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = desk
    monkeypatch.setattr(api.engine, "second_approval_above", ABOVE)
    _contract, refund = _disputed(sc, 120_000)
    admin = api.token("act:admin")

    def post(path: str, actor: str, body: Any) -> Any:
        return api.request("POST", path, token=admin, actor=actor, json=body)

    split = {"to_client": 60_000, "to_freelancer": 60_000}
    proposed = post(f"/v1/refunds/{refund}/events/resolve", "admin:alice", split)
    assert proposed.status_code == 202, proposed.text
    approval = proposed.json()["approval"]
    assert (approval["status"], approval["shown"]) == ("pending", "1,200.00 EUR")
    listed = api.request("GET", "/v1/approvals", token=admin, actor="admin:bob").json()
    assert [a["id"] for a in listed["items"]] == [approval["id"]]
    own = post(f"/v1/approvals/{approval['id']}/approve", "admin:alice", {})
    assert (own.status_code, own.json()["code"]) == (403, "same_admin")
    done = post(f"/v1/approvals/{approval['id']}/approve", "admin:bob", {"reason": "fair"})
    assert done.status_code == 200, done.text
    decided = done.json()
    assert (decided["transition"]["state"], decided["approval"]["decided_by"]) == (
        "resolved",
        "bob",
    )
    client = api.request("GET", "/v1/approvals", token=api.token("act:client"), actor="client:acme")
    assert client.status_code == 403


def test_a_second_admin_approves_from_the_cli(desk: Scenario, tmp_path: Path) -> None:
    sc = desk
    _contract, refund = _disputed(sc, 120_000)
    env = {"ESCROWFLOW_SECOND_APPROVAL_ABOVE": str(ABOVE)}
    data = json.dumps({"to_client": 120_000})
    proposed = cli(sc.db, "fire", "refund", str(refund), "resolve", "--as", "admin:alice",
                   "--data", data, env=env)  # fmt: skip
    assert "waits for a second admin: escrowflow approvals approve 1" in proposed.stdout
    listed = cli(sc.db, "approvals", "list", "--as", "admin:bob", env=env)
    assert "moving 1,200.00 EUR, proposed by alice" in listed.stdout, listed.stderr
    own = cli(sc.db, "approvals", "approve", "1", "--as", "admin:alice", env=env)
    assert own.returncode != 0 and "a second, different admin" in own.stderr
    done = cli(sc.db, "approvals", "approve", "1", "--as", "admin:bob", env=env)
    assert done.returncode == 0 and "refund 1 is resolved" in done.stdout, done.stderr


def test_pa4_a_bulk_retry_moving_more_than_the_threshold_waits_for_a_second_admin(
    sc: Scenario, db: DBEngine
) -> None:
    """A bulk retry fires failed auto-approvals, which release money: above the
    threshold the first admin's apply only proposes it; a second admin's applies it."""
    sc.engine = EscrowEngine(
        sc.db, sc.engine.policy, sc.clock,
        deadline_retry=replace(DEADLINE_RETRY, max_attempts=1), second_approval_above=150,
    )  # fmt: skip
    broken = [sc.in_review(10_000) for _ in range(2)]  # 200.00 USD in all
    for contract, _m in broken:
        shift_held(db, contract, 1)  # a ledger that does not add up: the firing fails
    sc.clock.advance(timedelta(days=14))
    assert fire_due(sc.engine).failed == 2
    preview = sc.engine.preview_bulk(ALICE, "retry", {"states": ["failed"]})
    assert preview["deadlines"] == 2
    proposed = sc.engine.apply_bulk(ALICE, preview["id"], "ledger mended")
    assert (proposed["status"], proposed["approval"]["shown"]) == ("previewed", "200.00 USD")
    assert bulk.show(sc.db, preview["id"])["approval"]["proposed_by"] == "alice"
    with pytest.raises(PermissionDenied) as own:
        sc.engine.apply_bulk(ALICE, preview["id"], "again")
    assert own.value.code == "same_admin"
    approved = sc.engine.approve_decision(BOB, proposed["approval"]["id"])
    assert (approved["status"], approved["approval"]["decided_by"]) == ("running", "bob")
    assert sc.engine.run_bulk("worker-1") is not None
    assert [d["failed_at"] for d in sc.rows("deadlines", event="auto_approve")] == [None, None]
    assert [d["status"] for d in sc.engine.decisions(ALICE, None)] == ["approved"]

"""Terms agreed are terms kept (TM1), and running contracts move to new terms only by a
previewed plan applied as previewed (TM2), never sooner than the notice (X14), with the
parties told and their reminders rescheduled (X15)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from storage import models
from storage.errors import ConflictError, PermissionDenied, ValidationError
from tests.helpers import ADMIN, CLIENT, FREELANCER, Scenario
from tests.integration.test_cli_admin import as_json, cli
from tests.live import Api
from workflows.engine import EscrowEngine
from workflows.policy import Policy
from workflows.terms_migration import PLAN_LIFETIME, SHORTENING_NOTICE

DAY = timedelta(days=1)


def _due(sc: Scenario, milestone: int) -> Any:
    pending = sc.pending_deadlines("milestone", milestone)
    (deadline,) = [d for d in pending if not d["event"].startswith("remind:")]
    return deadline["due_at"]


def _terms_id(sc: Scenario, contract: int) -> int:
    return int(sc.row("contract", contract)["terms_id"])


def _two_contracts(sc: Scenario) -> tuple[int, int, int, int, int, int]:
    """A accepted under 14 days; the deployment restarts with 10; B accepted after.
    Both submitted: (A, A's milestone, A's terms, B, B's milestone, B's terms)."""
    a, (ma,) = sc.active_contract(10_000)
    sc.new_terms(durations={**sc.engine.policy.durations, "review_window": 10 * DAY})
    b, (mb,) = sc.active_contract(20_000)
    for milestone in (ma, mb):
        sc.fire("milestone", milestone, "fund", CLIENT)
        sc.fire("milestone", milestone, "submit", FREELANCER)
    return a, ma, _terms_id(sc, a), b, mb, _terms_id(sc, b)


def test_tm1_a_running_contract_keeps_the_terms_it_was_offered_under(sc: Scenario) -> None:
    start = sc.clock.now()
    a, ma, terms_a, b, mb, terms_b = _two_contracts(sc)
    assert terms_a != terms_b
    assert _due(sc, ma) == start + 14 * DAY
    assert _due(sc, mb) == start + 10 * DAY
    sc.wait(days=10, seconds=1)
    assert (sc.state("milestone", ma), sc.state("milestone", mb)) == ("in_review", "released")
    sc.wait(days=4)
    assert sc.state("milestone", ma) == "released"
    assert sc.ledger(a)[-1] == ("release", 10_000) and sc.ledger(b)[-1] == ("release", 20_000)


def test_tm1_minimums_come_from_the_contracts_terms(sc: Scenario) -> None:
    old, _ = sc.active_contract(10_000)
    sc.new_terms(minimum_amounts={"USD": 2_000})
    new, _ = sc.active_contract(10_000)
    sc.add_milestones(old, {"title": "small", "amount": 1_000})  # 5.00 USD minimum then
    with pytest.raises(ValidationError) as refused:
        sc.add_milestones(new, {"title": "small", "amount": 1_000})
    assert refused.value.code == "amount_below_minimum"


def test_tm1_the_same_settings_are_the_same_terms_and_terms_never_change(
    sc: Scenario,
) -> None:
    first = sc.engine.terms.current()
    again = EscrowEngine(sc.db, sc.engine.policy, sc.clock).terms.current()
    assert again.id == first.id
    sc.new_terms(max_milestones=7)
    changed = sc.engine.terms.current()
    assert changed.id != first.id and changed.policy.max_milestones == 7
    stored = sc.rows("terms", id=first.id)[0]
    assert stored["values"]["max_milestones"] == 200  # the old version is untouched
    clash = EscrowEngine(sc.db, Policy(max_milestones=8), sc.clock, terms_name=changed.name)
    with pytest.raises(ValidationError) as refused:
        clash.terms.current()
    assert refused.value.code == "terms_name_taken"


@pytest.mark.postgresql_only
def test_tm1_daemons_storing_the_same_new_terms_at_once_all_run_under_them(
    sc: Scenario,
) -> None:
    """Daemons started together with the same new settings each store their terms. On
    PostgreSQL one that found no such terms may see another's, committed meanwhile, when
    it looks their name up: they are the same terms, taken, not a `terms_name_taken`
    refusal to start (two of four CI workers exited 2 so). SQLite serializes the writers."""
    policy = dataclasses.replace(sc.engine.policy, max_milestones=9)
    first = EscrowEngine(sc.db, policy, sc.clock)

    class Meanwhile:
        """Read by the second daemon between its two looks: the first stores the terms."""

        def now(self) -> datetime:
            first.terms.current()
            return sc.clock.now()

    second = EscrowEngine(sc.db, policy, Meanwhile())
    assert second.terms.current().id == first.terms.current().id
    assert len(sc.rows("terms", fingerprint=sc.rows("terms")[-1]["fingerprint"])) == 1


def test_tm1_contracts_from_before_terms_get_the_terms_then_in_force(sc: Scenario) -> None:
    contract, _ = sc.active_contract(10_000)
    with sc.db.begin() as conn:
        conn.execute(models.CONTRACTS.update().values(terms_id=None))
    assert sc.row("contract", contract)["terms_id"] is None
    restarted = EscrowEngine(sc.db, Policy(reminders={}, max_milestones=9), sc.clock)
    current = restarted.terms.current()
    assert _terms_id(sc, contract) == current.id


def _plan(sc: Scenario, to: int, **selection: Any) -> dict[str, Any]:
    return sc.engine.plan_terms(ADMIN, to, selection)


def test_tm1_terms_a_switched_server_lacks_are_stored_again_and_the_offer_made(
    sc: Scenario,
) -> None:
    """An asynchronous standby promoted without the terms this process had stored (it
    keeps their id): the next offer stores them again and runs under them, never a 409
    for a missing foreign key."""
    before = sc.engine.terms.current()
    with sc.db.begin() as conn:  # the promoted server never had them
        conn.execute(models.TERMS.delete())
    contract, _ = sc.offer(10_000)
    after = sc.engine.terms.current()
    assert _terms_id(sc, contract) == after.id
    assert after.policy == before.policy
    assert [t["name"] for t in sc.rows("terms")] == [before.name]  # stored again, the same


def test_tm2_a_plan_previews_each_deadline_and_the_money_and_changes_nothing(
    sc: Scenario,
) -> None:
    start = sc.clock.now()
    a, ma, terms_a, b, _mb, terms_b = _two_contracts(sc)
    before = {t: sc.rows(t) for t in ("contracts", "deadlines", "history", "outbox_events")}
    plan = _plan(sc, terms_b, terms_id=terms_a)
    assert (plan["contracts"], plan["deadlines"], plan["due_at_once"]) == (1, 1, 0)
    (move,) = sc.rows("terms_plan_deadlines", plan_id=plan["id"])
    assert move["due_before"] == start + 14 * DAY and move["due_after"] == start + 10 * DAY
    assert (move["contract_id"], move["entity_id"], move["amount"]) == (a, ma, 10_000)
    day10, day14 = ((start + n * DAY).date().isoformat() for n in (10, 14))
    assert plan["forecast"] == [
        {"day": day10, "currency": "USD", "change": 10_000},
        {"day": day14, "currency": "USD", "change": -10_000},
    ]
    assert {t: sc.rows(t) for t in before} == before
    assert b not in [r["contract_id"] for r in sc.rows("terms_plan_contracts")]


def test_tm2_x15_applying_moves_each_deadline_once_tells_both_and_reschedules_reminders(
    sc: Scenario,
) -> None:
    start = sc.clock.now()
    sc.new_terms(reminders={"review_window": (3 * DAY,)})
    a, ma, terms_a, _b, _mb, _ = _two_contracts(sc)
    sc.new_terms(durations={**sc.engine.policy.durations, "review_window": 10 * DAY},
                 reminders={"review_window": (2 * DAY,)})  # fmt: skip
    target = sc.engine.terms.current().id
    plan = _plan(sc, target, terms_id=terms_a)
    applied = sc.engine.apply_terms_plan(ADMIN, plan["id"], "10-day review for everyone")
    assert applied["moved"] == 1 and applied["status"] == "applied"
    assert _due(sc, ma) == start + 10 * DAY
    assert _terms_id(sc, a) == target
    reminders = [
        d for d in sc.rows("deadlines", entity="milestone", entity_id=ma, status="pending")
        if d["event"].startswith("remind:")
    ]  # fmt: skip
    assert [(r["event"], r["due_at"]) for r in reminders] == [
        ("remind:auto_approve:P2D", start + 8 * DAY)
    ]
    (moved,) = [h for h in sc.history("contract", a) if h["event"] == "terms_migrated"]
    assert moved["actor_role"] == "admin"
    assert moved["payload"]["reason"] == "10-day review for everyone"
    assert moved["payload"]["to_terms_id"] == target
    (event,) = sc.rows("outbox_events", type="contract.terms_migrated")
    assert sorted(event["recipients"]) == sorted([CLIENT.party, FREELANCER.party])
    again = sc.engine.apply_terms_plan(ADMIN, plan["id"], "once more")
    assert again["moved"] == 0
    assert len([h for h in sc.history("contract", a) if h["event"] == "terms_migrated"]) == 1
    assert _due(sc, ma) == start + 10 * DAY
    sc.wait(days=10, seconds=1)
    assert sc.state("milestone", ma) == "released"
    sc.check_invariants()


def test_tm2_a_plan_whose_contracts_changed_is_refused_with_the_difference(
    sc: Scenario,
) -> None:
    a, ma, terms_a, _b, _mb, terms_b = _two_contracts(sc)
    plan = _plan(sc, terms_b, terms_id=terms_a)
    sc.fire("milestone", ma, "release", CLIENT)  # the deadline is gone
    with pytest.raises(ConflictError) as refused:
        sc.engine.apply_terms_plan(ADMIN, plan["id"], "too late")
    assert refused.value.code == "plan_stale"
    assert refused.value.details["differences"] == {"deadlines_changed": [
        sc.rows("terms_plan_deadlines", plan_id=plan["id"])[0]["deadline_id"]
    ]}  # fmt: skip
    assert _terms_id(sc, a) == terms_a
    plan = _plan(sc, terms_b, terms_id=terms_a)
    EscrowEngine(sc.db, Policy(reminders={}), sc.clock).terms.current()
    c, _ = sc.offer(5_000)  # a new contract under A's terms joins the selection
    with sc.db.begin() as conn:
        conn.execute(
            models.CONTRACTS.update().where(models.CONTRACTS.c.id == c).values(terms_id=terms_a)
        )
    with pytest.raises(ConflictError) as refused:
        sc.engine.apply_terms_plan(ADMIN, plan["id"], "new contract")
    assert refused.value.details["differences"] == {"contracts_added": [c]}


def test_tm2_x15_an_expired_plan_is_refused(sc: Scenario) -> None:
    _a, _ma, terms_a, _b, _mb, terms_b = _two_contracts(sc)
    plan = _plan(sc, terms_b, terms_id=terms_a)
    sc.clock.advance(PLAN_LIFETIME + timedelta(seconds=1))
    with pytest.raises(ConflictError) as refused:
        sc.engine.apply_terms_plan(ADMIN, plan["id"], "late")
    assert refused.value.code == "plan_expired"


def test_tm2_an_interrupted_apply_resumes_and_moves_each_contract_once(sc: Scenario) -> None:
    contracts = [sc.in_review(10_000)[0] for _ in range(8)]
    old = _terms_id(sc, contracts[0])
    sc.new_terms(durations={**sc.engine.policy.durations, "review_window": 20 * DAY})
    plan = _plan(sc, sc.engine.terms.current().id, terms_id=old)

    def stop_after_one(done: int, _total: int) -> None:
        if done == 1:
            raise KeyboardInterrupt  # the operator's Ctrl-C, between two contracts

    with pytest.raises(KeyboardInterrupt):
        sc.engine.apply_terms_plan(ADMIN, plan["id"], "longer", on_progress=stop_after_one)
    (stopped,) = sc.rows("terms_plans")
    assert stopped["status"] == "applying"
    before = [c for c in sc.rows("terms_plan_contracts") if c["applied_at"] is not None]
    assert before  # the one that finished is committed, whatever else was in flight
    resumed = sc.engine.apply_terms_plan(ADMIN, plan["id"], "longer")
    assert resumed["moved"] == len(contracts) - len(before)
    moved = sc.rows("history", event="terms_migrated")
    assert sorted(h["entity_id"] for h in moved) == contracts  # each exactly once
    assert {_terms_id(sc, c) for c in contracts} == {plan["to_terms_id"]}
    sc.check_invariants()


def test_x14_a_shortened_deadline_falls_due_no_sooner_than_the_notice(sc: Scenario) -> None:
    _a, ma, terms_a, _b, _mb, terms_b = _two_contracts(sc)
    sc.clock.advance(12 * DAY)  # 2 days left of 14; 10 days have long run out
    plan = _plan(sc, terms_b, terms_id=terms_a)
    assert plan["due_at_once"] == 0
    sc.engine.apply_terms_plan(ADMIN, plan["id"], "shorter")
    assert _due(sc, ma) == sc.clock.now() + SHORTENING_NOTICE
    sc.wait(hours=23)
    assert sc.state("milestone", ma) == "in_review"
    sc.wait(hours=1, seconds=1)
    assert sc.state("milestone", ma) == "released"


def test_tm2_only_the_dispute_team_plans_and_applies_with_a_reason(sc: Scenario) -> None:
    _a, _ma, terms_a, _b, _mb, terms_b = _two_contracts(sc)
    with pytest.raises(PermissionDenied):
        sc.engine.plan_terms(CLIENT, terms_b, {"terms_id": terms_a})
    plan = _plan(sc, terms_b, terms_id=terms_a)
    with pytest.raises(PermissionDenied):
        sc.engine.apply_terms_plan(FREELANCER, plan["id"], "mine")
    with pytest.raises(ValidationError) as refused:
        sc.engine.apply_terms_plan(ADMIN, plan["id"], "  ")
    assert refused.value.code == "field_required"
    with pytest.raises(ValidationError) as refused:
        sc.engine.plan_terms(ADMIN, terms_b, {"colour": "red"})
    assert refused.value.details == {"field": "colour"}
    with sc.db.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(models.TERMS_PLANS)).scalar() == 1
        )


def test_tm2_plans_over_http_preview_then_apply_once(sc: Scenario, api: Api) -> None:
    start = sc.clock.now()
    a, ma, terms_a, _b, _mb, terms_b = _two_contracts(sc)
    admin, reader = api.token("act:admin"), api.token("read")
    listed = api.request("GET", "/v1/terms", token=reader).json()["items"]
    assert [(t["id"], t["durations"]["review_window"], t["contracts"]) for t in listed] == [
        (terms_a, "P14D", 1),
        (terms_b, "P10D", 1),
    ]
    shown = api.request("GET", f"/v1/contracts/{a}", token=reader).json()
    assert shown["terms_id"] == terms_a
    body = {"to_terms_id": terms_b, "selection": {"terms_id": terms_a}}
    refused = api.request("POST", "/v1/terms/migrations", token=admin, actor="client:acme",
                          json=body)  # fmt: skip
    assert refused.status_code == 403
    made = api.request("POST", "/v1/terms/migrations", token=admin, actor="admin:disputes",
                       json=body)  # fmt: skip
    assert made.status_code == 201, made.text
    plan = made.json()
    assert [(m["deadline_id"], m["due_after"]) for m in plan["moves"]] == [
        (sc.pending_deadlines("milestone", ma)[0]["id"], (start + 10 * DAY).isoformat())
    ]
    assert [row["shown"] for row in plan["forecast"]] == ["+100.00 USD", "-100.00 USD"]
    apply = f"/v1/terms/migrations/{plan['id']}/apply"
    unreasoned = api.request("POST", apply, token=admin, actor="admin:disputes", json={})
    assert unreasoned.status_code == 422
    for moved in (1, 0):
        answer = api.request("POST", apply, token=admin, actor="admin:disputes",
                             json={"reason": "10 days for all"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert (answer.json()["status"], answer.json()["moved"]) == ("applied", moved)
    assert _due(sc, ma) == start + 10 * DAY
    missing = api.request("GET", "/v1/terms/migrations/999", token=reader)
    assert (missing.status_code, missing.json()["code"]) == (404, "plan_not_found")


def test_the_cli_lists_terms_plans_and_applies_once(sc: Scenario, tmp_path: Path) -> None:
    start = sc.clock.now()
    _a, ma = sc.in_review(10_000)
    old = sc.engine.terms.current()
    ten = {**sc.engine.policy.durations, "review_window": 10 * DAY}
    new = EscrowEngine(sc.db, Policy(reminders={}, durations=ten), sc.clock, terms_name="ten-day")
    target = new.terms.current()
    clock = tmp_path / "now.txt"
    clock.write_text(start.isoformat())
    env = {"ESCROWFLOW_TEST_CLOCK_FILE": str(clock)}
    listed = as_json(cli(sc.db, "terms", "list", "--json", env=env))
    assert [(t["name"], t["contracts"]) for t in listed] == [(old.name, 1), ("ten-day", 0)]
    shown = cli(sc.db, "terms", "show", str(target.id), env=env)
    assert "review_window P10D" in shown.stdout, shown.stderr
    planned = as_json(
        cli(sc.db, "terms", "plan", "--as", "admin:disputes", "--to", str(target.id),
            "--from", str(old.id), "--json", env=env)
    )  # fmt: skip
    assert [m["due_after"] for m in planned["moves"]] == [(start + 10 * DAY).isoformat()]
    refused = cli(sc.db, "terms", "apply", str(planned["id"]), "--as", "client:acme",
                  "--reason", "mine", env=env)  # fmt: skip
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 4 and len(errors) == 1, refused.stderr
    for moved in (1, 0):
        done = cli(sc.db, "terms", "apply", str(planned["id"]), "--as", "admin:disputes",
                   "--reason", "ten days", env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"applied, {moved} contracts moved now" in done.stdout
    assert _due(sc, ma) == start + 10 * DAY
    missing = cli(sc.db, "terms", "show", "999", env=env)
    assert missing.returncode == 3 and "terms 999 do not exist" in missing.stderr

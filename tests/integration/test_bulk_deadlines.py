"""DL4: an incident freeze. Deadlines chosen by a selection are previewed (count, money
per currency and day), then paused by the preview's id, one transaction each; a thaw
(the freeze undone) gives each the time it had left (DL1)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from storage import bulk_actions
from storage.errors import ConflictError, PermissionDenied, ValidationError
from tests.helpers import ADMIN, CLIENT, FREELANCER, Scenario
from tests.integration.test_cli_admin import as_json, cli
from tests.live import Api
from workflows import bulk, bulk_admin, deadline_admin
from workflows.actors import Actor, Role
from workflows.defaults import LEASE

DAY = timedelta(days=1)


def _in_review(sc: Scenario, client: str, amount: int) -> tuple[int, int]:
    buyer = Actor(Role.CLIENT, client)
    offered = sc.engine.create_contract(
        buyer,
        {"freelancer_id": FREELANCER.party, "title": "Shop", "currency": "USD",
         "milestones": [{"title": "m", "amount": amount}]},
    )  # fmt: skip
    contract = offered["id"]
    (m,) = [c["id"] for c in offered["created"] if c["entity"] == "milestone"]
    sc.fire("contract", contract, "accept", FREELANCER)
    sc.fire("milestone", m, "fund", buyer)
    sc.fire("milestone", m, "submit", FREELANCER)
    return contract, m


def test_dl4_a_freeze_previews_count_and_money_then_pauses_only_what_it_showed(
    sc: Scenario,
) -> None:
    start = sc.clock.now()
    frozen = [_in_review(sc, "fraudco", 1_000 * (i + 1)) for i in range(3)]
    others = [_in_review(sc, "acme", 5_000) for _ in range(2)]
    before = {t: sc.rows(t) for t in ("deadlines", "history")}
    selection = {"client_id": "fraudco", "events": ["auto_approve"]}
    preview = sc.engine.preview_bulk(ADMIN, "pause", selection)
    assert (preview["deadlines"], preview["contracts"]) == (3, 3)
    day14 = (start + 14 * DAY).date().isoformat()
    assert preview["money"] == [
        {"currency": "USD", "day": day14, "amount": 6_000, "deadlines": 3, "shown": "60.00 USD"}
    ]
    assert {t: sc.rows(t) for t in before} == before  # a preview changes nothing
    sc.clock.advance(timedelta(minutes=30))  # reviewed for half an hour, then applied
    applied = sc.engine.apply_bulk(ADMIN, preview["id"], "fraud wave on fraudco")
    assert applied["results"] == {"done": 3}
    sc.wait(days=14)  # past their due dates: the frozen wait, the others fire
    assert [sc.state("milestone", m) for _, m in frozen] == ["in_review"] * 3
    assert [sc.state("milestone", m) for _, m in others] == ["released"] * 2
    paused = [h for h in sc.rows("history", event="pause") if h["entity"] == "deadline"]
    assert {h["payload"]["bulk_id"] for h in paused} == {preview["id"]}
    assert {h["payload"]["reason"] for h in paused} == {"fraud wave on fraudco"}
    thaw = sc.engine.undo_bulk(ADMIN, preview["id"])
    assert (thaw["action"], thaw["deadlines"]) == ("resume", 3)
    resumed_at = sc.clock.now()
    assert sc.engine.apply_bulk(ADMIN, thaw["id"], "fraud checked")["results"] == {"done": 3}
    left = 14 * DAY - timedelta(minutes=30)  # DL1: what they had left when frozen
    sc.wait(seconds=(left - timedelta(seconds=1)).total_seconds())
    assert [sc.state("milestone", m) for _, m in frozen] == ["in_review"] * 3
    sc.wait(seconds=1)
    assert [sc.state("milestone", m) for _, m in frozen] == ["released"] * 3
    assert sc.clock.now() == resumed_at + left
    sc.check_invariants()


def test_dl4_a_deadline_that_moved_on_after_the_preview_is_reported_not_acted_on(
    sc: Scenario,
) -> None:
    (_c1, m1), (_c2, m2) = (_in_review(sc, "fraudco", 1_000) for _ in range(2))
    preview = sc.engine.preview_bulk(ADMIN, "pause", {"client_id": "fraudco"})
    sc.fire("milestone", m1, "release", Actor(Role.CLIENT, "fraudco"))  # fired first
    applied = sc.engine.apply_bulk(ADMIN, preview["id"], "freeze")
    assert applied["results"] == {"done": 1, "skipped": 1}
    (skipped,) = [i for i in bulk.show(sc.db, preview["id"])["sample"] if i["result"] == "skipped"]
    assert "since the preview" in skipped["detail"]
    assert sc.state("milestone", m1) == "released"
    (pending,) = sc.pending_deadlines("milestone", m2)
    assert pending["paused"]
    again = sc.engine.apply_bulk(ADMIN, preview["id"], "freeze")  # finished: nothing more
    assert again["applied"] == 0


def test_dl4_a_preview_whose_selection_now_takes_more_is_refused_with_the_difference(
    sc: Scenario,
) -> None:
    _in_review(sc, "fraudco", 1_000)
    preview = sc.engine.preview_bulk(ADMIN, "pause", {"client_id": "fraudco"})
    _c, m = _in_review(sc, "fraudco", 2_000)
    (late,) = sc.pending_deadlines("milestone", m)
    with pytest.raises(ConflictError) as refused:
        sc.engine.apply_bulk(ADMIN, preview["id"], "freeze")
    assert refused.value.code == "preview_stale"
    assert refused.value.details == {"added": [late["id"]], "count": 1}
    assert not any(d["paused"] for d in sc.rows("deadlines"))


def test_dl4_bulk_actions_are_the_dispute_teams_with_a_selection_and_a_reason(
    sc: Scenario,
) -> None:
    _in_review(sc, "fraudco", 1_000)
    with pytest.raises(PermissionDenied):
        sc.engine.preview_bulk(CLIENT, "pause", {"client_id": "fraudco"})
    with pytest.raises(ValidationError) as empty:
        sc.engine.preview_bulk(ADMIN, "pause", {})
    assert empty.value.code == "selection_empty"
    with pytest.raises(ValidationError) as bad:
        sc.engine.preview_bulk(ADMIN, "pause", {"due_to": "2026-12-03"})
    assert bad.value.details == {"field": "due_to"}
    preview = sc.engine.preview_bulk(ADMIN, "pause", {"client_id": "fraudco"})
    with pytest.raises(ValidationError):
        sc.engine.apply_bulk(ADMIN, preview["id"], " ")
    sc.clock.advance(bulk.PREVIEW_LIFETIME + timedelta(seconds=1))
    with pytest.raises(ConflictError) as expired:
        sc.engine.apply_bulk(ADMIN, preview["id"], "late")
    assert expired.value.code == "preview_expired"


def test_dl4_an_applied_bulk_action_is_a_job_resumed_where_its_runner_stopped(
    sc: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Applied, a bulk action runs as a job held by a lease: a runner that stops lets go
    at its page's end, another resumes at the first item without a result; while a
    runner holds it no other takes it, until its lease (on the engine's clock) lapses."""
    monkeypatch.setattr(bulk_admin, "BULK_PAGE", 2)  # pages of two deadlines
    milestones = [_in_review(sc, "fraudco", 1_000)[1] for _ in range(5)]
    preview = sc.engine.preview_bulk(ADMIN, "pause", {"client_id": "fraudco"})
    started = sc.engine.start_bulk(ADMIN, preview["id"], "outage")
    assert started["status"] == "running"
    assert sc.engine.start_bulk(ADMIN, preview["id"], "again")["reason"] == "outage"
    assert sum(sc.pending_deadlines("milestone", m)[0]["paused"] for m in milestones) == 0
    first = sc.engine.run_bulk("worker-a", should_stop=lambda: True)  # stops after a page
    assert first is not None and first["results"] == {"done": 2, "waiting": 3}
    with sc.db.connect() as conn:
        assert bulk.stored(conn, preview["id"])["runner"] is None  # let go at once
        taken = bulk_actions.claim(
            conn, "worker-b", sc.clock.now(), sc.clock.now() + LEASE, preview["id"]
        )
        conn.commit()
    assert taken == preview["id"]  # worker-b takes it, then dies holding it
    assert sc.engine.run_bulk("worker-c") is None  # held: not taken from a live runner
    sc.clock.advance(LEASE + timedelta(seconds=1))
    done = sc.engine.run_bulk("worker-c")
    assert done is not None and (done["status"], done["results"]) == ("done", {"done": 5})
    assert [sc.pending_deadlines("milestone", m)[0]["paused"] for m in milestones] == [True] * 5
    paused = [h for h in sc.rows("history", event="pause") if h["entity"] == "deadline"]
    assert len(paused) == 5  # each deadline once, whoever ran which page


def test_dl4_one_deadline_that_fails_in_a_bulk_action_harms_no_other(
    sc: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk is one transaction; if anything in it raises, it runs again one savepoint
    per item: the failing item is recorded failed with its error, the rest done."""
    milestones = [_in_review(sc, "fraudco", 1_000)[1] for _ in range(4)]
    poisoned = sc.pending_deadlines("milestone", milestones[2])[0]["id"]
    real = deadline_admin.adjust

    def adjust(unit: Any, deadline_id: int, *args: Any, **kwargs: Any) -> Any:
        if deadline_id == poisoned:
            raise RuntimeError("the disk is on fire")
        return real(unit, deadline_id, *args, **kwargs)

    monkeypatch.setattr(deadline_admin, "adjust", adjust)
    preview = sc.engine.preview_bulk(ADMIN, "pause", {"client_id": "fraudco"})
    applied = sc.engine.apply_bulk(ADMIN, preview["id"], "outage")
    assert (applied["status"], applied["results"]) == ("done", {"done": 3, "failed": 1})
    shown = {i["deadline_id"]: i for i in bulk.show(sc.db, preview["id"])["sample"]}
    assert shown[poisoned]["result"] == "failed"
    assert "the disk is on fire" in shown[poisoned]["detail"]
    paused = [sc.pending_deadlines("milestone", m)[0]["paused"] for m in milestones]
    assert paused == [True, True, False, True]


def test_a_freeze_over_http_previews_applies_and_is_undone(sc: Scenario, api: Api) -> None:
    _c, m = _in_review(sc, "fraudco", 1_000)
    admin = api.token("act:admin")

    def post(path: str, body: Any) -> Any:
        return api.request("POST", path, token=admin, actor="admin:disputes", json=body)

    bad = post("/v1/deadlines/bulk", {"action": "pause", "selection": {"colour": "red"}})
    assert (bad.status_code, bad.json()["code"]) == (422, "unknown_field")
    made = post("/v1/deadlines/bulk", {"action": "pause", "selection": {"client_id": "fraudco"}})
    assert made.status_code == 201, made.text
    preview = made.json()
    assert (preview["deadlines"], preview["status"], preview["results"]) == (
        1,
        "previewed",
        {"waiting": 1},
    )
    applied = post(f"/v1/deadlines/bulk/{preview['id']}/apply", {"reason": "outage"})
    assert applied.status_code == 202, applied.text  # a job now: a worker carries it out
    job = applied.json()
    assert (job["status"], job["progress"], job["reason"]) == (
        "running", {"done": 0, "total": 1}, "outage",
    )  # fmt: skip
    assert not sc.pending_deadlines("milestone", m)[0]["paused"]
    again = post(f"/v1/deadlines/bulk/{preview['id']}/apply", {"reason": "twice"})
    assert (again.status_code, again.json()["reason"]) == (202, "outage")  # changes nothing
    assert sc.engine.run_bulk("worker-1") is not None  # what a worker's bulk job does
    shown = api.request(
        "GET", f"/v1/deadlines/bulk/{preview['id']}", token=admin, actor="admin:disputes"
    ).json()
    assert (shown["status"], shown["results"], shown["progress"]["done"]) == (
        "done",
        {"done": 1},
        1,
    )
    assert sc.pending_deadlines("milestone", m)[0]["paused"]
    assert sc.engine.run_bulk("worker-1") is None  # nothing left to take
    undo = post(f"/v1/deadlines/bulk/{preview['id']}/undo", None)
    assert (undo.status_code, undo.json()["action"]) == (201, "resume")
    post(f"/v1/deadlines/bulk/{undo.json()['id']}/apply", {"reason": "over"})
    sc.engine.run_bulk("worker-1")
    assert not sc.pending_deadlines("milestone", m)[0]["paused"]
    body = {"action": "pause", "selection": {"client_id": "fraudco"}}
    client = api.request(
        "POST", "/v1/deadlines/bulk", token=api.token("act:client"), actor="client:fraudco",
        json=body,
    )  # fmt: skip
    assert client.status_code == 403


def test_a_freeze_from_the_cli_previews_then_applies(sc: Scenario, tmp_path: Path) -> None:
    _in_review(sc, "fraudco", 1_000)
    clock = tmp_path / "now.txt"
    clock.write_text(sc.clock.now().isoformat())
    env = {"ESCROWFLOW_TEST_CLOCK_FILE": str(clock)}
    where = json.dumps({"client_id": "fraudco", "events": ["auto_approve"]})
    shown = as_json(cli(sc.db, "deadlines", "bulk", "pause", "--as", "admin:disputes",
                        "--where", where, "--json", env=env))  # fmt: skip
    assert shown["deadlines"] == 1 and shown["money"][0]["shown"] == "10.00 USD"
    done = cli(sc.db, "deadlines", "bulk-apply", str(shown["id"]), "--as", "admin:disputes",
               "--reason", "outage", env=env)  # fmt: skip
    assert done.returncode == 0 and "done: 1 done" in done.stdout, done.stderr
    shown = as_json(cli(sc.db, "deadlines", "bulk-show", str(shown["id"]), "--json", env=env))
    assert (shown["status"], shown["progress"]) == ("done", {"done": 1, "total": 1})
    again = as_json(cli(sc.db, "deadlines", "bulk", "pause", "--as", "admin:disputes",
                        "--where", where, "--json", env=env))  # fmt: skip
    assert again["deadlines"] == 0  # paused already: nothing left to pause
    thaw = as_json(cli(sc.db, "deadlines", "bulk-undo", str(shown["id"]), "--as",
                       "admin:disputes", "--json", env=env))  # fmt: skip
    detached = cli(sc.db, "deadlines", "bulk-apply", str(thaw["id"]), "--as", "admin:disputes",
                   "--reason", "over", "--detach", env=env)  # fmt: skip
    assert detached.returncode == 0 and "running: 1 waiting" in detached.stdout, detached.stderr
    assert sc.engine.run_bulk("worker-1") is not None  # the workers carry it out
    assert "progress: 1/1" in cli(sc.db, "deadlines", "bulk-show", str(thaw["id"]), env=env).stdout
    bad = cli(sc.db, "deadlines", "bulk", "pause", "--as", "admin:disputes", "--where", "[1]")
    assert bad.returncode == 2 and "--where must be a JSON object" in bad.stderr

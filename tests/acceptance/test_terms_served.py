"""TM1 through the served process: contract A is accepted under a 14-day review window;
the daemon restarts with a 10-day one; contract B is accepted after. Both are submitted
after the restart: the real worker auto-approves B on day 10 and A on day 14, and each
contract's `next` said so beforehand."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine as DBEngine

from storage.models import HISTORY
from tests.served import START, Caller, Server, until

NO_REMINDERS = {"ESCROWFLOW_REMINDERS": "{}"}


def _auto_approved(db: DBEngine, milestone: int) -> bool:
    query = sa.select(sa.func.count()).where(
        HISTORY.c.entity == "milestone",
        HISTORY.c.entity_id == milestone,
        HISTORY.c.event == "auto_approve",
        HISTORY.c.cause == "timer",
    )
    with db.connect() as conn:
        return bool(conn.execute(query).scalar_one())


def test_tm1_a_daemon_restarted_with_new_settings_keeps_running_contracts_on_theirs(
    db: DBEngine, tmp_path: Path
) -> None:
    first = Server(db, tmp_path, **NO_REMINDERS)
    try:
        first.wait_ready()
        caller = Caller(first, db, "act:client", "act:freelancer", "read")
        a, ma = caller.offer()
        caller.act("freelancer:ada", f"/v1/contracts/{a}/events/accept")
        caller.act("client:acme", f"/v1/milestones/{ma}/events/fund")
        caller.http.close()
        assert first.stop() == 0
    finally:
        first.kill()
    second = Server(db, tmp_path, ESCROWFLOW_REVIEW_WINDOW="P10D", **NO_REMINDERS)
    try:
        second.wait_ready()
        caller = Caller(second, db, "act:client", "act:freelancer", "read")
        act, http = caller.act, caller.http
        b, mb = caller.offer()
        act("freelancer:ada", f"/v1/contracts/{b}/events/accept")
        act("client:acme", f"/v1/milestones/{mb}/events/fund")
        for milestone in (ma, mb):
            act("freelancer:ada", f"/v1/milestones/{milestone}/events/submit")
        terms = {c: http.get(f"/v1/contracts/{c}").json()["terms_id"] for c in (a, b)}
        assert terms[a] != terms[b]
        predicted = {
            c: [n["due_at"] for n in http.get(f"/v1/contracts/{c}/next").json()["items"]
                if n["event"] == "auto_approve"]
            for c in (a, b)
        }  # fmt: skip
        assert predicted == {
            a: [(START + timedelta(days=14)).isoformat()],
            b: [(START + timedelta(days=10)).isoformat()],
        }
        second.set_clock(START + timedelta(days=10, minutes=1))
        until(lambda: _auto_approved(db, mb), "B's auto-approval on day 10")
        assert http.get(f"/v1/milestones/{ma}").json()["state"] == "in_review"
        second.set_clock(START + timedelta(days=14, minutes=1))
        until(lambda: _auto_approved(db, ma), "A's auto-approval on day 14")
        assert http.get(f"/v1/milestones/{ma}").json()["state"] == "released"
        caller.http.close()
        assert second.stop() == 0
    finally:
        second.kill()

"""NT2 through the served process: its worker sends the reminders before an
auto-approval on the test clock, and they reach the feed and a webhook receiver once each."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine as DBEngine

from tests.integration.test_cli_admin import cli
from tests.receivers import Receiver
from tests.served import START, Caller, Server, until

DEFAULTS = json.dumps({"review_window": ["P3D", "P1D"], "refund_response_time": ["P3D"]})


def test_nt2_reminders_reach_the_feed_and_a_webhook_once_each_before_the_auto_approval(
    db: DBEngine, tmp_path: Path
) -> None:
    receiver = Receiver()
    receiver.start()
    server = Server(
        db, tmp_path, ESCROWFLOW_WEBHOOK_ALLOW_PRIVATE="true", ESCROWFLOW_REMINDERS=DEFAULTS
    )
    caller: Caller | None = None
    try:
        server.wait_ready()
        caller = Caller(server, db, "act:client", "act:freelancer", "webhooks")
        http, act = caller.http, caller.act

        subscribed = http.post(
            "/v1/webhooks", json={"url": receiver.url, "event_types": ["milestone.*"]}
        )
        assert subscribed.status_code == 201, subscribed.text

        def under_review() -> int:
            contract, milestone = caller.offer()
            act("freelancer:ada", f"/v1/contracts/{contract}/events/accept")
            act("client:acme", f"/v1/milestones/{milestone}/events/fund")
            act("freelancer:ada", f"/v1/milestones/{milestone}/events/submit")
            return milestone

        m, changed, paused = under_review(), under_review(), under_review()
        # Paused by the dispute team on day 1 (the CLI, on the server's clock).
        server.set_clock(START + timedelta(days=1))
        listed = http.get(
            "/v1/deadlines",
            params={"event": "auto_approve"},
            headers={"Escrowflow-Actor": "client:acme"},
        ).json()["items"]
        (deadline,) = [d for d in listed if d["entity_id"] == paused]
        env = {"ESCROWFLOW_TEST_CLOCK_FILE": str(server.clock_file)}
        done = cli(
            db,
            "deadlines",
            "pause",
            str(deadline["id"]),
            "--as",
            "admin:disputes",
            "--reason",
            "a complaint to check",
            env=env,
        )
        assert done.returncode == 0, done.stderr
        # Changes asked for on day 5, before the first reminder (day 11).
        server.set_clock(START + timedelta(days=5))
        act("client:acme", f"/v1/milestones/{changed}/events/request_changes")

        def received(kind: str) -> list[dict[str, Any]]:
            return [e for e in receiver.events() if e["type"] == kind]

        def feed(kind: str) -> list[dict[str, Any]]:
            page = http.get("/v1/events", params={"type": kind, "limit": 100}).json()
            return list(page["items"])

        server.set_clock(START + timedelta(days=11, minutes=1))
        until(lambda: len(received("milestone.reminder")) == 1, "the 3-day reminder")
        server.set_clock(START + timedelta(days=13, minutes=1))
        until(lambda: len(received("milestone.reminder")) == 2, "the 1-day reminder")
        server.set_clock(START + timedelta(days=14, minutes=1))
        until(lambda: len(received("milestone.auto_approve")) == 1, "the auto-approval")

        reminders = received("milestone.reminder")
        assert {r["entity_id"] for r in reminders} == {m}  # none for the other two
        assert http.get(f"/v1/milestones/{paused}").json()["state"] == "in_review"
        assert [r["data"]["party"] for r in reminders] == [{"role": "client", "id": "acme"}] * 2
        assert {r["data"]["due_at"] for r in reminders} == {
            (START + timedelta(days=14)).isoformat()
        }
        assert [r["data"]["amount_at_stake"] for r in reminders] == [50_000, 50_000]
        assert len({r["id"] for r in reminders}) == 2  # two reminders, each delivered once
        assert [e["id"] for e in feed("milestone.reminder")] == [r["id"] for r in reminders]
        shown = http.get(f"/v1/milestones/{m}").json()
        assert shown["state"] == "released"
        assert server.stop() == 0
    finally:
        if caller is not None:
            caller.http.close()
        server.kill()
        receiver.close()

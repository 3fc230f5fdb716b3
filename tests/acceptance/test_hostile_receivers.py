"""Hostile webhook receivers against the served process: a receiver that trickles its
answer and one that never answers delay nobody, and are cut off at the deadline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine as DBEngine

from tests.integration.test_webhooks_hostile import Stalling, wait_for
from tests.receivers import Receiver
from tests.served import Caller, Server

# Real receivers that stall: waits on timeouts.
pytestmark = pytest.mark.slow


def test_slow_and_hanging_receivers_delay_no_delivery_to_others(
    db: DBEngine, tmp_path: Path
) -> None:
    fast, slow, hanging = Receiver(), Stalling(trickle=True), Stalling(trickle=False)
    fast.start()
    server = Server(
        db,
        tmp_path,
        ESCROWFLOW_WEBHOOK_ALLOW_PRIVATE="true",  # the receivers are on 127.0.0.1
        ESCROWFLOW_WEBHOOK_TIMEOUT="8",
    )
    try:
        server.wait_ready()
        caller = Caller(server, db, "act:client", "act:freelancer", "webhooks")
        http, act = caller.http, caller.act

        for receiver in (fast, slow, hanging):
            assert http.post("/v1/webhooks", json={"url": receiver.url}).status_code == 201
        contract, _m = caller.offer()
        wait_for(lambda: slow.open and hanging.open, "the stalling receivers holding requests")
        # Made while both hold their requests: it reaches the fast receiver all the same.
        act("freelancer:ada", f"/v1/contracts/{contract}/events/accept")
        wait_for(lambda: "contract.accept" in [e["type"] for e in fast.events()], "contract.accept")
        assert slow.open and hanging.open  # still held: nobody waited for them
        # Cut off at the deadline, recorded with our reason, retried later with backoff.
        deliveries = "/v1/webhooks/deliveries"

        def cut() -> list[dict[str, Any]]:
            page = http.get(deliveries, params={"status": "pending", "limit": 200}).json()
            return [d for d in page["items"] if d["attempts"] >= 1]

        wait_for(lambda: len(cut()) >= 2, "the stalling deliveries cut off", timeout=120)
        assert {d["last_error"] for d in cut()} == {"no complete answer within 8 s"}
        listing = http.get(deliveries, params={"limit": 200}).text
        assert "X-Slow" not in listing
        ids = [e["id"] for e in fast.events()]
        assert len(ids) == len(set(ids))  # each once
        http.close()
        assert server.stop() == 0
    finally:
        server.kill()
        fast.close()
        slow.stop()
        hanging.stop()

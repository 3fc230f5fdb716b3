"""Webhooks to a real local receiver: signed, retried with backoff, dead-lettered, replayed."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest

from scheduler.webhooks import Dispatcher, verify
from scheduler.worker import Worker
from storage.deliveries import DeliveryFilter
from tests.helpers import CLIENT, FREELANCER, Scenario
from tests.receivers import Receiver
from workflows import feed
from workflows.retry import RetryStrategy


def dispatcher(sc: Scenario, *, max_attempts: int = 12, **kw: Any) -> Dispatcher:
    kw.setdefault("retry", RetryStrategy(timedelta(seconds=10), timedelta(hours=6), max_attempts))
    kw.setdefault("allow_private", True)  # the receiver is on 127.0.0.1
    return Dispatcher(sc.engine, "test-worker", **kw)


def a_funded_milestone(sc: Scenario) -> None:
    _contract, (milestone,) = sc.active_contract(50_000)
    sc.fire("milestone", milestone, "fund", CLIENT)


def test_every_event_arrives_signed_with_its_stable_id(sc: Scenario, receiver: Receiver) -> None:
    sub = feed.subscribe(sc.db, sc.clock.now(), receiver.url, allow_private=True)
    a_funded_milestone(sc)
    report = dispatcher(sc).run()
    assert report.delivered == 5 and report.failed == 0
    listed, _ = feed.read_events(sc.db, sc.clock.now())
    # Sent concurrently: in any order (consumers order by `position`).
    assert sorted(e["id"] for e in receiver.events()) == sorted(e["id"] for e in listed)
    assert sorted(e["position"] for e in receiver.events()) == [1, 2, 3, 4, 5]
    for headers, body in receiver.received:
        assert verify(
            sub["secret"],
            headers["Escrowflow-Signature"],
            headers["Escrowflow-Timestamp"],
            body,
            now=sc.clock.now().timestamp(),
        )
        assert not verify(
            "whsec_wrong",
            headers["Escrowflow-Signature"],
            headers["Escrowflow-Timestamp"],
            body,
            now=sc.clock.now().timestamp(),
        )
        assert headers["Escrowflow-Event-Id"] == json.loads(body)["id"]
    assert dispatcher(sc).run().delivered == 0  # nothing is sent twice


def test_a_filter_takes_only_its_event_types(sc: Scenario, receiver: Receiver) -> None:
    feed.subscribe(sc.db, sc.clock.now(), receiver.url, ["milestone.*"], allow_private=True)
    a_funded_milestone(sc)
    dispatcher(sc).run()
    assert sorted(e["type"] for e in receiver.events()) == ["milestone.create", "milestone.fund"]


def test_with_the_receiver_down_deliveries_back_off_and_all_arrive_once_it_is_back(
    sc: Scenario, receiver: Receiver
) -> None:
    feed.subscribe(sc.db, sc.clock.now(), receiver.url, allow_private=True)
    a_funded_milestone(sc)
    receiver.stop()
    sender = dispatcher(sc)
    assert sender.run().failed == 5
    waits = []
    for _ in range(3):
        pending = feed.deliveries(sc.db, DeliveryFilter(status="pending"))
        assert len(pending) == 5
        due = {d["next_attempt_at"] for d in pending}
        assert len(due) == 1
        waits.append(due.pop())
        assert sender.run().failed == 0  # not before its backoff
        sc.clock.set(max(sc.clock.now(), _parse(waits[-1])))
        assert sender.run().failed == 5
    gaps = [_parse(b) - _parse(a) for a, b in zip(waits, waits[1:], strict=False)]  # noqa: RUF007
    assert gaps == [timedelta(seconds=20), timedelta(seconds=40)]  # doubling
    assert all("ConnectError" in d["last_error"] for d in feed.deliveries(sc.db))
    receiver.start()
    sc.clock.advance(timedelta(minutes=2))
    assert sender.run().delivered == 5
    assert len(receiver.received) == 5
    assert len({e["id"] for e in receiver.events()}) == 5
    assert {d["status"] for d in feed.deliveries(sc.db)} == {"delivered"}


def _parse(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text)


def test_after_n_attempts_a_delivery_is_dead_lettered_and_can_be_replayed(
    sc: Scenario, receiver: Receiver
) -> None:
    sub = feed.subscribe(
        sc.db, sc.clock.now(), receiver.url, ["milestone.fund"], allow_private=True
    )
    a_funded_milestone(sc)
    receiver.status = 500
    sender = dispatcher(sc, max_attempts=3)
    for _ in range(3):
        sender.run()
        sc.clock.advance(timedelta(hours=1))
    (dead,) = feed.deliveries(sc.db, DeliveryFilter(status="dead"))
    assert dead["attempts"] == 3 and dead["last_status_code"] == 500
    assert sender.run().delivered == 0  # the dead stay dead
    receiver.status = 200
    assert feed.replay(sc.db, sc.clock.now(), subscription_id=sub["id"]) == 1
    assert sender.run().delivered == 1
    assert [e["type"] for e in receiver.events()][-1] == "milestone.fund"


@pytest.mark.slow  # a real worker, waits on its interval
def test_the_worker_delivers_webhooks_on_its_own(sc: Scenario, receiver: Receiver) -> None:
    feed.subscribe(sc.db, sc.clock.now(), receiver.url, allow_private=True)
    worker = Worker(
        sc.engine,
        interval=0.05,
        dispatcher=lambda worker_id: Dispatcher(sc.engine, worker_id, allow_private=True),
    )
    worker.start()
    try:
        a_funded_milestone(sc)
        sc.fire("contract", 1, "end", FREELANCER)
        deadline = time.monotonic() + 15
        while len(receiver.received) < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    types = [e["type"] for e in sorted(receiver.events(), key=lambda e: e["position"])]
    assert types[:5] == [
        "contract.create",
        "milestone.create",
        "contract.add_milestones",
        "contract.accept",
        "milestone.fund",
    ]
    assert "contract.end" in types
    assert len(types) == len({e["id"] for e in receiver.events()})

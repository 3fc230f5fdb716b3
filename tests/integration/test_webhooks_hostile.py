"""Hostile webhook receivers and URLs: one bad receiver harms no one else, internal
addresses are refused when registered and again when sending, and nothing a receiver
says comes back through the API."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler.webhooks import Dispatcher
from storage import models
from storage.errors import ValidationError
from tests.helpers import CLIENT, Scenario
from tests.integration.test_webhooks import a_funded_milestone
from tests.live import Api
from tests.receivers import Receiver
from workflows import feed
from workflows.outbound import check_webhook_url

INTERNAL = [
    "http://127.0.0.1:8080/x",
    "http://127.1/x",
    "http://2130706433/x",
    "http://0x7f000001/x",
    "http://0177.0.0.1/x",
    "http://localhost:9000/x",
    "http://api.localhost/x",
    "http://10.1.2.3/x",
    "http://172.16.0.9/x",
    "http://172.31.255.1/x",
    "http://192.168.1.1/x",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/x",
    "http://0.0.0.0/x",
    "http://224.0.0.1/x",
    "http://[::1]/x",
    "http://[fc00::1]/x",
    "http://[fd12:3456::1]/x",
    "http://[fe80::1]/x",
    "http://[::ffff:127.0.0.1]/x",
    "http://[::ffff:7f00:1]/x",
]
MALFORMED = [
    "http://127.0.0.1/x\r\nX-Injected: 1",
    "http://hooks.example.com/a b",
    "javascript:alert(1)",
    "ftp://hooks.example.com/x",
    "http://evil.com@127.0.0.1/x",
    "http://user:pw@hooks.example.com/x",
    "http:///nohost",
    "http://hooks.example.com:99999/x",
]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_addresses_are_refused_in_every_spelling(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        check_webhook_url(url, allow_private=False)
    assert refused.value.code == "url_not_allowed"
    assert check_webhook_url(url, allow_private=True) == url  # tests, internal deployments


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_urls_are_refused_even_when_private_targets_are_allowed(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        check_webhook_url(url, allow_private=True)
    assert refused.value.code == "invalid_url"


def test_public_urls_are_accepted() -> None:
    for url in ("https://hooks.example.com/escrow", "http://93.184.216.34:8080/x"):
        assert check_webhook_url(url, allow_private=False) == url


def test_registration_over_http_refuses_crlf_javascript_and_decimal_urls(api: Api) -> None:
    admin = api.token("webhooks", service="payments")
    for url, code in [
        ("http://127.0.0.1/x\r\nX-Injected: 1", "invalid_url"),
        ("javascript:alert(1)", "invalid_url"),
        ("http://2130706433/", "url_not_allowed"),
        ("http://[::ffff:10.0.0.1]/", "url_not_allowed"),
    ]:
        refused = api.request("POST", "/v1/webhooks", token=admin, json={"url": url})
        assert (refused.status_code, refused.json()["code"]) == (422, code), url
        assert refused.json()["message"]
    assert api.ok("GET", "/v1/webhooks", token=admin)["items"] == []


def _deliveries(sc: Scenario) -> list[dict[str, Any]]:
    return sc.rows("webhook_deliveries")


def test_a_name_resolving_to_loopback_is_refused_when_sending(
    sc: Scenario, receiver: Receiver
) -> None:
    """DNS rebinding: the name passed registration; at send time it resolves to
    127.0.0.1, where the receiver listens. Nothing reaches it, and only our reason is
    recorded."""
    feed.subscribe(sc.db, sc.clock.now(), f"http://hooks.example.com:{receiver.port}/hook")
    a_funded_milestone(sc)
    report = Dispatcher(
        sc.engine, "w", allow_private=False, resolve=lambda host, port: ["127.0.0.1"]
    ).run()
    assert report.delivered == 0 and report.failed > 0
    assert receiver.received == []  # no request reached 127.0.0.1
    errors = {d["last_error"] for d in _deliveries(sc)}
    assert errors == {"refused: the host resolves to an internal address"}


def test_an_unusable_subscription_harms_no_other_receiver(sc: Scenario) -> None:
    """A name that no longer resolves and a URL stored before it was checked (CRLF):
    their deliveries fail on their own; three good receivers get every event once."""
    good = [Receiver() for _ in range(3)]
    for r in good:
        r.start()
    try:
        now = sc.clock.now()
        for r in good:
            feed.subscribe(sc.db, now, r.url, allow_private=True)
        gone = feed.subscribe(sc.db, now, "http://gone.example.com/hook")
        crlf = feed.subscribe(sc.db, now, "http://hooks.example.com/ok")
        with sc.db.begin() as conn:  # as if written by a version that did not check
            conn.execute(
                models.WEBHOOK_SUBSCRIPTIONS.update()
                .where(models.WEBHOOK_SUBSCRIPTIONS.c.id == crlf["id"])
                .values(url="http://127.0.0.1/x\r\nX-Injected: 1")
            )

        def resolve(host: str, port: int) -> list[str]:
            if host == "gone.example.com":
                raise socket.gaierror("Name or service not known")
            return ["127.0.0.1"]

        a_funded_milestone(sc)
        report = Dispatcher(sc.engine, "w", allow_private=True, resolve=resolve).run()
        events = len(sc.rows("outbox_events"))
        assert report.delivered == 3 * events
        for r in good:
            ids = [e["id"] for e in r.events()]
            assert len(ids) == events == len(set(ids))
        failed = {
            d["subscription_id"]: d["last_error"]
            for d in _deliveries(sc)
            if d["status"] == "pending" and d["attempts"] == 1
        }
        assert failed == {
            gone["id"]: "the host name does not resolve",
            crlf["id"]: "invalid URL (invalid_url)",
        }
    finally:
        for r in good:
            r.close()


class Stalling:
    """A receiver on 127.0.0.1 that never finishes answering: `trickle` sends the status
    line and then one header line every 2 s, forever; otherwise it says nothing at all.
    `open` counts connections the client has not closed yet."""

    def __init__(self, trickle: bool) -> None:
        self.trickle = trickle
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.open = 0
        self.accepted = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with self.lock:
            self.open += 1
            self.accepted += 1
        try:
            conn.recv(65536)
            if self.trickle:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
            conn.settimeout(2)
            while not self.stopped.is_set():
                try:
                    if conn.recv(1) == b"":  # the client hung up
                        return
                except TimeoutError:
                    if self.trickle:
                        conn.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    return
        except OSError:
            return
        finally:
            with self.lock:
                self.open -= 1
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def stalling() -> Iterator[tuple[Stalling, Stalling]]:
    slow, hanging = Stalling(trickle=True), Stalling(trickle=False)
    yield slow, hanging
    slow.stop()
    hanging.stop()


@pytest.mark.slow  # waits on timeouts
def test_slow_and_hanging_receivers_delay_nobody_and_are_cut_at_the_deadline(
    sc: Scenario, receiver: Receiver, stalling: tuple[Stalling, Stalling]
) -> None:
    slow, hanging = stalling
    now = sc.clock.now()
    fast_sub = feed.subscribe(sc.db, now, receiver.url, allow_private=True)
    feed.subscribe(sc.db, now, slow.url, allow_private=True)
    feed.subscribe(sc.db, now, hanging.url, allow_private=True)
    _contract, (m,) = sc.active_contract(50_000)
    dispatcher = Dispatcher(sc.engine, "w", allow_private=True, timeout=10, per_subscription=2)
    done = threading.Event()
    reports: list[Any] = []

    def run() -> None:
        reports.append(dispatcher.run())
        done.set()

    threading.Thread(target=run, daemon=True).start()
    wait_for(lambda: slow.open == 2 and hanging.open == 2, "both stalling receivers held")
    before = len(receiver.received)
    # Made while the stalling receivers hold their requests: arrives all the same.
    sc.fire("milestone", m, "fund", CLIENT)
    wait_for(lambda: _types(receiver)[-1:] == ["milestone.fund"], "the fund event")
    assert len(receiver.received) > before
    assert not done.is_set() and slow.open and hanging.open  # still being held
    assert done.wait(60), "the dispatcher never cut the stalling receivers off"
    (report,) = reports
    events = len(sc.rows("outbox_events"))
    assert len({e["id"] for e in receiver.events()}) == events == len(receiver.received)
    stalled = [d for d in _deliveries(sc) if d["subscription_id"] != fast_sub["id"]]
    assert stalled and all(d["status"] == "pending" for d in stalled)
    cut = [d for d in stalled if d["attempts"] == 1]
    assert cut and {d["last_error"] for d in cut} == {"no complete answer within 10 s"}
    # Retried with backoff, not at once.
    assert all(d["next_attempt_at"] > sc.clock.now() for d in cut)
    assert report.failed == len(cut)
    assert slow.open == hanging.open == 0  # every held connection was closed by us


def _types(receiver: Receiver) -> list[str]:
    return [e["type"] for e in sorted(receiver.events(), key=lambda e: e["position"])]


def wait_for(check: Any, what: str, timeout: float = 30) -> None:
    """Poll state (the receivers' and the database's), never sleep a fixed time."""
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_listing_deliveries_shows_no_receiver_text(sc: Scenario, receiver: Receiver) -> None:
    receiver.status = 500
    feed.subscribe(sc.db, sc.clock.now(), receiver.url, allow_private=True)
    a_funded_milestone(sc)
    Dispatcher(sc.engine, "w", allow_private=True).run()
    with sc.db.connect() as conn:
        errors = conn.execute(sa.select(models.WEBHOOK_DELIVERIES.c.last_error)).scalars().all()
    assert errors and set(errors) == {"HTTP 500"}


@pytest.mark.slow  # waits on timeouts
def test_a_delivery_in_flight_is_not_sent_again_when_its_lease_runs_out_meanwhile(
    sc: Scenario, stalling: tuple[Stalling, Stalling]
) -> None:
    # The dispatcher claims more while requests are in flight. A request held past its
    # lease (a clock that jumped, or a lease shorter than the timeout) must not make the
    # next claim take its delivery again: each delivery is sent once at a time.
    _slow, hanging = stalling
    feed.subscribe(sc.db, sc.clock.now(), hanging.url, allow_private=True)
    sc.active_contract(50_000)
    dispatcher = Dispatcher(sc.engine, "w", allow_private=True, timeout=3, per_subscription=50)
    done = threading.Event()
    threading.Thread(target=lambda: (dispatcher.run(), done.set()), daemon=True).start()
    wait_for(lambda: hanging.open >= 1, "a request held")
    sent = len(sc.rows("webhook_deliveries"))  # recorded before the first was claimed
    assert sent >= 2
    wait_for(lambda: hanging.open == sent, "every delivery's request held")
    sc.clock.advance(dispatcher.lease + timedelta(seconds=1))  # every lease has run out
    assert done.wait(60), "the dispatcher never cut the hanging receiver off"
    assert hanging.accepted == sent, f"{hanging.accepted} requests for {sent} deliveries"

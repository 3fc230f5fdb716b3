"""The webhook dispatcher: every event delivered at least once, signed, with backoff.

A pass sequences new events (workflows.feed, which also records the deliveries owed),
claims due deliveries with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several
workers share them), POSTs them outside any transaction, then records the outcomes. A
worker killed between the POST and the record sends that delivery again once its lease
runs out: at least once, never silently dropped. Consumers dedupe on the event `id`.

Each request carries:
- ``Escrowflow-Event-Id``: the event's stable UUID;
- ``Escrowflow-Timestamp``: Unix seconds when it was signed;
- ``Escrowflow-Signature``: ``v1=`` + hex HMAC-SHA256 of ``"{timestamp}.{body}"`` with
  the subscription's secret (see :func:`verify`).

A 2xx answer is delivered; anything else (including no answer within the timeout) is a
failed attempt, retried with the one `RetryStrategy` (workflows/retry.py); after its
``max_attempts`` the delivery is dead-lettered until replayed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from storage import deliveries
from storage.db import transaction, translated_errors
from storage.errors import ValidationError
from workflows.defaults import LEASE, WEBHOOK_BATCH_SIZE, WEBHOOK_TIMEOUT_SECONDS
from workflows.engine import EscrowEngine
from workflows.feed import public_event, sequence_events
from workflows.outbound import BlockedAddress, Resolver, resolve_public, system_resolver
from workflows.retry import WEBHOOK_RETRY, RetryStrategy

log = logging.getLogger("escrowflow.webhooks")

# While slow receivers are still answering, new events are sequenced this often (s).
SEQUENCE_EVERY = 0.5


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify(
    secret: str, signature: str, timestamp: str, body: bytes, *, now: float, tolerance: int = 300
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


@dataclass
class DispatchReport:
    sequenced: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0


@dataclass(frozen=True)
class _Outcome:
    delivery_id: int
    attempts: int
    ok: bool
    status_code: int | None
    error: str | None


@dataclass
class Dispatcher:
    """Delivers the outbox's events to webhook subscribers (see :meth:`run`)."""

    engine: EscrowEngine
    worker_id: str
    _: KW_ONLY
    retry: RetryStrategy = WEBHOOK_RETRY
    timeout: float = WEBHOOK_TIMEOUT_SECONDS
    batch_size: int = WEBHOOK_BATCH_SIZE
    lease: timedelta = LEASE
    concurrency: int = 16
    per_subscription: int = 4
    poll: float = 0.05
    on_failure: Callable[[str], None] | None = None
    allow_private: bool = False
    resolve: Resolver = system_resolver

    def close(self) -> None:
        """Nothing is held between runs (each run has its own HTTP client)."""

    def has_subscribers(self) -> bool:
        with translated_errors(), self.engine.db.connect() as conn:
            return deliveries.has_subscribers(conn)

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> DispatchReport:
        """Deliver until nothing is due and nothing is in flight.

        Deliveries are sent concurrently, at most `concurrency` at once and
        `per_subscription` to one receiver; each outcome is recorded as soon as it is
        known, and more are claimed while slow receivers are still answering, so a slow
        or hanging receiver delays nobody else. Each request has an overall deadline
        (`timeout`: connection, sending and the whole answer), so a receiver that trickles
        its answer is cut off like one that never answers.
        """
        report = DispatchReport()
        # With nobody subscribed, the feed's readers sequence for themselves: a worker
        # draining deadlines does not compete with them for the write lock.
        if not self.has_subscribers():
            return report
        report.sequenced = sequence_events(self.engine.db, self.engine.clock.now())
        asyncio.run(self._deliver(report, should_stop))
        return report

    async def _deliver(self, report: DispatchReport, should_stop: Callable[[], bool]) -> None:
        in_flight: dict[asyncio.Task[_Outcome], Any] = {}  # task -> the delivery it sends
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(
            follow_redirects=False, limits=limits, timeout=self.timeout
        ) as client:
            drained, sequenced = False, time.monotonic()
            while True:
                free = self.concurrency - len(in_flight)
                if in_flight and time.monotonic() - sequenced > SEQUENCE_EVERY:
                    # Events that came while slow receivers answer are owed too.
                    now = self.engine.clock.now()
                    report.sequenced += await asyncio.to_thread(
                        sequence_events, self.engine.db, now
                    )
                    sequenced = time.monotonic()
                if free > 0 and not should_stop() and not drained:
                    busy = Counter(row.subscription_id for row in in_flight.values())
                    # Never sent again while its request is open, even if its lease ran
                    # out meanwhile (a clock that jumped).
                    sending = [row.delivery_id for row in in_flight.values()]
                    now = self.engine.clock.now()
                    limit = min(free, self.batch_size)
                    rows = await asyncio.to_thread(self.claim, now, limit, busy, sending)
                    for row in rows:
                        task = asyncio.create_task(self._send(client, row))
                        in_flight[task] = row
                    # Nothing more due and nobody waiting on a slow receiver: done.
                    drained = not rows and not in_flight
                if not in_flight:
                    return
                done, _ = await asyncio.wait(
                    in_flight, timeout=self.poll, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    outcomes = [task.result() for task in done]
                    for task in done:
                        del in_flight[task]
                    await asyncio.to_thread(self.record, outcomes, self.engine.clock.now(), report)
                    drained = False

    def claim(
        self,
        now: datetime,
        limit: int | None = None,
        busy: Mapping[int, int] | None = None,
        sending: Sequence[int] = (),
    ) -> list[Any]:
        """Lease up to `limit` due deliveries, oldest first, at most `per_subscription` to
        one subscription counting the `busy` ones (subscription -> requests in flight),
        none of those being `sending`."""
        with transaction(self.engine.db) as conn:
            return deliveries.claim_due(
                conn,
                self.worker_id,
                now,
                now + self.lease,
                limit=limit or self.batch_size,
                per_subscription=self.per_subscription,
                busy=busy or {},
                sending=sending,
            )

    async def _send(self, client: httpx.AsyncClient, row: Any) -> _Outcome:
        """One delivery: whatever goes wrong is this delivery's failed attempt, never the
        others'. What is recorded is a status code or a short reason of ours, never the
        receiver's words."""
        attempts = row.attempts + 1
        try:
            async with asyncio.timeout(self.timeout):
                return await self._post(client, row, attempts)
        except (TimeoutError, httpx.TimeoutException):
            reason = f"no complete answer within {self.timeout:g} s"
        except ValidationError as exc:
            reason = f"invalid URL ({exc.code})"
        except BlockedAddress:
            reason = "refused: the host resolves to an internal address"
        except OSError:
            reason = "the host name does not resolve"
        except httpx.HTTPError as exc:
            reason = f"connection failed ({type(exc).__name__})"
        except Exception as exc:  # one bad delivery never harms the others
            log.exception("webhook delivery %s raised", row.delivery_id)
            reason = f"could not be sent ({type(exc).__name__})"
        return _Outcome(row.delivery_id, attempts, False, None, reason)

    async def _post(self, client: httpx.AsyncClient, row: Any, attempts: int) -> _Outcome:
        # Checked again now, and sent to the address checked (DNS rebinding).
        url, host = await asyncio.to_thread(
            resolve_public, row.url, allow_private=self.allow_private, resolve=self.resolve
        )
        event = public_event(row)
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        timestamp = int(self.engine.clock.now().timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "escrowflow-webhooks/1",
            "Escrowflow-Event-Id": event["id"],
            "Escrowflow-Event-Type": event["type"],
            "Escrowflow-Timestamp": str(timestamp),
            "Escrowflow-Signature": sign(row.secret, timestamp, body),
            "Host": host,
        }
        # Streamed and never read: the receiver's answer is its status code alone.
        extensions = {"sni_hostname": urlsplit(row.url).hostname or ""}
        request = client.build_request(
            "POST", url, content=body, headers=headers, extensions=extensions
        )
        response = await client.send(request, stream=True)
        await response.aclose()
        status = response.status_code
        if 200 <= status < 300:
            return _Outcome(row.delivery_id, attempts, True, status, None)
        return _Outcome(row.delivery_id, attempts, False, status, f"HTTP {status}")

    def record(self, outcomes: list[_Outcome], now: datetime, report: DispatchReport) -> None:
        with transaction(self.engine.db) as conn:
            for outcome in outcomes:
                values: dict[str, Any] = {
                    "attempts": outcome.attempts,
                    "last_status_code": outcome.status_code,
                    "claimed_by": None,
                    "claim_expires_at": None,
                }
                if outcome.ok:
                    values.update(status="delivered", delivered_at=now, last_error=None)
                    report.delivered += 1
                else:
                    report.failed += 1
                    values["last_error"] = (outcome.error or "")[:2000]
                    if self.retry.gives_up(outcome.attempts):
                        values["status"] = "dead"
                        report.dead += 1
                    else:
                        values["next_attempt_at"] = now + self.retry.wait(outcome.attempts)
                    self._log_failure(outcome, dead="status" in values)
                deliveries.record(conn, outcome.delivery_id, self.worker_id, values)

    def _log_failure(self, outcome: _Outcome, *, dead: bool) -> None:
        fields = {
            "event": "webhook_dead" if dead else "webhook_failed",
            "delivery": outcome.delivery_id,
            "attempts": outcome.attempts,
            "error": outcome.error,
            "worker": self.worker_id,
        }
        log.warning("webhook delivery failed", extra={"fields": fields})
        if self.on_failure is not None:
            self.on_failure("dead" if dead else "failed")

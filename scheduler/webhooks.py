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
failed attempt, retried after ``backoff_base * 2**(attempts-1)`` (capped); after
``max_attempts`` the delivery is dead-lettered until replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from storage import models
from storage.db import claim, transaction, translated_errors, unclaimed
from workflows.engine import Engine
from workflows.feed import public_event, sequence_events

log = logging.getLogger("escrowflow.webhooks")

_deliveries = models.WEBHOOK_DELIVERIES
_subscriptions = models.WEBHOOK_SUBSCRIPTIONS
_outbox = models.OUTBOX


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


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        worker_id: str,
        *,
        max_attempts: int = 12,
        backoff_base: timedelta = timedelta(seconds=10),
        backoff_cap: timedelta = timedelta(hours=6),
        timeout: float = 10.0,
        batch_size: int = 100,
        lease: timedelta = timedelta(seconds=60),
        concurrency: int = 8,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.batch_size = batch_size
        self.lease = lease
        self.concurrency = concurrency
        self.on_failure = on_failure
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def backoff(self, attempts: int) -> timedelta:
        wait: timedelta = self.backoff_base * 2 ** (attempts - 1)
        return min(wait, self.backoff_cap)

    def has_subscribers(self) -> bool:
        query = sa.select(_subscriptions.c.id).where(_subscriptions.c.removed_at.is_(None))
        with translated_errors(), self.engine.db.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> DispatchReport:
        """Sequence, then deliver batch after batch until nothing is due."""
        report = DispatchReport()
        # With nobody subscribed, the feed's readers sequence for themselves: a worker
        # draining deadlines does not compete with them for the write lock.
        if not self.has_subscribers():
            return report
        report.sequenced = sequence_events(self.engine.db, self.engine.clock.now())
        while not should_stop():
            now = self.engine.clock.now()
            claimed = self.claim(now)
            if not claimed:
                break
            outcomes = self._send_all(claimed)
            self.record(outcomes, self.engine.clock.now(), report)
            if len(claimed) < self.batch_size:
                break
        return report

    def claim(self, now: datetime) -> list[Any]:
        d = _deliveries.c
        due = sa.and_(d.status == "pending", d.next_attempt_at <= now, unclaimed(_deliveries, now))
        query = sa.select(d.id).where(due).order_by(d.next_attempt_at, d.id).limit(self.batch_size)
        with transaction(self.engine.db) as conn:
            ids = [
                row.id for row in claim(conn, query, _deliveries, self.worker_id, now + self.lease)
            ]
            if not ids:
                return []
            rows = conn.execute(
                sa.select(
                    d.id.label("delivery_id"),
                    d.attempts,
                    _subscriptions.c.url,
                    _subscriptions.c.secret,
                    _outbox,
                )
                .join(_subscriptions, _subscriptions.c.id == d.subscription_id)
                .join(_outbox, _outbox.c.id == d.event_id)
                .where(d.id.in_(ids))
                .order_by(_outbox.c.position)
            ).all()
        return list(rows)

    def _send_all(self, claimed: list[Any]) -> list[_Outcome]:
        if len(claimed) == 1:
            return [self._send(claimed[0])]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._send, claimed))

    def _send(self, row: Any) -> _Outcome:
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
        }
        attempts = row.attempts + 1
        try:
            # Streamed: only the first bytes of a failing receiver's answer are read.
            with self._client.stream("POST", row.url, content=body, headers=headers) as response:
                status = response.status_code
                if 200 <= status < 300:
                    return _Outcome(row.delivery_id, attempts, True, status, None)
                snippet = next(response.iter_bytes(200), b"")[:200]
        except httpx.HTTPError as exc:
            return _Outcome(row.delivery_id, attempts, False, None, f"{type(exc).__name__}: {exc}")
        text = snippet.decode(errors="replace")
        return _Outcome(row.delivery_id, attempts, False, status, f"HTTP {status}: {text}")

    def record(self, outcomes: list[_Outcome], now: datetime, report: DispatchReport) -> None:
        d = _deliveries.c
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
                    if outcome.attempts >= self.max_attempts:
                        values["status"] = "dead"
                        report.dead += 1
                    else:
                        values["next_attempt_at"] = now + self.backoff(outcome.attempts)
                    self._log_failure(outcome, dead="status" in values)
                # Only if still ours: a replay or an expired lease may have moved it on.
                conn.execute(
                    _deliveries.update()
                    .where(d.id == outcome.delivery_id, d.claimed_by == self.worker_id)
                    .values(**values)
                )

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

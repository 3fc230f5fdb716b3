"""The raw-driver limit of a drain (issue 27): our own program doing, per fired
auto-approval, the durable work the engine does — the deadline, the milestone and the
contract updated; the history row, the ledger entry and the outbox event inserted — in
batches of 500 a transaction, with nothing but the driver: the standard library's
`sqlite3` (WAL, synchronous=FULL) or psycopg 3 on a durable server (fsync,
synchronous_commit, full_page_writes on), set-based there (each kind of row one
statement over the batch's ids). No lease, no decision, no savepoint: what is above it
is the engine's cost.

    python bench/limit.py sqlite /path/to/file.db
    python bench/limit.py postgresql 'host=/tmp/sock dbname=limit user=postgres'

It prints `LIMIT fired=N seconds=S cpu=C` (C: this process's CPU and, on PostgreSQL, its
server backend's, from the first claim to the last commit).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

BATCH = 500


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _payload(version: int) -> str:
    return json.dumps({"from": "in_review", "to": "released", "version": version})


def sqlite_limit(path: str) -> tuple[int, float, float]:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    fired, started, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ")
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(
            "SELECT d.id, d.contract_id, d.entity_id, d.due_at, m.escrow, m.version, "
            "m.released_amount, c.held, c.released, c.currency, c.client_id, "
            "c.freelancer_id FROM deadlines d JOIN milestones m ON m.id = d.entity_id "
            "JOIN contracts c ON c.id = d.contract_id WHERE d.status = 'pending' "
            "AND d.due_at <= ? ORDER BY d.due_at, d.id LIMIT ?",
            (now, BATCH),
        ).fetchall()
        if not rows:
            conn.execute("COMMIT")
            break
        (first,) = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM history").fetchone()
        history, ledger, events, deadlines, milestones, contracts = [], [], [], [], [], []
        for n, (d, c, m, due, escrow, version, paid, held, released, cur, cl, fr) in enumerate(
            rows
        ):
            h = first + n
            payload = _payload(version + 1)
            history.append(
                (h, c, "milestone", m, "auto_approve", "in_review", "released", version + 1,
                 "system", "escrowflow", "timer", d, due, now, "{}")
            )  # fmt: skip
            ledger.append((c, m, h, "release", escrow, cur, now))
            events.append(
                (str(uuid.uuid4()), c, h, "milestone.auto_approve", "milestone", m,
                 json.dumps([cl, fr]), now, payload)
            )  # fmt: skip
            deadlines.append((now, h, d))
            milestones.append((version + 1, now, paid + escrow, m))
            contracts.append((released + escrow, held - escrow, c))
        conn.executemany(
            "INSERT INTO history (id, contract_id, entity, entity_id, event, from_state, "
            "to_state, version, actor_role, actor_party, cause, deadline_id, due_at, at, "
            "payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            history,
        )
        conn.executemany(
            "INSERT INTO ledger_entries (contract_id, milestone_id, history_id, kind, "
            "amount, currency, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ledger,
        )
        conn.executemany(
            "INSERT INTO outbox_events (event_id, contract_id, history_id, type, entity, "
            "entity_id, recipients, at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            events,
        )
        conn.executemany(
            "UPDATE deadlines SET status = 'fired', closed_at = ?, history_id = ? WHERE id = ?",
            deadlines,
        )
        conn.executemany(
            "UPDATE milestones SET state = 'released', version = ?, updated_at = ?, "
            "escrow = 0, released_amount = ? WHERE id = ?",
            milestones,
        )
        conn.executemany(
            "UPDATE contracts SET released = ?, held = ?, active_milestone_id = NULL WHERE id = ?",
            contracts,
        )
        conn.execute("COMMIT")
        fired += len(rows)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    return fired, seconds, cpu


# Each kind of row, one statement over the batch (`picked`: the claimed deadlines, locked).
_PG_BATCH = """
WITH picked AS (
    SELECT d.id, d.contract_id, d.entity_id, d.due_at
    FROM deadlines d
    WHERE d.status = 'pending' AND d.due_at <= now()
    ORDER BY d.due_at, d.id LIMIT %(batch)s FOR UPDATE SKIP LOCKED
), rows AS (
    SELECT p.id AS deadline_id, p.contract_id, p.entity_id, p.due_at, m.escrow, m.version,
           c.currency, c.client_id, c.freelancer_id,
           nextval(pg_get_serial_sequence('history', 'id')) AS history_id
    FROM picked p JOIN milestones m ON m.id = p.entity_id JOIN contracts c ON c.id = p.contract_id
), h AS (
    INSERT INTO history (id, contract_id, entity, entity_id, event, from_state, to_state,
                         version, actor_role, actor_party, cause, deadline_id, due_at, at,
                         payload)
    SELECT history_id, contract_id, 'milestone', entity_id, 'auto_approve', 'in_review',
           'released', version + 1, 'system', 'escrowflow', 'timer', deadline_id, due_at,
           now(), '{}'::json
    FROM rows
), l AS (
    INSERT INTO ledger_entries (contract_id, milestone_id, history_id, kind, amount,
                                currency, at)
    SELECT contract_id, entity_id, history_id, 'release', escrow, currency, now() FROM rows
), e AS (
    INSERT INTO outbox_events (event_id, contract_id, history_id, type, entity, entity_id,
                               recipients, at, data)
    SELECT gen_random_uuid()::text, contract_id, history_id, 'milestone.auto_approve',
           'milestone', entity_id, json_build_array(client_id, freelancer_id), now(),
           json_build_object('from', 'in_review', 'to', 'released', 'version', version + 1)
    FROM rows
), dl AS (
    UPDATE deadlines d SET status = 'fired', closed_at = now(), history_id = r.history_id
    FROM rows r WHERE d.id = r.deadline_id
), ms AS (
    UPDATE milestones m SET state = 'released', version = r.version + 1, updated_at = now(),
           escrow = 0, released_amount = m.released_amount + r.escrow
    FROM rows r WHERE m.id = r.entity_id
), ct AS (
    UPDATE contracts c SET released = c.released + r.escrow, held = c.held - r.escrow,
           active_milestone_id = NULL
    FROM rows r WHERE c.id = r.contract_id
)
SELECT count(*) FROM rows
"""


def postgresql_limit(conninfo: str) -> tuple[int, float, float]:
    import psycopg

    with psycopg.connect(conninfo, autocommit=False) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        conn.commit()
        fired, started = 0, time.perf_counter()
        cpu = time.process_time() + 0.0
        server = _cpu(backend)
        while True:
            (count,) = conn.execute(_PG_BATCH, {"batch": BATCH}).fetchone()  # type: ignore[misc]
            conn.commit()
            if not count:
                break
            fired += count
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu + _cpu(backend) - server
    return fired, seconds, cpu


def main() -> None:
    backend, where = sys.argv[1], sys.argv[2]
    run = sqlite_limit if backend == "sqlite" else postgresql_limit
    fired, seconds, cpu = run(where)
    print(f"LIMIT fired={fired} seconds={seconds:.3f} cpu={cpu:.3f}", flush=True)


if __name__ == "__main__":
    main()

"""The engine's prepared statements convert types, apply defaults and translate errors
exactly as SQLAlchemy Core does, on both backends."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine as DBEngine

from storage.db import transaction
from storage.errors import ConflictError
from storage.fastpath import FastPath, insert_statement, update_statement, values_of
from storage.models import CONTRACTS, DEADLINES, HISTORY, MILESTONES

WHEN = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def _contract(conn: sa.Connection, fast: FastPath) -> int:
    values = {
        "kind": "fixed",
        "client_id": "acme",
        "freelancer_id": "ada",
        "title": "t",
        "currency": "USD",
        "state": "offer",
        "version": 1,
        "created_at": WHEN,
        "updated_at": WHEN,
    }
    prepared = fast.prepare("c", insert_statement, CONTRACTS, tuple(values), fast.dialect)
    return fast.insert(conn, prepared, values_of(values))


def test_insert_returns_id_applies_defaults_and_reads_back_types(db: DBEngine) -> None:
    fast = FastPath(db.dialect)
    with transaction(db) as conn:
        contract = _contract(conn, fast)
        row = {
            "contract_id": contract,
            "position": 1,
            "title": "m",
            "amount": 900,
            "due_date": date(2026, 4, 1),
            "state": "pending",
            "version": 1,
            "created_at": WHEN,
            "updated_at": WHEN,
        }
        prepared = fast.prepare("m", insert_statement, MILESTONES, tuple(row), fast.dialect)
        milestone = fast.insert(conn, prepared, values_of(row))
        history = {
            "contract_id": contract,
            "entity": "milestone",
            "entity_id": milestone,
            "event": "create",
            "to_state": "pending",
            "version": 1,
            "actor_role": "client",
            "actor_party": "acme",
            "cause": "request",
            "at": WHEN,
            "payload": {"reason": "ü", "n": [1, 2]},
        }
        prepared = fast.prepare("h", insert_statement, HISTORY, tuple(history), fast.dialect)
        fast.insert(conn, prepared, values_of(history))
        load = fast.prepare(
            "load", lambda: sa.select(MILESTONES).where(MILESTONES.c.id == sa.bindparam("pk"))
        )
        loaded = fast.fetch_one(conn, load, {"pk": milestone})
        stored = conn.execute(sa.select(HISTORY)).mappings().one()
    assert loaded is not None
    assert loaded["escrow"] == 0 and loaded["released_amount"] == 0  # column defaults
    assert loaded["due_date"] == date(2026, 4, 1)
    assert loaded["created_at"] == WHEN and loaded["created_at"].tzinfo is not None
    assert stored["payload"] == {"reason": "ü", "n": [1, 2]}
    assert stored["at"] == WHEN


def test_update_and_missing_row(db: DBEngine) -> None:
    fast = FastPath(db.dialect)
    with transaction(db) as conn:
        contract = _contract(conn, fast)
        update = fast.prepare("u", update_statement, CONTRACTS, ("state", "version"))
        assert (
            fast.execute(
                conn, update, {"pk": contract, **values_of({"state": "active", "version": 2})}
            )
            == 1
        )
        load = fast.prepare(
            "l", lambda: sa.select(CONTRACTS).where(CONTRACTS.c.id == sa.bindparam("pk"))
        )
        assert fast.fetch_one(conn, load, {"pk": contract})["state"] == "active"  # type: ignore[index]
        assert fast.fetch_one(conn, load, {"pk": contract + 1}) is None


def test_driver_errors_become_domain_errors(db: DBEngine) -> None:
    fast = FastPath(db.dialect)
    with pytest.raises(ConflictError) as refused, transaction(db) as conn:
        contract = _contract(conn, fast)
        update = fast.prepare("u", update_statement, CONTRACTS, ("held",))
        fast.execute(conn, update, {"pk": contract, **values_of({"held": -5})})
    assert refused.value.code == "constraint_violated"
    with db.connect() as conn:  # rolled back: nothing of it stayed
        assert conn.execute(sa.select(sa.func.count()).select_from(CONTRACTS)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(DEADLINES)).scalar() == 0

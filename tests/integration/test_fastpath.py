"""The engine's prepared statements convert types, apply defaults and translate errors
exactly as SQLAlchemy Core does, on both backends."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.engine import Engine as DBEngine

import storage.postgresql
from storage.db import transaction
from storage.errors import ConflictError
from storage.fastpath import (
    FastPath,
    Prepared,
    Unnested,
    insert_statement,
    update_statement,
    values_of,
)
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
    prepared = fast.prepare(
        ("c", tuple(values)), insert_statement, CONTRACTS, tuple(values), fast.dialect
    )
    return fast.insert(conn, prepared, values)


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
        prepared = fast.prepare(
            ("m", tuple(row)), insert_statement, MILESTONES, tuple(row), fast.dialect
        )
        milestone = fast.insert(conn, prepared, row)
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
        prepared = fast.prepare(
            ("h", tuple(history)), insert_statement, HISTORY, tuple(history), fast.dialect
        )
        fast.insert(conn, prepared, history)
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
        update = fast.prepare("u-state", update_statement, CONTRACTS, ("state", "version"))
        fast.execute(conn, update, {"pk": contract, **values_of({"state": "active", "version": 2})})
        load = fast.prepare(
            "l", lambda: sa.select(CONTRACTS).where(CONTRACTS.c.id == sa.bindparam("pk"))
        )
        assert fast.fetch_one(conn, load, {"pk": contract})["state"] == "active"  # type: ignore[index]
        assert fast.fetch_one(conn, load, {"pk": contract + 1}) is None


def test_driver_errors_become_domain_errors(db: DBEngine) -> None:
    fast = FastPath(db.dialect)
    with pytest.raises(ConflictError) as refused, transaction(db) as conn:
        contract = _contract(conn, fast)
        update = fast.prepare("u-held", update_statement, CONTRACTS, ("held",))
        fast.execute(conn, update, {"pk": contract, **values_of({"held": -5})})
    assert refused.value.code == "constraint_violated"
    with db.connect() as conn:  # rolled back: nothing of it stayed
        assert conn.execute(sa.select(sa.func.count()).select_from(CONTRACTS)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(DEADLINES)).scalar() == 0


def _history_row(contract: int, n: int, payload: dict[str, object] | None) -> dict[str, object]:
    return {
        "contract_id": contract,
        "entity": "contract",
        "entity_id": contract,
        "event": f"e{n}",
        "from_state": None if n % 2 else "offer",
        "to_state": "offer",
        "version": n,
        "actor_role": "client",
        "actor_party": 'ac"me\\ {x}',
        "cause": "request",
        "at": WHEN,
        "payload": payload,
    }


def test_many_rows_insert_in_their_order_with_nulls_text_and_json(db: DBEngine) -> None:
    # On PostgreSQL they go as one statement over arrays (Unnested), on SQLite the driver
    # loops: the rows stored must be the same, ids following the rows' order.
    fast = FastPath(db.dialect)
    payloads: list[dict[str, object] | None] = [{"reason": "ü", "n": [1, 2]}, {}, {"q": 'a"b'}]
    with transaction(db) as conn:
        contract = _contract(conn, fast)
        rows = [_history_row(contract, n, payloads[n % 3]) for n in range(1, 301)]
        prepared = fast.prepare(
            "many", insert_statement, HISTORY, tuple(rows[0]), fast.dialect, False
        )
        fast.execute_many(conn, prepared, rows, by_column=True)
        stored = conn.execute(sa.select(HISTORY).order_by(HISTORY.c.id)).mappings().all()
    assert [s["event"] for s in stored] == [r["event"] for r in rows]
    assert [s["from_state"] for s in stored] == [r["from_state"] for r in rows]
    assert [s["payload"] for s in stored] == [r["payload"] for r in rows]
    assert {s["actor_party"] for s in stored} == {'ac"me\\ {x}'}
    assert {s["at"] for s in stored} == {WHEN}


def test_many_rows_update_each_their_row_and_twice_the_same_row_in_order(db: DBEngine) -> None:
    fast = FastPath(db.dialect)
    with transaction(db) as conn:
        ids = [_contract(conn, fast) for _ in range(5)]
        update = fast.prepare("uv", update_statement, CONTRACTS, ("version", "title"))
        changes = [{"pk": pk, **values_of({"version": 10 * pk, "title": f"t{pk}"})} for pk in ids]
        fast.execute_many(conn, update, changes)
        after_each = conn.execute(sa.select(CONTRACTS.c.id, CONTRACTS.c.version, CONTRACTS.c.title))
        assert {row.id: (row.version, row.title) for row in after_each} == {
            pk: (10 * pk, f"t{pk}") for pk in ids
        }
        # The same row twice in one call: both applied, in order (the last one stays).
        for versions in ((1, 2), (4, 3)):
            twice = [{"pk": ids[0], **values_of({"version": v, "title": "x"})} for v in versions]
            fast.execute_many(conn, update, twice)
            final = conn.execute(sa.select(CONTRACTS.c.version).where(CONTRACTS.c.id == ids[0]))
            assert final.scalar() == versions[-1]


def test_columns_the_same_in_every_row_go_once_and_store_as_the_rows_say(
    db: DBEngine,
) -> None:
    # A batch's columns mostly hold one value for every row (its `now`, a status, a
    # NULL): on PostgreSQL they travel once as scalars; what is stored must not change,
    # whichever columns are the same, all of them included.
    fast = FastPath(db.dialect)
    with transaction(db) as conn:
        contract = _contract(conn, fast)
        same = [_history_row(contract, 7, None) for _ in range(4)]  # every column alike
        mixed = [_history_row(contract, n, {"n": n} if n % 2 else None) for n in range(8)]
        insert = fast.prepare(
            "alike", insert_statement, HISTORY, tuple(same[0]), fast.dialect, False
        )
        fast.execute_many(conn, insert, same, by_column=True)
        fast.execute_many(conn, insert, mixed, by_column=True)
        stored = conn.execute(sa.select(HISTORY).order_by(HISTORY.c.id)).mappings().all()
        assert [(r["version"], r["payload"], r["at"]) for r in stored] == [
            (row["version"], row["payload"], row["at"]) for row in [*same, *mixed]
        ]
        ids = [_contract(conn, fast) for _ in range(4)]
        update = fast.prepare("ut", update_statement, CONTRACTS, ("version", "active_milestone_id"))
        alike = [{"pk": pk, **values_of({"version": 9, "active_milestone_id": None})} for pk in ids]
        fast.execute_many(conn, update, alike)  # every changed column the same
        fast.execute_many(  # one column the same, one not
            conn,
            update,
            [{"pk": pk, **values_of({"version": pk, "active_milestone_id": None})} for pk in ids],
        )
        after = conn.execute(
            sa.select(CONTRACTS.c.id, CONTRACTS.c.version, CONTRACTS.c.active_milestone_id)
        )
        assert {r.id: (r.version, r.active_milestone_id) for r in after if r.id in ids} == {
            pk: (pk, None) for pk in ids
        }
    if db.dialect.name == "postgresql":  # the scalars first, in the text's order
        unnested = Unnested.of(update, db.dialect)
        assert unnested is not None
        rows = [
            update.row_parameters({"version": 7, "active_milestone_id": v, "pk": v}) for v in (1, 2)
        ]
        text, values = unnested.statement(rows)
        assert text.count("%b") == len(values) == 3 and values[0] == 7, (text, values)


def test_an_update_touching_a_row_twice_does_not_go_as_one_statement() -> None:
    # UPDATE ... FROM unnest(...) applies one of two changes to the same row (which one,
    # the plan decides): such rows go one statement each, in order.
    dialect = psycopg_dialect()
    prepared = Prepared(update_statement(CONTRACTS, ("version",)), dialect)
    unnested = Unnested.of(prepared, dialect)
    assert unnested is not None
    assert unnested.takes([{"pk": 1, "v_version": 2}, {"pk": 2, "v_version": 2}])
    assert not unnested.takes([{"pk": 1, "v_version": 2}, {"pk": 1, "v_version": 3}])
    # Inserts that need each row's id back go one by one.
    returning = Prepared(insert_statement(CONTRACTS, ("title",), dialect), dialect)
    assert Unnested.of(returning, dialect) is None


@pytest.mark.parametrize("dialect", [psycopg_dialect(), sa.dialects.sqlite.dialect()])
def test_a_row_by_column_name_gives_the_parameters_its_renamed_copy_gives(
    dialect: sa.Dialect,
) -> None:
    # The hot path reads a row by column name; the renamed copy (`values_of`) is the
    # reference, defaults included (a column left out takes its Python-side default).
    update = Prepared(update_statement(CONTRACTS, ("version", "title")), dialect)
    change = {"version": 3, "title": "ü", "pk": 7}
    assert update.row_parameters(change) == update.parameters(values_of(change))
    columns = ("contract_id", "entity", "entity_id", "event", "at", "payload")
    insert = Prepared(insert_statement(HISTORY, columns, dialect, False), dialect)
    row = {"contract_id": 1, "entity": "milestone", "entity_id": 2, "event": "submit",
           "at": WHEN, "payload": {"a": [1]}}  # fmt: skip
    assert _seen(insert.row_parameters(row)) == _seen(insert.parameters(values_of(row)))
    assert insert.row_parameters(row) != insert.row_parameters({**row, "entity_id": 3})


def _seen(parameters: object) -> object:
    """Parameters as compared: psycopg's JSON wrapper by what it wraps."""
    if isinstance(parameters, dict):
        return {name: getattr(value, "obj", value) for name, value in parameters.items()}
    return parameters


@pytest.mark.postgresql_only
def test_an_idle_connection_whose_server_side_died_is_replaced_before_use(
    db: DBEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Connections are pinged only after PING_AFTER_IDLE_SECONDS idle (a ping per
    # checkout is a round trip per transition): one idle that long gets a new one.
    with db.connect() as conn:
        dead = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    outside = sa.create_engine(db.url)  # not the pool's: it ends the pooled one's backend
    with outside.connect() as other:
        other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": dead})
    outside.dispose()
    monkeypatch.setattr(storage.postgresql, "PING_AFTER_IDLE_SECONDS", 0.0)
    with db.connect() as conn:
        fresh = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    assert fresh != dead


def test_an_engine_made_again_compiles_no_statement_twice(db: DBEngine) -> None:
    # A CLI command or a test makes its engine anew: the statements compiled by the
    # first engine of this kind in the process are the ones it runs.
    columns = ("state", "title")
    first = FastPath(db.dialect).prepare(
        ("update", "contracts", columns), update_statement, CONTRACTS, columns
    )

    def never() -> sa.ClauseElement:
        raise AssertionError("compiled again")

    again = FastPath(db.dialect).prepare(("update", "contracts", columns), never)
    assert again is first

"""The domain never asks which database it is on: every dialect decision is storage's,
behind one adapter per database (issue 21). A test of `dialect.name`, `is_postgresql`,
`.postgresql` or a comparison with "postgresql"/"sqlite" anywhere but the adapters
(`storage/dialect.py`, `storage/postgresql.py`, `storage/sqlite.py`) fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("storage", "workflows", "scheduler", "escrowflow")
ADAPTERS = {"storage/dialect.py", "storage/postgresql.py", "storage/sqlite.py"}
DIALECTS = {"postgresql", "sqlite"}


def _asks_the_dialect(tree: ast.AST) -> list[int]:
    """The lines of `tree` that test which database they run on."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "postgresql":
            lines.add(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr == "name":
            if isinstance(node.value, ast.Attribute) and node.value.attr == "dialect":
                lines.add(node.lineno)
        elif (isinstance(node, ast.Name) and node.id == "is_postgresql") or (
            isinstance(node, ast.ImportFrom) and any(a.name == "is_postgresql" for a in node.names)
        ):
            lines.add(node.lineno)
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(c, ast.Constant) and c.value in DIALECTS for c in operands):
                lines.add(node.lineno)
    return sorted(lines)


def test_no_dialect_test_outside_the_adapters() -> None:
    found = {
        name: lines
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if (name := str(path.relative_to(ROOT))) not in ADAPTERS
        and (lines := _asks_the_dialect(ast.parse(path.read_text())))
    }
    assert found == {}


def test_every_adapter_fills_the_port() -> None:
    """Each adapter answers every member of `dialect.Adapter`, so no backend falls back
    on another's behaviour by accident."""
    import storage.dialect as dialect

    members = {
        name
        for name in (*dialect.Adapter.__annotations__, *vars(dialect.Adapter))
        if not name.startswith("_")
    }
    for name in ("postgresql", "sqlite"):
        adapter = dialect.adapter_named(name)
        assert adapter is not None and adapter.name == name
        assert {m for m in members if not hasattr(adapter, m)} == set()
    assert dialect.adapter_named("mysql") is None


def test_the_check_finds_a_dialect_test() -> None:
    sample = ast.parse(
        "if conn.dialect.name == 'postgresql': pass\n"
        "x = writes.postgresql\n"
        "from storage.db import is_postgresql\n"
    )
    assert _asks_the_dialect(sample) == [1, 2, 3]
    assert _asks_the_dialect(ast.parse("if kind == 'sqlite': pass\nok = w.one_writer\n")) == [1]


def test_a_cluster_url_names_several_hosts_and_asks_for_the_primary() -> None:
    """libpq's several-host form (issue 26), as operators write it for a primary and its
    standby; the same URL with one host is read as it always was."""
    from storage.dialect import parse_url

    cluster = parse_url(
        "postgresql://app:secret@db-a:5432,db-b:5433/escrow?target_session_attrs=read-write"
    )
    assert cluster.query["host"] == ("db-a:5432", "db-b:5433")
    assert cluster.query["target_session_attrs"] == "read-write"
    assert (cluster.username, cluster.password, cluster.database) == ("app", "secret", "escrow")
    sockets = parse_url("postgresql://postgres@%2Frun%2Fa,%2Frun%2Fb/escrow")
    assert sockets.query["host"] == ("/run/a", "/run/b")
    assert parse_url("postgresql://postgres@%2Frun%2Fa/escrow").query["host"] == "/run/a"
    single = parse_url("postgresql://app@db-a:5432/escrow")
    assert (single.host, single.port, dict(single.query)) == ("db-a", 5432, {})
    assert parse_url("sqlite:///./escrowflow.db").database == "./escrowflow.db"


def test_timestamps_stored_as_text_read_and_write_as_sqlalchemys_own() -> None:
    """SQLite keeps UTC timestamps as text; escrowflow's processors (faster) must write
    exactly SQLAlchemy's text, since deadlines are compared as text, and read it back."""
    from datetime import UTC, datetime, timedelta, timezone

    import sqlalchemy as sa
    from sqlalchemy.dialects import sqlite

    from storage.models.columns import UTCDateTime

    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect)  # as SQLAlchemy asks it, for this dialect
    ours_in, ours_out = ours.bind_processor(dialect), ours.result_processor(dialect, None)
    theirs = sa.DateTime().dialect_impl(dialect)
    their_in = theirs.bind_processor(dialect)
    their_out = theirs.result_processor(dialect, None)
    assert their_in is not None and their_out is not None
    cet = timezone(timedelta(hours=1))
    for moment in (
        datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        datetime(2026, 1, 5, 9, 0, 0, 123, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2027, 3, 1, 0, 30, tzinfo=cet),
    ):
        text = ours_in(moment)
        assert text == their_in(moment.astimezone(UTC).replace(tzinfo=None))
        assert ours_out(text) == moment and ours_out(text).tzinfo is UTC
        assert ours_out(text) == their_out(text).replace(tzinfo=UTC)
    assert ours_in(None) is None and ours_out(None) is None
    assert ours_out("2026-01-05 09:00:00") == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

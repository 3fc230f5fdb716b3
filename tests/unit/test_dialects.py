"""The domain never asks which database it is on: every dialect decision is storage's
(issue 21). A test of `dialect.name`, `is_postgresql`, `.postgresql` or a comparison
with "postgresql"/"sqlite" outside `storage/` fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ABOVE_STORAGE = ("workflows", "scheduler", "escrowflow")
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


def test_no_dialect_test_outside_storage() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for package in ABOVE_STORAGE
        for path in (ROOT / package).rglob("*.py")
        if (lines := _asks_the_dialect(ast.parse(path.read_text())))
    }
    assert found == {}


def test_the_check_finds_a_dialect_test() -> None:
    sample = ast.parse(
        "if conn.dialect.name == 'postgresql': pass\n"
        "x = writes.postgresql\n"
        "from storage.db import is_postgresql\n"
    )
    assert _asks_the_dialect(sample) == [1, 2, 3]
    assert _asks_the_dialect(ast.parse("if kind == 'sqlite': pass\nok = w.one_writer\n")) == [1]

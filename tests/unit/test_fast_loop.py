"""The README's fast loop (`-m "not slow"`) holds every test named after a rule: no such
test is marked slow, by itself or by its module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULE_TEST = re.compile(r"test_(?:ct|ms|cr|fp|rf|es|pa|nt|tm|dl|x)\d+_")


def _is_slow(node: ast.expr) -> bool:
    text = ast.unparse(node)
    return "mark.slow" in text


def _slow_rule_tests(source: str) -> list[str]:
    tree = ast.parse(source)
    module_slow = any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
        and _is_slow(node.value)
        for node in tree.body
    )
    found = []
    tests = [n for n in tree.body if isinstance(n, ast.FunctionDef) and RULE_TEST.match(n.name)]
    for node in tests:
        if module_slow or any(_is_slow(d) for d in node.decorator_list):
            found.append(node.name)
    return found


def test_no_rule_test_is_marked_slow() -> None:
    slow = {
        str(path.relative_to(ROOT)): names
        for path in (ROOT / "tests").rglob("test_*.py")
        if (names := _slow_rule_tests(path.read_text()))
    }
    assert slow == {}


def test_the_check_sees_a_slow_rule_test() -> None:
    marked = "import pytest\n@pytest.mark.slow\ndef test_ms10_x(): pass\ndef test_ms10_y(): pass\n"
    assert _slow_rule_tests(marked) == ["test_ms10_x"]
    whole = "import pytest\npytestmark = [pytest.mark.slow]\ndef test_dl2_z(): pass\n"
    assert _slow_rule_tests(whole) == ["test_dl2_z"]

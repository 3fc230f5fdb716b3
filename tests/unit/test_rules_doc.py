"""docs/rules.md is our account of every rule: each one is tested, and names real code,
real tests and real diagram edges. It goes stale loudly."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from workflows.machines import MACHINES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "rules.md"
RULE = r"(?:CT|MS|CR|FP|RF|ES|PA|NT|TM|DL|X)\d+"
CODE = ("storage", "workflows", "scheduler", "escrowflow")


def _sections() -> dict[str, str]:
    text = DOC.read_text()
    found = re.split(rf"^### ({RULE})\b.*$", text, flags=re.M)
    return dict(zip(found[1::2], found[2::2], strict=True))


def _field(section: str, name: str) -> list[str]:
    line = re.search(rf"^- {name}: (.*)$", section, re.M)
    return re.findall(r"`([^`]+)`", line.group(1)) if line else []


def _definitions(path: Path) -> set[str]:
    """Every function, class and method in a module, by qualified name; and the names a
    class body assigns (a machine's guards are built by `guard(...)`)."""
    names: set[str] = set()

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(prefix + child.name)
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.Assign) and isinstance(node, ast.ClassDef):
                names.update(prefix + t.id for t in child.targets if isinstance(t, ast.Name))

    walk(ast.parse(path.read_text()), "")
    return names


def _test_names() -> set[str]:
    return {
        name.rsplit(".", 1)[-1]
        for path in (ROOT / "tests").rglob("test_*.py")
        for name in _definitions(path)
        if name.rsplit(".", 1)[-1].startswith("test_")
    }


def _cited_in_code() -> set[str]:
    cited: set[str] = set()
    for package in CODE:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                cited.update(re.findall(rf"\b({RULE})\b", path.read_text()))
    return cited


def test_every_rule_of_the_spec_the_readme_and_the_code_is_documented() -> None:
    documented = set(_sections())
    readme = set(re.findall(r"^- \*\*(X\d+)\*\*", (ROOT / "README.md").read_text(), re.M))
    assert readme and readme <= documented, sorted(readme - documented)
    assert _cited_in_code() <= documented, sorted(_cited_in_code() - documented)
    # The domain spec sits beside the repository where it is written (../shared/spec);
    # a clone elsewhere checks the README's and the code's IDs above.
    spec = ROOT.parent / "shared" / "spec" / "rules.md"
    text = spec.read_text() if spec.exists() else ""
    expected = set(re.findall(rf"^- \*\*({RULE})\*\*", text, re.M))
    assert expected <= documented, sorted(expected - documented)


def test_every_documented_rule_has_a_test_named_after_it() -> None:
    tests = _test_names()
    for rule, section in _sections().items():
        named = _field(section, "tested")
        if re.search(r"^- status: not built yet", section, re.M):
            assert not named and not _field(section, "enforced"), rule
            continue
        assert named, f"{rule}: no test listed"
        for test in named:
            assert test in tests, f"{rule}: {test} is not a test in tests/"
            assert rule.lower() in test.split("_"), f"{rule}: {test} is not named after it"


def test_every_documented_place_exists_and_cites_its_rule() -> None:
    for rule, section in _sections().items():
        for place in _field(section, "enforced"):
            module, _, name = place.partition(":")
            path = ROOT / module
            assert path.is_file(), f"{rule}: {module} does not exist"
            if name:
                assert name in _definitions(path), f"{rule}: {place} does not exist"
            assert re.search(rf"\b{rule}\b", path.read_text()), f"{rule}: {module} never cites it"


def test_every_documented_edge_is_drawn_with_its_rule() -> None:
    for rule, section in _sections().items():
        for edge in _field(section, "drawn"):
            entity, _, event = edge.partition(".")
            assert entity in MACHINES, f"{rule}: no lifecycle {entity}"
            assert rule in MACHINES[entity].rules.get(event, ()), (
                f"{rule}: {edge} does not carry it"
            )

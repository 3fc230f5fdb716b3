"""Lifecycle diagrams come from the machines: complete, timed, current, and committed."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from escrowflow import diagrams
from workflows.diagrams import lifecycle, to_dot, to_mermaid
from workflows.machines import MACHINES
from workflows.policy import Policy

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "diagrams"


def test_the_committed_diagrams_are_the_ones_the_machines_draw_now() -> None:
    """Regenerate and compare: a stale file fails (run `escrowflow diagrams`)."""
    policy = Policy()
    for entity in MACHINES:
        lc = lifecycle(entity, policy)
        stale = "is stale: run `escrowflow diagrams`"
        assert (COMMITTED / f"{entity}.mmd").read_text() == to_mermaid(lc), f"{entity}.mmd {stale}"
        dot = to_dot(lc)
        assert (COMMITTED / f"{entity}.dot").read_text() == dot, f"{entity}.dot {stale}"
        svg = (COMMITTED / f"{entity}.svg").read_text()
        assert diagrams.drawn_from(svg) == hashlib.sha256(dot.encode()).hexdigest(), (
            f"{entity}.svg {stale}"
        )


def test_the_readme_shows_the_current_milestone_change_request_and_refund_diagrams() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```mermaid\n(.*?)```", readme, flags=re.S)
    for entity in ("milestone", "change_request", "refund"):
        assert to_mermaid(lifecycle(entity, Policy())) in blocks, entity
        assert f"diagrams/{entity}.svg" in readme


@pytest.mark.parametrize("entity", list(MACHINES))
def test_every_state_and_event_of_the_machine_is_in_its_mermaid(entity: str) -> None:
    machine = MACHINES[entity]
    text = to_mermaid(lifecycle(entity, Policy()))
    edges = [
        (source, target, _event_of(label))
        for source, target, label in re.findall(r"^\s+(\w+) --> (\w+) : (.+)$", text, flags=re.M)
    ]
    assert {s.id for s in machine.states} == {s for e in edges for s in e[:2]}
    assert set(machine.permissions) == {e[2] for e in edges}
    declared = {
        (state.id, t.target.id, str(event))
        for state in machine.states
        for t in state.transitions
        for event in t.events
    }
    assert set(edges) == declared
    initial = machine.initial_state.id
    assert f"[*] --> {initial}" in text
    for state in machine.states:
        assert (f"{state.id} --> [*]" in text) == state.final


def _event_of(label: str) -> str:
    """`fund (client) · if ...` -> fund; `⏱ after 7 days · expire (timer)` -> expire."""
    timer = re.search(r"· (\w+) \(timer\)", label)
    return timer.group(1) if timer else label.split(" ", 1)[0]


def test_timer_transitions_carry_their_duration_from_the_settings() -> None:
    default = Policy()
    assert "in_review --> released : ⏱ after 14 days · auto_approve (timer)" in to_mermaid(
        lifecycle("milestone", default)
    )
    assert "⏱ after 7 days · expire (timer)" in to_mermaid(lifecycle("change_request", default))
    assert "⏱ after 7 days · refund_by_default (timer)" in to_mermaid(lifecycle("refund", default))
    faster = Policy(
        durations={**default.durations, "review_window": timedelta(hours=36)},
    )
    dot = to_dot(lifecycle("milestone", faster))
    (timer_edge,) = [line for line in dot.splitlines() if "auto_approve" in line]
    assert "after 36 hours" in timer_edge and "style=dashed" in timer_edge
    party_edges = [line for line in dot.splitlines() if "release (client)" in line]
    assert party_edges and all("dashed" not in line for line in party_edges)


@pytest.mark.slow  # a CLI process (start-up alone is 1.5 s)
def test_svg_without_graphviz_fails_in_one_line_naming_the_package(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir)}  # no `dot` on it
    out = tmp_path / "drawn"
    done = subprocess.run(
        [sys.executable, "-m", "escrowflow", "diagrams", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 8
    assert done.stderr.count("\n") == 1 and "graphviz" in done.stderr
    assert "apt-get install graphviz" in done.stderr
    assert sorted(p.suffix for p in out.iterdir()) == [".dot"] * 5 + [".mmd"] * 5
    text_only = subprocess.run(
        [sys.executable, "-m", "escrowflow", "diagrams", "--out", str(out), "--format", "mermaid"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert text_only.returncode == 0, text_only.stderr


def test_every_edge_names_the_rules_it_enforces() -> None:
    """Rule IDs are drawn: `grep MS10` finds the timer's edge as well as its code and tests."""
    default = Policy()
    review = to_mermaid(lifecycle("milestone", default))
    timer = r"in_review --> released : .*auto_approve \(timer\) · reminds client 3 days, 1 day "
    assert re.search(timer + r"before · MS10 NT2 TM1$", review, re.M)  # NT2: its reminders
    assert re.search(r"active --> active : .*open_change_request \(client\).* · CR1$", review, re.M)
    expire = to_mermaid(lifecycle("change_request", default))
    expired = r"expire \(timer\) · reminds freelancer 1 day before · CR6 NT2 TM1$"
    assert re.search(expired, expire, re.M)
    for entity in MACHINES:
        for edge in lifecycle(entity, default).edges:
            assert edge.rules, (entity, edge.event)
            assert all(re.fullmatch(r"(CT|MS|CR|FP|RF|ES|PA|NT|TM|X)\d+", r) for r in edge.rules)


def test_tm1_timer_edges_carry_the_name_of_their_terms() -> None:
    drawn = to_mermaid(lifecycle("milestone", Policy(), terms="standard-2026"))
    assert re.search(r"after 14 days \(terms standard-2026\)", drawn)
    assert "(terms" not in to_mermaid(lifecycle("milestone", Policy()))

"""A live entity's diagram: its current state highlighted, its pending deadline dated."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from escrowflow import diagrams
from tests.helpers import Scenario
from tests.live import Api
from workflows.diagrams import CURRENT_FILL


def _node(svg: str, state: str) -> str:
    start = svg.index(f"<title>{state}</title>")
    return svg[start : svg.index("</g>", start)]


def test_a_milestone_under_review_is_drawn_highlighted_with_its_auto_approval_date(
    sc: Scenario, api: Api
) -> None:
    _, milestone = sc.in_review(50_000)
    svg = diagrams.instance(sc.db, sc.engine.terms, "milestone", milestone, "svg")
    assert CURRENT_FILL in _node(svg, "in_review")
    assert svg.count(CURRENT_FILL) == 1  # no other state is
    # Graphviz writes "-" as "&#45;". Funded and submitted on 2026-01-05 09:00: day 14.
    assert "due 2026&#45;01&#45;19 09:00 UTC" in svg
    mermaid = diagrams.instance(sc.db, sc.engine.terms, "milestone", milestone, "mermaid")
    assert "class in_review current" in mermaid
    assert "auto_approve (timer) · due 2026-01-19 09 00 UTC" in mermaid

    answer = api.request("GET", f"/v1/milestones/{milestone}/diagram.svg", token=api.token("read"))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("image/svg+xml")
    assert CURRENT_FILL in _node(answer.text, "in_review")

    sc.fire("milestone", milestone, "request_changes")
    again = diagrams.instance(sc.db, sc.engine.terms, "milestone", milestone, "svg")
    assert CURRENT_FILL in _node(again, "active") and "due 2026" not in again


@pytest.mark.slow  # a CLI process (start-up alone is 1.5 s)
def test_show_draws_the_diagram_to_a_file(sc: Scenario, tmp_path: Path) -> None:
    _, milestone = sc.in_review(50_000)
    env = {**os.environ, "ESCROWFLOW_DATABASE_URL": sc.db.url.render_as_string(hide_password=False)}

    def show(target: Path) -> subprocess.CompletedProcess[str]:
        command = ["show", "milestone", str(milestone), "--diagram", str(target)]
        return subprocess.run(
            [sys.executable, "-m", "escrowflow", *command], env=env, capture_output=True, text=True
        )

    drawn = show(tmp_path / "m.dot")
    assert drawn.returncode == 0, drawn.stderr
    assert f'fillcolor="{CURRENT_FILL}"' in (tmp_path / "m.dot").read_text()
    wrong = show(tmp_path / "m.png")
    assert wrong.returncode == 2
    assert wrong.stderr.strip().endswith(
        "name a .svg, .mmd (Mermaid) or .dot file [unknown_format]"
    )


def test_tm1_timer_edges_name_their_terms(sc: Scenario) -> None:
    """A contract's diagram is timed by its own terms and names them on each timer edge,
    also after the settings changed."""
    old_contract, (old,) = sc.active_contract(50_000)
    old_terms = sc.engine.terms.current()
    sc.new_terms(durations={**sc.engine.policy.durations, "review_window": timedelta(days=10)})
    new_terms = sc.engine.terms.current()
    _new_contract, (new,) = sc.active_contract(50_000)
    old_drawn = diagrams.instance(sc.db, sc.engine.terms, "milestone", old, "mermaid")
    new_drawn = diagrams.instance(sc.db, sc.engine.terms, "milestone", new, "mermaid")
    assert f"after 14 days (terms {old_terms.name})" in old_drawn
    assert f"after 10 days (terms {new_terms.name})" in new_drawn
    assert "after 10 days" not in old_drawn
    assert old_contract != _new_contract

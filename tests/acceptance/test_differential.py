"""The engine against the independent reference model (tests/model/), on each backend.

Every step of every lifecycle must agree on states, money figures and refusals, and
together the lifecycles must take every edge the machines declare (`python -m
tests.edges` prints the counts). `ESCROWFLOW_DIFFERENTIAL_LIFECYCLES` sets how many
(1,000 under CI).
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy.engine import Engine as DBEngine

from tests.model.differential import declared_edges, run_lifecycles

LIFECYCLES = int(
    os.environ.get("ESCROWFLOW_DIFFERENTIAL_LIFECYCLES", "1000" if os.environ.get("CI") else "300")
)

pytestmark = pytest.mark.slow


def test_the_engine_agrees_with_the_reference_model_and_takes_every_edge(
    db: DBEngine,
) -> None:
    """Every money rule at once: who is owed what after every step, not only that money
    adds up. Not named after one rule: the slow set runs it (the rules' own tests are in
    the fast loop)."""
    edges = run_lifecycles(db, LIFECYCLES)
    missing = [edge for edge in declared_edges() if not edges[edge]]
    assert not missing, f"edges no lifecycle took (steer tests/model/differential.py): {missing}"
    print(
        f"\n{LIFECYCLES} lifecycles; edges covered: {len(declared_edges())}/{len(declared_edges())}"
    )

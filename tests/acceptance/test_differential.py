"""The engine against the independent reference model (tests/model/), on each backend.

Every step of every lifecycle must agree on states, money figures and refusals, and
together the lifecycles must take every edge the machines declare (`python -m
tests.edges` prints the counts). `ESCROWFLOW_DIFFERENTIAL_LIFECYCLES` sets how many
a run (under CI 1,000 on PostgreSQL in two runs, and 300 on SQLite).
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy.engine import Engine as DBEngine

from tests.model.differential import MIGRATIONS, PAUSES, declared_edges, run_lifecycles

# Under CI 1,000 lifecycles on PostgreSQL (where concurrency and the pipelined path make
# it the stronger check) in two runs of 500 that CI's two workers make side by side, and
# 300 on SQLite; otherwise two of 300 and 300. Each run on its own takes every edge.
_GIVEN = os.environ.get("ESCROWFLOW_DIFFERENTIAL_LIFECYCLES")  # lifecycles a run
LIFECYCLES = {
    "postgresql": int(_GIVEN or ("500" if os.environ.get("CI") else "300")),
    "sqlite": int(_GIVEN or "300"),
}

pytestmark = [pytest.mark.slow, pytest.mark.heavy]


def _agrees(db: DBEngine, count: int) -> None:
    MIGRATIONS.clear()
    PAUSES.clear()
    edges = run_lifecycles(db, count)
    missing = [edge for edge in declared_edges() if not edges[edge]]
    assert not missing, f"edges no lifecycle took (steer tests/model/differential.py): {missing}"
    print(f"\n{count} lifecycles; edges covered: {len(declared_edges())}/{len(declared_edges())}")
    # TM1, TM2: restarts with other terms and migrations are among the random actions.
    print(f"terms migrations: {dict(MIGRATIONS)}")
    assert MIGRATIONS["timers moved"] > 0, "no migration moved a timer: steer the run"
    print(f"pauses and resumes (DL1): {dict(PAUSES)}")
    assert PAUSES["resume"] > 0, "no paused timer was resumed: steer the run"


def test_the_engine_agrees_with_the_reference_model_and_takes_every_edge(
    db: DBEngine, backend: str
) -> None:
    """Every money rule at once: who is owed what after every step, not only that money
    adds up. Not named after one rule: the slow set runs it (the rules' own tests are in
    the fast loop)."""
    _agrees(db, LIFECYCLES[backend])


@pytest.mark.postgresql_only
def test_a_second_run_on_postgresql_agrees_and_takes_every_edge(db: DBEngine) -> None:
    """PostgreSQL's other half: other random lifecycles (no fixed seed), on a worker of
    its own under CI (the `heavy` marker)."""
    _agrees(db, LIFECYCLES["postgresql"])

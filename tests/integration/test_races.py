"""Races: concurrent parties and timers on one milestone; exactly one wins each round."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from functools import partial

import pytest

from storage.errors import ConflictError, TransitionRejected
from tests.helpers import CLIENT, Scenario, check_invariants, race
from workflows.sweeper import fire_due

ROUNDS = 25


def test_es3_release_vs_auto_approval_vs_request_changes(sc: Scenario, backend: str) -> None:
    """Each round: a client release, a due auto-approval and a change request at once."""
    wins: Counter[str] = Counter()
    for _ in range(ROUNDS):
        contract, m = sc.in_review(10_000)
        version = sc.row("milestone", m)["version"]
        sc.clock.advance(timedelta(days=14))
        release, timer, changes = race(
            partial(sc.fire, "milestone", m, "release", CLIENT, expected_version=version),
            partial(fire_due, sc.engine),
            partial(sc.fire, "milestone", m, "request_changes", CLIENT, expected_version=version),
        )
        effects = [
            isinstance(release, dict),
            getattr(timer, "fired", 0) == 1,
            isinstance(changes, dict),
        ]
        assert sum(effects) == 1, (release, timer, changes)
        wins[["release", "timer", "changes"][effects.index(True)]] += 1
        for loser in (release, changes):
            if not isinstance(loser, dict):
                assert isinstance(loser, ConflictError | TransitionRejected), loser
                assert loser.code in ("version_conflict", "event_not_allowed_in_state")
        releases = [e for e in sc.ledger(contract) if e[0] == "release"]
        assert len(releases) == (0 if effects[2] else 1)
    check_invariants(sc.db)
    assert sum(wins.values()) == ROUNDS


@pytest.mark.parametrize("workers", [4])
def test_es3_many_concurrent_releases_pay_once(sc: Scenario, workers: int) -> None:
    for _ in range(10):
        contract, m = sc.in_review(10_000)
        outcomes = race(*[partial(sc.fire, "milestone", m, "release", CLIENT)] * workers)
        assert sum(isinstance(o, dict) for o in outcomes) == 1, outcomes
        assert [e for e in sc.ledger(contract) if e[0] == "release"] == [("release", 10_000)]
    check_invariants(sc.db)

"""A page read in one snapshot shows one moment: a release committed while the page is
being read is either all on it or not at all (the console's contract page)."""

from __future__ import annotations

from sqlalchemy.engine import Engine as DBEngine

from storage import entities
from storage.db import snapshot
from tests.helpers import CLIENT, Scenario


def test_a_snapshot_keeps_seeing_the_moment_it_began_while_another_connection_commits(
    sc: Scenario, db: DBEngine
) -> None:
    contract, m = sc.in_review(50_000)
    with snapshot(db) as conn:
        before = entities.read(conn, "contract", contract)
        assert before is not None and before["held"] == 50_000
        sc.fire("milestone", m, "release", CLIENT, {"amount": 50_000})  # its own connection
        milestone = entities.read(conn, "milestone", m)
        again = entities.read(conn, "contract", contract)
    assert milestone is not None and milestone["state"] == "in_review"
    assert again is not None and again["held"] == 50_000
    with snapshot(db) as conn:
        after = entities.read(conn, "contract", contract)
        milestone = entities.read(conn, "milestone", m)
    assert after is not None and after["held"] == 0
    assert milestone is not None and milestone["state"] == "released"

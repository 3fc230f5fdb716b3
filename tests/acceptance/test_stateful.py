"""Random parties, random clock moves, random deadline firing: the invariants always hold.

After every step that changed something: ES1-ES3 (ledger sums equal the contract totals,
held never negative, every held cent belongs to a milestone, the credit or an open
refund), each entity's history replays to its current state and version, and no deadline
is pending for a state that has been left. After a refused step: nothing was written
(every table's row count and every entity's version as they were), in one statement.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, rule
from sqlalchemy.engine import Engine as DBEngine

from storage import models
from storage.errors import EscrowflowError
from tests.helpers import (
    ADMIN,
    CLIENT,
    FREELANCER,
    STRANGER,
    Scenario,
    check_invariants,
    reset,
)
from workflows.actors import Actor
from workflows.clock import ManualClock
from workflows.engine import EscrowEngine
from workflows.machines import MilestoneMachine
from workflows.policy import Policy
from workflows.sweeper import fire_due

EXAMPLES = int(
    os.environ.get("ESCROWFLOW_STATEFUL_EXAMPLES", "150" if os.environ.get("CI") else "40")
)

amounts = st.integers(min_value=500, max_value=30_000)


def test_random_lifecycles_keep_every_invariant(db: DBEngine) -> None:
    class Lifecycles(RuleBasedStateMachine):
        milestones = Bundle("milestones")

        def __init__(self) -> None:
            super().__init__()
            reset(db)
            self.clock = ManualClock()
            self.sc = Scenario(EscrowEngine(db, Policy(reminders={}), self.clock), self.clock)
            self.checked: tuple[int, ...] | None = None  # the fingerprint last checked

        def _try(
            self,
            entity: str,
            entity_id: int | None,
            event: str,
            actor: object,
            payload: dict[str, object] | None = None,
        ) -> None:
            if entity_id is None:
                return
            try:
                self.sc.fire(entity, entity_id, event, actor, payload)  # type: ignore[arg-type]
            except EscrowflowError as refused:  # fine, as long as it wrote nothing
                if self.checked is not None:
                    assert _fingerprint(db) == self.checked, f"refused {event} wrote: {refused}"

        @rule(target=milestones, amounts=st.lists(amounts, min_size=1, max_size=3))
        def offer(self, amounts: list[int]) -> object:
            _contract, milestones = self.sc.offer(*amounts)
            return multiple(*milestones)

        milestone_move = rule(
            milestone=milestones,
            pick=st.integers(0, 99),
            amount=amounts,
            partial=st.none() | st.integers(1, 40_000),
        )

        def _act_on_milestone(
            self, milestone: int, pick: int, amount: int, partial: int | None
        ) -> None:
            """A move that the milestone's state allows, so that lifecycles progress."""
            row = self.sc.row("milestone", milestone)
            contract = self.sc.row("contract", row["contract_id"])
            if contract["state"] == "offer" and pick % 3:
                self._try("contract", contract["id"], "accept", FREELANCER)
                return
            release = {} if partial is None else {"amount": partial}
            moves = {
                "pending": [("fund", CLIENT, {})] * 6
                + [("edit", CLIENT, {"amount": amount}), ("delete", CLIENT, {})],
                "active": [
                    ("submit", FREELANCER, {}),
                    ("submit", FREELANCER, {}),
                    ("release", CLIENT, release),
                    ("deposit", CLIENT, {}),
                    ("open_change_request", CLIENT, {"amount": amount}),
                ],
                "in_review": [("request_changes", CLIENT, {}), ("release", CLIENT, release)],
            }.get(row["state"], [])
            request = row["open_change_request_id"]
            if request is not None:
                answer = ["accept", "reject", "withdraw", "edit"][pick % 4]
                by = CLIENT if answer in ("withdraw", "edit") else FREELANCER
                payload = {"amount": amount} if answer == "edit" else {}
                moves.append(("change_request", by, {"id": request, "event": answer, **payload}))
            if not moves:
                return
            event, actor, payload = moves[pick % len(moves)]
            if event == "change_request":
                request_id, answer = payload.pop("id"), payload.pop("event")
                self._try("change_request", request_id, answer, actor, payload)
            else:
                self._try("milestone", milestone, event, actor, payload)

        # The same move three times over: the random walk then mostly makes progress.
        act_on_milestone = milestone_move(_act_on_milestone)
        act_on_milestone_again = milestone_move(_act_on_milestone)
        act_on_milestone_once_more = milestone_move(_act_on_milestone)

        @rule(milestone=milestones, pick=st.integers(0, 99))
        def act_on_contract(self, milestone: int, pick: int) -> None:
            contract = int(self.sc.row("milestone", milestone)["contract_id"])
            row = self.sc.row("contract", contract)
            refund = row["open_refund_id"]
            if refund is not None:
                state = self.sc.row("refund", refund)["state"]
                if state == "disputed":
                    amount = self.sc.row("refund", refund)["amount"]
                    to_client = amount * pick // 99
                    self._try(
                        "refund",
                        refund,
                        "resolve",
                        ADMIN,
                        {"to_client": to_client, "to_freelancer": amount - to_client},
                    )
                else:
                    answer = ["approve", "dispute", "cancel"][pick % 3]
                    self._try(
                        "refund", refund, answer, CLIENT if answer == "cancel" else FREELANCER
                    )
                return
            moves = {
                "offer": [("accept", FREELANCER)] * 4
                + [("withdraw", CLIENT), ("decline", FREELANCER)],
                "active": [("request_refund", CLIENT)] * 6 + [("end", CLIENT), ("end", FREELANCER)],
                "ended": [("request_refund", CLIENT)],
            }.get(row["state"], [])
            if moves:
                event, actor = moves[pick % len(moves)]
                self._try("contract", contract, event, actor)

        @rule(
            milestone=milestones,
            event=st.sampled_from(sorted(MilestoneMachine.permissions)),
            actor=st.sampled_from([CLIENT, FREELANCER, ADMIN, STRANGER]),
        )
        def anything_by_anyone(self, milestone: int, event: str, actor: Actor) -> None:
            """Whatever is refused must leave everything as it was (checked by invariants)."""
            self._try("milestone", milestone, event, actor)

        @rule(hours=st.integers(0, 24 * 20))
        def time_passes(self, hours: int) -> None:
            self.clock.advance(timedelta(hours=hours))
            report = fire_due(self.sc.engine)
            assert report.failed == 0, report.errors

        @invariant()
        def ledger_history_and_deadlines_agree(self) -> None:
            now = _fingerprint(db)
            if now != self.checked:  # something changed since the last check
                check_invariants(db)
                self.checked = now

    Lifecycles.TestCase.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    Lifecycles.TestCase().runTest()


def _fingerprint(db: DBEngine) -> tuple[int, ...]:
    """Every table's row count and the sum of every entity's versions, in one statement:
    a step that writes anything changes it (a write adds a history row, or bumps a
    version, or adds a ledger row, a deadline or an event)."""
    with db.connect() as conn:
        return tuple(int(v) for v in conn.execute(_FINGERPRINT).one())


_FINGERPRINT = sa.select(
    *(
        sa.select(sa.func.count()).select_from(t).scalar_subquery()
        for t in (models.HISTORY, models.LEDGER, models.DEADLINES, *models.TABLES.values())
    ),
    *(
        sa.select(sa.func.coalesce(sa.func.sum(t.c.version), 0)).scalar_subquery()
        for t in models.TABLES.values()
    ),
)


pytestmark = pytest.mark.slow

"""Moving running contracts to other terms (TM2): a plan first, then its apply.

A plan selects contracts (by their terms, client, freelancer, ids, states), and computes
for each pending deadline its due date under the target terms: the time it had already
run is kept, the length changes by the difference of the two durations (X14: a shortened
deadline falls due no sooner than `SHORTENING_NOTICE` after the plan is made, and never
later than before). It prices the move: the money each deadline releases or refunds,
taken off its old day and put on its new one, per currency. The plan is stored; nothing
else changes.

Applying a plan, by its id, with a reason, first computes it again for the contracts not
yet moved: if anything differs (a contract joined or left the selection, a deadline came,
went or moved), it is refused with the difference, so what is applied is exactly what
was reviewed. Then each contract moves in a transaction of its own: its terms, its
deadlines' due dates, its reminders rescheduled by the new terms (X15), a history row and
an event to both parties; the plan marks it applied in that same transaction, so an
interrupted apply resumes where it stopped and a second apply changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as DBEngine

from storage import deadlines, entities, terms_plans
from storage.errors import ConflictError, NotFound
from workflows import deadline_admin, reminders, selections
from workflows.lifecycle import Timer
from workflows.machines import MACHINES, timer_of
from workflows.policy import format_money
from workflows.terms import Terms, TermsBook
from workflows.unit_of_work import UnitOfWork

SHORTENING_NOTICE = timedelta(hours=24)
"""X14: a deadline a migration shortens falls due no sooner than this after the plan."""
PLAN_LIFETIME = timedelta(hours=1)
"""A plan not applied within this time is refused: make a new one (what it previewed
is an hour old at most when it is applied)."""
APPLY_THREADS = 4
"""Contracts moved at once by an apply, each in a transaction of its own (each locks its
own contract, so they never wait for each other where rows are locked one by one)."""
SHOWN_DIFFERENCES = 20
"""How many differences a refused apply lists (their counts are whole)."""

CRITERIA = ("terms_id", "client_id", "freelancer_id", "ids", "states")


def running_states() -> list[str]:
    """Contract states in which terms still decide something (not final)."""
    return [state.id for state in MACHINES["contract"].states if not state.final]


def check_selection(selection: Mapping[str, Any]) -> dict[str, Any]:
    """The selection as stored, or a `ValidationError` naming the field to fix."""
    selections.refuse_unknown(selection, CRITERIA)
    found: dict[str, Any] = {}
    if selection.get("terms_id") is not None:
        found["terms_id"] = selections.positive(selection["terms_id"], "terms_id")
    found.update(selections.parties_and_ids(selection))
    if selection.get("states") is not None:
        states, running = selection["states"], running_states()
        if not isinstance(states, list) or not states or any(s not in running for s in states):
            raise selections.field_error(
                "states", f"states is a list of running contract states: {', '.join(running)}"
            )
        found["states"] = sorted(set(states))
    return found


def _timer_of_event(entity: str, event: str) -> Timer | None:
    """The timer of the entity's machine that fires `event`."""
    machine = MACHINES[entity]
    for state in machine.states:
        timer = timer_of(machine, state.id)
        if timer is not None and timer.event == event:
            return timer
    return None


def moved_due(due: datetime, before: timedelta, after: timedelta, planned_at: datetime) -> datetime:
    """A deadline's due date when its length goes from `before` to `after` (X14)."""
    moved = due + (after - before)
    if after >= before:
        return moved
    return min(due, max(moved, planned_at + SHORTENING_NOTICE))


class Computed:
    """What a plan moves, as computed now: its contracts, its deadlines, the money."""

    def __init__(self) -> None:
        self.contracts: list[dict[str, Any]] = []
        self.deadlines: list[dict[str, Any]] = []

    def forecast(self) -> list[dict[str, Any]]:
        """Money moved per UTC day and currency (minor units; nothing where it nets 0)."""
        change: dict[tuple[str, str], int] = defaultdict(int)
        for d in self.deadlines:
            if d["amount"] and d["currency"]:
                change[(d["due_before"].date().isoformat(), d["currency"])] -= d["amount"]
                change[(d["due_after"].date().isoformat(), d["currency"])] += d["amount"]
        return [
            {"day": day, "currency": currency, "change": amount}
            for (day, currency), amount in sorted(change.items())
            if amount
        ]

    def due_at_once(self, now: datetime) -> int:
        return sum(1 for d in self.deadlines if d["due_after"] <= now)


def compute(
    conn: Connection,
    book: TermsBook,
    target: Terms,
    selection: Mapping[str, Any],
    planned_at: datetime,
    only: set[int] | None = None,
) -> Computed:
    """The plan of `selection` onto `target`, as of now (`only`: of these contracts)."""
    states = selection.get("states") or running_states()
    chosen = entities.selected(conn, dict(selection), states, target.id)
    computed = Computed()
    if only is not None:
        chosen = [c for c in chosen if c["id"] in only]
    computed.contracts = [{"contract_id": c["id"], "from_terms_id": c["terms_id"]} for c in chosen]
    terms_of = {c["id"]: c["terms_id"] for c in chosen}
    for d in deadlines.pending_of_contracts(conn, [c["id"] for c in chosen]):
        if reminders.parse(d["event"]) is not None:
            continue  # rescheduled from their deadline's new due date when applied
        timer = _timer_of_event(d["entity"], d["event"])
        if timer is None:
            continue
        source = book.get(conn, terms_of[d["contract_id"]]).policy
        # DL1: a paused deadline runs again from its resume with the time it had left:
        # that time changes as a running one's would if it were resumed now.
        left = d["paused_left_ms"] if d["paused"] else None
        base = planned_at + timedelta(milliseconds=left) if left is not None else d["due_at"]
        moved = moved_due(
            base, source.duration(timer.policy), target.policy.duration(timer.policy), planned_at
        )
        due = d["due_at"] + (moved - base)
        if due != d["due_at"]:
            computed.deadlines.append(
                {
                    "deadline_id": d["id"],
                    "contract_id": d["contract_id"],
                    "entity": d["entity"],
                    "entity_id": d["entity_id"],
                    "event": d["event"],
                    "due_before": d["due_at"],
                    "due_after": due,
                    "amount": d["amount"],
                    "currency": d["currency"],
                }
            )
    return computed


def differences(planned: Computed, now: Computed, applied: Iterable[int] = ()) -> dict[str, Any]:
    """What changed between a stored plan and the same plan computed again (empty:
    nothing); contracts already moved by this plan are left out."""
    done = set(applied)
    was = {
        c["contract_id"]: c["from_terms_id"]
        for c in planned.contracts
        if c["contract_id"] not in done
    }
    is_ = {c["contract_id"]: c["from_terms_id"] for c in now.contracts}
    key = ("deadline_id", "due_before", "due_after")
    was_d = {
        d["deadline_id"]: tuple(d[k] for k in key)
        for d in planned.deadlines
        if d["contract_id"] not in done
    }
    is_d = {d["deadline_id"]: tuple(d[k] for k in key) for d in now.deadlines}
    found = {
        "contracts_added": sorted(set(is_) - set(was)),
        "contracts_removed": sorted(set(was) - set(is_)),
        "contracts_changed_terms": sorted(c for c in set(was) & set(is_) if was[c] != is_[c]),
        "deadlines_changed": sorted(
            d for d in set(was_d) | set(is_d) if was_d.get(d) != is_d.get(d)
        ),
    }
    return {name: ids for name, ids in found.items() if ids}


def stale(plan_id: int, found: dict[str, Any]) -> ConflictError:
    counts = ", ".join(f"{len(ids)} {name.replace('_', ' ')}" for name, ids in found.items())
    return ConflictError(
        f"terms plan {plan_id} no longer matches the contracts ({counts}): make a new plan "
        "and review it",
        code="plan_stale",
        details={
            "differences": {name: ids[:SHOWN_DIFFERENCES] for name, ids in found.items()},
            "counts": {name: len(ids) for name, ids in found.items()},
        },
    )


def stored(conn: Connection, plan_id: int) -> tuple[dict[str, Any], Computed]:
    """A stored plan and what it moves."""
    plan = terms_plans.load(conn, plan_id)
    if plan is None:
        raise NotFound(f"terms plan {plan_id} does not exist", code="plan_not_found")
    computed = Computed()
    computed.contracts = [
        {"contract_id": c["contract_id"], "from_terms_id": c["from_terms_id"]}
        for c in terms_plans.contracts(conn, plan_id, unapplied=False)
    ]
    computed.deadlines = terms_plans.deadlines(conn, plan_id)
    return plan, computed


def move_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """A planned deadline move, as history, events and the API say it."""
    return {
        "deadline_id": row["deadline_id"],
        "event": row["event"],
        "entity": row["entity"],
        "entity_id": row["entity_id"],
        "due_before": row["due_before"].isoformat(),
        "due_after": row["due_after"].isoformat(),
    }


def move_contract(
    unit: UnitOfWork, plan: Mapping[str, Any], from_terms_id: int, planned: list[dict[str, Any]]
) -> dict[str, Any]:
    """Move the contract `unit` has locked to the plan's terms: exactly the `planned`
    due dates, its reminders by the new terms, a history row and an event to both
    parties; the plan marks it applied in the same transaction."""
    contract = unit.contract
    if contract["terms_id"] != from_terms_id:
        raise stale(plan["id"], {"contracts_changed_terms": [contract.id]})
    pending = {d["id"]: d for d in deadlines.pending_of_contract(unit.tx, contract.id)}
    for row in planned:
        now_due = pending.get(row["deadline_id"])
        if now_due is None or now_due["due_at"] != row["due_before"]:
            raise stale(plan["id"], {"deadlines_changed": [row["deadline_id"]]})
    contract.set(terms_id=plan["to_terms_id"])
    for row in planned:
        changes: dict[str, Any] = {"due_at": row["due_after"]}
        left = pending[row["deadline_id"]]["paused_left_ms"]
        if pending[row["deadline_id"]]["paused"] and left is not None:  # DL1
            shift = (row["due_after"] - row["due_before"]) // timedelta(milliseconds=1)
            changes["paused_left_ms"] = max(0, left + shift)
        deadlines.adjust(unit.tx, row["deadline_id"], changes)
        pending[row["deadline_id"]].update(changes)
    for deadline in pending.values():  # X15: reminders from the new due dates and terms
        if reminders.parse(deadline["event"]) is None:
            deadline_admin.move_reminders(unit, deadline)
    moved = [move_of(row) for row in planned]
    payload = {"plan_id": plan["id"], "reason": plan["reason"]}
    details = {
        "from_terms_id": from_terms_id,
        "to_terms_id": plan["to_terms_id"],
        "deadlines": moved,
    }
    step = unit.note(contract, "terms_migrated", payload, details=details)
    terms_plans.mark_applied(unit.tx, plan["id"], contract.id, unit.now)
    return {"contract_id": contract.id, "history_id": step.history_id, "deadlines": len(moved)}


# -- reading, for people and services ---------------------------------------------------

DEADLINES_SHOWN = 100
"""Deadlines listed with a plan; the rest are read a page at a time."""


def shown(plan: Mapping[str, Any], moved: list[dict[str, Any]], applied: int) -> dict[str, Any]:
    """A plan as the API, the CLI and the console show it."""
    return {
        "id": plan["id"],
        "status": plan["status"],
        "to_terms_id": plan["to_terms_id"],
        "selection": plan["selection"],
        "created_at": plan["created_at"].isoformat(),
        "created_by": plan["created_by"],
        "valid_until": plan["valid_until"].isoformat(),
        "contracts": plan["contracts"],
        "contracts_applied": applied,
        "deadlines": plan["deadlines"],
        "due_at_once": plan["due_at_once"],
        "forecast": [
            {**row, "shown": format_money(row["change"], row["currency"], signed=True)}
            for row in plan["forecast"]
        ],
        "reason": plan["reason"],
        "applied_by": plan["applied_by"],
        "applied_at": plan["applied_at"].isoformat() if plan["applied_at"] else None,
        "moves": [
            {
                **move_of(d),
                "contract_id": d["contract_id"],
                "amount": d["amount"],
                "currency": d["currency"],
            }
            for d in moved
        ],
    }


def show(db: DBEngine, plan_id: int, after: int | None = None) -> dict[str, Any]:
    """A plan with a page of its deadline moves (after deadline id `after`)."""
    with db.connect() as conn:
        plan = terms_plans.load(conn, plan_id)
        if plan is None:
            raise NotFound(f"terms plan {plan_id} does not exist", code="plan_not_found")
        moved = terms_plans.deadlines(conn, plan_id, after=after, limit=DEADLINES_SHOWN + 1)
        applied = terms_plans.count_applied(conn, [plan_id]).get(plan_id, 0)
    found = shown(plan, moved[:DEADLINES_SHOWN], applied)
    more = len(moved) > DEADLINES_SHOWN
    found["moves_after"] = moved[DEADLINES_SHOWN - 1]["deadline_id"] if more else None
    return found


def listing(db: DBEngine, limit: int = 50) -> list[dict[str, Any]]:
    """The newest plans first, without their moves."""
    with db.connect() as conn:
        plans = terms_plans.listing(conn, limit)
        applied = terms_plans.count_applied(conn, [p["id"] for p in plans])
    return [{**shown(p, [], applied.get(p["id"], 0)), "moves": None} for p in plans]

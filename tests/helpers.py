"""A small vocabulary so that tests read like the rules: arrange, act as a party, assert."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from storage import models
from storage.errors import EscrowflowError
from storage.models import metadata
from workflows.actors import Actor, Role
from workflows.clock import ManualClock
from workflows.engine import EscrowEngine, Result
from workflows.machines import MACHINES, timer_of
from workflows.sweeper import SweepReport, fire_due

CLIENT = Actor(Role.CLIENT, "acme")
FREELANCER = Actor(Role.FREELANCER, "ada")
ADMIN = Actor(Role.ADMIN, "disputes")
STRANGER = Actor(Role.CLIENT, "mallory")


class Scenario:
    def __init__(self, engine: EscrowEngine, clock: ManualClock) -> None:
        self.engine = engine
        self.clock = clock
        self.db = engine.db

    # arrange

    def new_terms(self, **changes: Any) -> None:
        """The deployment restarts with changed settings (TM1: later offers get them)."""
        policy = dataclasses.replace(self.engine.policy, **changes)
        self.engine = EscrowEngine(self.db, policy, self.clock)
        self.engine.terms.current()

    def offer(
        self, *amounts: int, kind: str = "fixed", currency: str = "USD"
    ) -> tuple[int, list[int]]:
        payload: dict[str, Any] = {
            "freelancer_id": FREELANCER.party,
            "title": "Website",
            "currency": currency,
            "kind": kind,
        }
        if amounts:
            payload["milestones"] = [
                {"title": f"Milestone {i}", "amount": a} for i, a in enumerate(amounts, 1)
            ]
        result = self.engine.create_contract(CLIENT, payload)
        milestones = [c["id"] for c in result["created"] if c["entity"] == "milestone"]
        return result["id"], milestones

    def active_contract(self, *amounts: int) -> tuple[int, list[int]]:
        contract, milestones = self.offer(*amounts)
        self.fire("contract", contract, "accept", FREELANCER)
        return contract, milestones

    def in_review(self, amount: int = 10_000) -> tuple[int, int]:
        contract, (milestone,) = self.active_contract(amount)
        self.fire("milestone", milestone, "fund", CLIENT)
        self.fire("milestone", milestone, "submit", FREELANCER)
        return contract, milestone

    # act

    def fire(
        self,
        entity: str,
        entity_id: int,
        event: str,
        actor: Actor = CLIENT,
        payload: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Result:
        return self.engine.apply(entity, entity_id, event, actor, payload, **kw)

    def add_milestones(self, contract: int, *milestones: dict[str, Any]) -> Result:
        """The client adds milestones to a contract (MS2)."""
        payload = {"milestones": list(milestones)}
        return self.fire("contract", contract, "add_milestones", CLIENT, payload)

    def propose(self, contract: int, *items: dict[str, Any]) -> Result:
        """The freelancer proposes changes to milestones not started (FP1)."""
        return self.fire("contract", contract, "propose", FREELANCER, {"items": list(items)})

    def refused(self, error: type[EscrowflowError], *fire: Any, **kw: Any) -> str:
        """The code of the `error` that `fire(*fire, **kw)` is refused with (the test fails
        if it is not refused, or refused otherwise)."""
        with pytest.raises(error) as refusal:
            self.fire(*fire, **kw)
        return refusal.value.code

    def wait(self, **delta: float) -> SweepReport:
        """Let time pass and the engine's timers fire."""
        self.clock.advance(timedelta(**delta))
        return fire_due(self.engine)

    # assert

    def row(self, entity: str, entity_id: int) -> dict[str, Any]:
        table = models.TABLES[entity]
        with self.db.connect() as conn:
            return dict(
                conn.execute(sa.select(table).where(table.c.id == entity_id)).mappings().one()
            )

    def state(self, entity: str, entity_id: int) -> str:
        return str(self.row(entity, entity_id)["state"])

    def rows(self, table: str, **where: Any) -> list[dict[str, Any]]:
        t = metadata.tables[table]
        query = sa.select(t).order_by(*t.primary_key.columns)
        for column, value in where.items():
            query = query.where(t.c[column] == value)
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def ledger(self, contract: int) -> list[tuple[str, int]]:
        return [(r["kind"], r["amount"]) for r in self.rows("ledger_entries", contract_id=contract)]

    def history(self, entity: str, entity_id: int) -> list[dict[str, Any]]:
        return self.rows("history", entity=entity, entity_id=entity_id)

    def events(self, contract: int) -> list[str]:
        return [r["type"] for r in self.rows("outbox_events", contract_id=contract)]

    def pending_deadlines(self, entity: str, entity_id: int) -> list[dict[str, Any]]:
        return self.rows("deadlines", entity=entity, entity_id=entity_id, status="pending")

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every table: to prove that a refused request changed nothing."""
        return {t.name: self.rows(t.name) for t in metadata.sorted_tables}

    def check_invariants(self) -> None:
        """ES1-ES3, history replay and deadline consistency, over the whole database."""
        check_invariants(self.db)


def reset(db: sa.Engine) -> None:
    """Empty every table, children first. DELETE, not TRUNCATE: for the few rows one
    lifecycle leaves, PostgreSQL's TRUNCATE (new files for 25 tables and their indexes)
    cost 53 ms an example, a tenth of the differential run. Ids go on from where they
    were; nothing that is compared depends on their values."""
    deletes = [f'DELETE FROM "{table.name}"' for table in reversed(metadata.sorted_tables)]
    with db.begin() as conn:
        if db.dialect.name == "postgresql":  # one round trip for them all
            conn.exec_driver_sql("; ".join(deletes))
        else:
            for delete in deletes:
                conn.exec_driver_sql(delete)


def check_invariants(db: sa.Engine) -> None:
    with db.connect() as conn:
        contracts = conn.execute(sa.select(models.CONTRACTS)).mappings().all()
        ledger = conn.execute(sa.select(models.LEDGER)).mappings().all()
        history = (
            conn.execute(sa.select(models.HISTORY).order_by(models.HISTORY.c.id)).mappings().all()
        )
        deadlines = (
            conn.execute(sa.select(models.DEADLINES).where(models.DEADLINES.c.status == "pending"))
            .mappings()
            .all()
        )
        entities = {
            name: {r["id"]: r for r in conn.execute(sa.select(t)).mappings()}
            for name, t in models.TABLES.items()
        }
        milestone_escrow = {
            m["contract_id"]: m["escrow"] for m in entities["milestone"].values() if m["escrow"]
        }
        refund_reserved: dict[int, int] = {}
        for r in entities["refund"].values():
            if r["state"] in ("requested", "disputed"):
                refund_reserved[r["contract_id"]] = (
                    refund_reserved.get(r["contract_id"], 0) + r["amount"]
                )
    # Each contract's entries, grouped once (a scan of every entry per contract took 28 s
    # for the drain tests' 10,000 contracts).
    entries_of: dict[int, list[Any]] = {}
    for entry in ledger:
        entries_of.setdefault(entry["contract_id"], []).append(entry)
    for c in contracts:
        sums = {"deposit": 0, "release": 0, "refund": 0}
        for entry in entries_of.get(c["id"], ()):
            assert entry["amount"] > 0
            assert entry["currency"] == c["currency"]
            sums[entry["kind"]] += entry["amount"]
        # ES1: what is held is deposits less releases and refunds, never negative.
        held = sums["deposit"] - sums["release"] - sums["refund"]
        assert held == c["held"] >= 0, (c, sums)
        # ES2: released + refunded + held = deposited.
        assert (c["deposited"], c["released"], c["refunded"]) == (
            sums["deposit"],
            sums["release"],
            sums["refund"],
        )
        assert c["released"] + c["refunded"] + c["held"] == c["deposited"]
        # Every held cent is accounted for: a milestone, the credit, or an open refund.
        accounted = milestone_escrow.get(c["id"], 0) + c["credit"] + refund_reserved.get(c["id"], 0)
        assert accounted == c["held"], (c, accounted)
    # Each entity's history replays to its current state and version.
    replay: dict[tuple[str, int], tuple[str, int]] = {}
    for h in history:
        if h["entity"] == "deadline":  # an admin's pause or extension: not a lifecycle
            continue
        key = (h["entity"], h["entity_id"])
        # NT2, TM2, PA4 (a decision proposed, approved or rejected): these move nothing
        if h["event"] in ("reminder", "terms_migrated", "note") or h["event"].endswith(
            ("_proposed", "_approved", "_rejected")
        ):
            assert (h["from_state"], h["version"]) == (h["to_state"], replay[key][1]), h
            assert h["to_state"] == replay[key][0], h
            continue
        if key in replay:
            assert h["from_state"] == replay[key][0], h
            assert h["version"] == replay[key][1] + 1, h
        else:
            assert h["from_state"] is None and h["version"] == 1, h
        replay[key] = (h["to_state"], h["version"])
    for (entity, entity_id), (state, version) in replay.items():
        row = entities[entity][entity_id]
        assert (row["state"], row["version"]) == (state, version), (entity, entity_id)
    assert len(replay) == sum(len(rows) for rows in entities.values())
    # No deadline is pending for a state that has been left.
    for d in deadlines:
        row = entities[d["entity"]][d["entity_id"]]
        timer = timer_of(MACHINES[d["entity"]], row["state"])
        # A reminder (NT2) is named after its timer: remind:<event>:<how long before>.
        event = d["event"].split(":")[1] if d["event"].startswith("remind:") else d["event"]
        assert timer is not None and timer.event == event, (d, row["state"])
        assert d["state_version"] == row["version"], (d, row["version"])


def race(*actions: object) -> list[object]:
    """Run the actions at the same moment, each in a thread; their results or errors."""
    barrier = threading.Barrier(len(actions))
    outcomes: list[object] = [None] * len(actions)

    def run(index: int, action: object) -> None:
        barrier.wait()
        try:
            outcomes[index] = action()  # type: ignore[operator]
        except EscrowflowError as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes

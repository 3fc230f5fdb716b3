"""A reference model of the escrow rules, written from the rules (docs/rules.md) and the
README's X choices, not from the engine: it imports nothing of `workflows`, `storage` or
`scheduler`.

Plain Python, one dictionary of fields per entity. `Model.act` applies one request and
raises `Refused` when the rules refuse it (changing nothing); `Model.advance` lets time
pass and fires what falls due. After each call a reader can ask each entity's state and,
per contract, what the client deposited, what the freelancer was paid, what the client
got back and what each milestone holds.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

FIELDS = ("title", "description", "due_date", "amount")


class Refused(Exception):
    """The rules refuse this request; nothing changed."""


@dataclass(frozen=True)
class Settings:
    """One terms version (TM1): the same numbers are the same terms."""

    minimum: int = 500  # MS1: 5.00 USD
    max_milestones: int = 200  # CT3
    review_window: timedelta = timedelta(days=14)  # MS10
    change_request_lifetime: timedelta = timedelta(days=7)  # CR6
    refund_response_time: timedelta = timedelta(days=7)  # RF2


# Who may ask for what (PA1). The engine's own moves (timers, cascades) are nobody's.
ROLES: dict[str, dict[str, set[str]]] = {
    "contract": {
        "accept": {"freelancer"},
        "decline": {"freelancer"},
        "withdraw": {"client"},
        "end": {"client", "freelancer"},
        "add_milestones": {"client"},
        "reorder_milestones": {"client"},
        "propose": {"freelancer"},
        "request_refund": {"client"},
    },
    "milestone": {
        "fund": {"client"},
        "edit": {"client"},
        "delete": {"client"},
        "submit": {"freelancer"},
        "request_changes": {"client"},
        "release": {"client"},
        "deposit": {"client"},
        "open_change_request": {"client"},
    },
    "change_request": {
        "accept": {"freelancer"},
        "reject": {"freelancer"},
        "edit": {"client"},
        "withdraw": {"client"},
    },
    "proposal": {"accept": {"client"}, "decline": {"client"}, "withdraw": {"freelancer"}},
    "refund": {
        "approve": {"freelancer"},
        "dispute": {"freelancer"},
        "cancel": {"client"},
        "resolve": {"admin"},
    },
}


# MS14: a release above this multiple of the agreed amount needs "bonus" (the default).
RELEASE_LIMIT = 2


def _require(condition: bool, why: str) -> None:
    if not condition:
        raise Refused(why)


def _amount(value: Any, minimum: int = 1) -> int:
    _require(isinstance(value, int) and not isinstance(value, bool), "amount not an integer")
    _require(minimum <= value <= 10**15, "amount out of range")
    return int(value)


def _fields(payload: dict[str, Any], minimum: int, new: bool) -> dict[str, Any]:
    """MS1: title, description, due date, amount; a change names at least one."""
    out: dict[str, Any] = {}
    if new or "title" in payload:
        title = payload.get("title")
        _require(isinstance(title, str) and 0 < len(title.strip()) <= 200, "bad title")
        out["title"] = title.strip()
    if new or "description" in payload:
        text = payload.get("description") or ""
        _require(isinstance(text, str) and len(text.strip()) <= 5000, "bad description")
        out["description"] = text.strip()
    if "due_date" in payload:
        due = payload["due_date"]
        if due is not None:
            _require(isinstance(due, str), "bad due date")
            try:
                due = date.fromisoformat(due).isoformat()
            except ValueError:
                raise Refused("bad due date") from None
        out["due_date"] = due
    if new or "amount" in payload:
        _require("amount" in payload, "amount required")
        out["amount"] = _amount(payload["amount"], minimum)
    _require(bool(out), "nothing to change")
    return out


def _only(payload: dict[str, Any], *allowed: str) -> None:
    _require(set(payload) <= {*allowed, "reason"}, "unknown field")


# TM1: a contract's timers run by its own terms; a migration (TM2) keeps the time run.
TIMED = {
    "auto_approve": "review_window",
    "expire": "change_request_lifetime",
    "refund_by_default": "refund_response_time",
}
FINAL_CONTRACT = ("closed", "withdrawn", "declined")
SHORTENING_NOTICE = timedelta(hours=24)  # X14


@dataclass
class Model:
    terms: dict[int, Settings] = field(default_factory=lambda: {1: Settings()})
    current_terms: int = 1  # what new offers get (the deployment's settings)
    now: datetime = datetime(2026, 1, 5, 9, 0)
    entities: dict[str, dict[int, dict[str, Any]]] = field(
        default_factory=lambda: {k: {} for k in ROLES}
    )
    timers: list[tuple[datetime, int, str, int, str]] = field(default_factory=list)
    # DL1: paused timers, by (entity, key): the time they had left, their order, event.
    paused: dict[tuple[str, int], tuple[timedelta, int, str]] = field(default_factory=dict)
    _ids: dict[str, itertools.count[int]] = field(
        default_factory=lambda: {k: itertools.count(1) for k in ROLES}
    )
    _order: itertools.count[int] = field(default_factory=itertools.count)
    created: list[tuple[str, int]] = field(default_factory=list)

    # -- reading --------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The terms of the lifecycle's contract (TM1); before its offer, today's."""
        contract = self.entities["contract"].get(1)
        return self.terms[contract["terms"] if contract else self.current_terms]

    # -- terms (TM1, TM2) -----------------------------------------------------------

    def new_terms(self, settings: Settings) -> int:
        """The deployment restarts with `settings`: later offers get them (the same
        numbers as earlier terms are those terms)."""
        known = [key for key, value in self.terms.items() if value == settings]
        self.current_terms = known[0] if known else max(self.terms) + 1
        self.terms[self.current_terms] = settings
        return self.current_terms

    def migrate(self, source: int, target: int) -> int:
        """TM2: running contracts under `source` move to `target`; each pending timer's
        length changes by the difference, a shortened one falls due no sooner than the
        notice (X14). How many contracts moved."""
        moved = 0
        for contract in self.entities["contract"].values():
            if contract["terms"] != source or source == target:
                continue
            if contract["state"] in FINAL_CONTRACT:
                continue
            before, after = self.terms[source], self.terms[target]
            for (entity, key), (left, order, event) in list(self.paused.items()):
                if self.get(entity, key)["contract"] != contract["id"]:
                    continue
                old, new = getattr(before, TIMED[event]), getattr(after, TIMED[event])
                base = self.now + left  # DL1: as if it were resumed now
                shifted = base + (new - old)
                if new < old:
                    shifted = min(base, max(shifted, self.now + SHORTENING_NOTICE))
                self.paused[(entity, key)] = (
                    max(timedelta(0), left + (shifted - base)),
                    order,
                    event,
                )
            timers = []
            for when, order, entity, key, event in self.timers:
                row = self.get(entity, key)
                if row["contract"] == contract["id"]:
                    old = getattr(before, TIMED[event])
                    new = getattr(after, TIMED[event])
                    shifted = when + (new - old)
                    if new < old:
                        shifted = min(when, max(shifted, self.now + SHORTENING_NOTICE))
                    when = shifted
                timers.append((when, order, entity, key, event))
            self.timers = timers
            contract["terms"] = target
            moved += 1
        return moved

    def get(self, entity: str, key: int) -> dict[str, Any]:
        return self.entities[entity][key]

    def milestones(self, contract: int) -> list[dict[str, Any]]:
        return [m for m in self.entities["milestone"].values() if m["contract"] == contract]

    # -- requests -------------------------------------------------------------------

    def offer(self, client: str, payload: dict[str, Any]) -> list[tuple[str, int]]:
        """CT2: an offer, with its milestones (MS2: all or none)."""
        return self._atomically(lambda: self._offer(client, payload))

    def act(
        self, role: str, party: str, entity: str, key: int, event: str, payload: dict[str, Any]
    ) -> list[tuple[str, int]]:
        """One request; what it created, in order. Raises Refused, changing nothing."""
        return self._atomically(lambda: self._act(role, party, entity, key, event, payload))

    def advance(self, to: datetime) -> None:
        """Time passes: what falls due fires, oldest first (MS10, CR6, RF2)."""
        self.now = max(self.now, to)
        while True:
            due = sorted(t for t in self.timers if t[0] <= self.now)
            if not due:
                return
            when, _, entity, key, event = due[0]
            self.timers.remove(due[0])
            saved, self.now = self.now, when
            row = self.get(entity, key)
            {
                "auto_approve": self._approve_by_default,
                "expire": lambda r: self._close_request(r, "expired"),
                "refund_by_default": lambda r: self._settle(r, r["amount"], 0, "refunded"),
            }[event](row)
            self._close_if_settled(self.get("contract", row["contract"]))
            self.now = saved

    def _atomically(self, action: Any) -> list[tuple[str, int]]:
        saved = copy.deepcopy((self.entities, self.timers, self.paused, self._ids))
        self.created = []
        try:
            action()
        except Refused:
            self.entities, self.timers, self.paused, self._ids = saved
            raise
        return self.created

    def _new(self, entity: str, **values: Any) -> dict[str, Any]:
        key = next(self._ids[entity])
        row = {"id": key, **values}
        self.entities[entity][key] = row
        self.created.append((entity, key))
        return row

    def _timer(self, row: dict[str, Any], entity: str, event: str, after: timedelta) -> None:
        self._cancel_timer(entity, row["id"])
        self.timers.append((self.now + after, next(self._order), entity, row["id"], event))

    def _cancel_timer(self, entity: str, key: int) -> None:
        self.timers = [t for t in self.timers if (t[2], t[3]) != (entity, key)]
        self.paused.pop((entity, key), None)

    # -- an admin's pause and resume (DL1) ------------------------------------------

    def pause(self, entity: str, key: int) -> None:
        """The entity's timer stops; it keeps the time it had left."""
        (timer,) = [t for t in self.timers if (t[2], t[3]) == (entity, key)]
        self.timers.remove(timer)
        when, order, _, _, event = timer
        self.paused[(entity, key)] = (max(timedelta(0), when - self.now), order, event)

    def resume(self, entity: str, key: int) -> None:
        """It falls due the time it had left after now."""
        left, order, event = self.paused.pop((entity, key))
        self.timers.append((self.now + left, order, entity, key, event))

    def _offer(self, client: str, payload: dict[str, Any]) -> None:
        _require(payload["freelancer"] != client, "offer to oneself")
        contract = self._new(
            "contract",
            state="offer",
            kind=payload.get("kind", "fixed"),
            client=client,
            freelancer=payload["freelancer"],
            deposited=0,
            released=0,
            refunded=0,
            credit=0,  # MS9: left over from partial releases, the client's
            active=None,
            proposal=None,
            refund=None,
            count=0,
            terms=self.current_terms,  # TM1: these govern it for life
        )
        contract["contract"] = contract["id"]
        if payload.get("milestones") is not None:
            self._add_milestones(contract, payload["milestones"])

    def _act(
        self, role: str, party: str, entity: str, key: int, event: str, payload: dict[str, Any]
    ) -> None:
        _require(role != "system", "nobody acts as system (PA1)")
        _require(event in ROLES[entity], "no such event, or the engine's own")
        _require(key in self.entities[entity], "no such entity")
        row = self.get(entity, key)
        contract = self.get("contract", row["contract"])
        _require(role in ROLES[entity][event], "role not allowed (PA1)")
        if role in ("client", "freelancer"):
            _require(contract[role] == party, "not a party to this contract (PA2)")
        handler = getattr(self, f"_{entity}_{event}")
        if entity == "contract":
            handler(contract, payload)
        else:
            handler(row, contract, payload)
        self._close_if_settled(contract)

    # -- contracts (CT) -------------------------------------------------------------

    def _open(self, contract: dict[str, Any]) -> None:
        _require(contract["state"] in ("offer", "active"), "contract is not open")

    def _planning(self, contract: dict[str, Any]) -> None:
        """CT1, FP3: milestones of a fixed-price contract, no proposal waiting."""
        _require(contract["kind"] == "fixed", "milestones only on fixed-price contracts (CT1)")
        _require(contract["proposal"] is None, "a proposal is waiting (FP3)")

    def _contract_accept(self, c: dict[str, Any], p: dict[str, Any]) -> None:
        _only(p)
        _require(c["state"] == "offer", "not an offer")
        c["state"] = "active"

    def _contract_decline(self, c: dict[str, Any], p: dict[str, Any]) -> None:
        self._offer_ends(c, p, "declined")

    def _contract_withdraw(self, c: dict[str, Any], p: dict[str, Any]) -> None:
        self._offer_ends(c, p, "withdrawn")

    def _offer_ends(self, c: dict[str, Any], p: dict[str, Any], state: str) -> None:
        """CT2: money deposited for the offer goes back in full; X9: its proposal lapses."""
        _only(p)
        _require(c["state"] == "offer", "not an offer")
        c["state"] = state
        if c["active"] is not None:
            self._milestone_refunded(self.get("milestone", c["active"]))
        self._pay(c, "refunded", c["credit"])
        c["credit"] = 0
        self._lapse_proposal(c)

    def _contract_end(self, c: dict[str, Any], p: dict[str, Any]) -> None:
        """CT4; X4: waiting proposals and change requests lapse, escrow stays."""
        _only(p)
        _require(c["state"] == "active", "not active")
        c["state"] = "ended"
        self._lapse_proposal(c)
        if c["active"] is not None:
            self._lapse_change_request(self.get("milestone", c["active"]))

    def _contract_add_milestones(self, c: dict[str, Any], p: dict[str, Any]) -> None:
        _only(p, "milestones")
        self._open(c)
        self._planning(c)
        self._add_milestones(c, p.get("milestones"))

    def _add_milestones(self, c: dict[str, Any], items: Any) -> None:
        """MS2: several at once, all or none; CT3: within the limit."""
        _require(c["kind"] == "fixed", "milestones only on fixed-price contracts (CT1)")
        _require(isinstance(items, list) and bool(items), "milestones must be a list")
        new = []
        for item in items:
            _require(isinstance(item, dict), "a milestone is an object")
            _only(item, *FIELDS)
            new.append(_fields(item, self.settings.minimum, new=True))
        self._create_milestones(c, new)

    def _create_milestones(self, c: dict[str, Any], new: list[dict[str, Any]]) -> None:
        _require(c["count"] + len(new) <= self.settings.max_milestones, "limit (CT3)")
        for values in new:
            self._new(
                "milestone",
                contract=c["id"],
                state="pending",
                **{"description": "", "due_date": None, **values},
                escrow=0,
                paid=0,
                change_request=None,
            )
        c["count"] += len(new)

    def _contract_reorder_milestones(self, c: dict[str, Any], p: dict[str, Any]) -> None:
        """MS3: the milestones not started, each once; the others keep their place."""
        _only(p, "order")
        self._open(c)
        self._planning(c)
        pending = [m["id"] for m in self.milestones(c["id"]) if m["state"] == "pending"]
        order = p.get("order")
        _require(isinstance(order, list) and bool(order), "order must be a list")
        _require(sorted(order) == sorted(pending), "order must list each pending milestone")

    def _contract_propose(self, c: dict[str, Any], p: dict[str, Any]) -> None:
        """FP1, FP2: only milestones not started; each once; nothing impossible."""
        _only(p, "items")
        self._open(c)
        self._planning(c)
        items = p.get("items")
        _require(isinstance(items, list) and bool(items), "items must be a list")
        checked, named = [], set()
        for item in items:
            _require(isinstance(item, dict), "an item is an object")
            action = item.get("action")
            if action == "add":
                _only(item, "action", *FIELDS)
                values = _fields(
                    {k: v for k, v in item.items() if k != "action"}, self.settings.minimum, True
                )
                checked.append(("add", None, values))
                continue
            _require(action in ("edit", "delete"), "unknown action")
            key = item.get("milestone_id")
            _require(key in self.entities["milestone"], "no such milestone")
            milestone = self.get("milestone", key)
            _require(milestone["contract"] == c["id"], "no such milestone")
            _require(milestone["state"] == "pending", "milestone started (MS12)")
            if action == "delete":
                _only(item, "action", "milestone_id")
                values = {}
            else:
                _only(item, "action", "milestone_id", *FIELDS)
                values = _fields(
                    {k: v for k, v in item.items() if k not in ("action", "milestone_id")},
                    self.settings.minimum,
                    False,
                )
                _require(any(milestone[f] != v for f, v in values.items()), "changes nothing")
            _require(key not in named, "a milestone named twice")
            named.add(key)
            checked.append((action, key, values))
        more = sum(a == "add" for a, _, _ in checked) - sum(a == "delete" for a, _, _ in checked)
        _require(c["count"] + more <= self.settings.max_milestones, "limit (CT3)")
        proposal = self._new("proposal", contract=c["id"], state="pending", items=checked)
        c["proposal"] = proposal["id"]

    def _contract_request_refund(self, c: dict[str, Any], p: dict[str, Any]) -> None:
        """RF1, X6: the credit first; else, once ended, the active milestone's escrow."""
        _only(p)
        _require(c["state"] in ("active", "ended"), "no refunds here")
        _require(c["refund"] is None, "one open refund per contract (X6)")
        milestone = None
        if c["credit"] > 0:
            amount, c["credit"] = c["credit"], 0
        elif c["state"] == "ended" and c["active"] is not None:
            milestone = self.get("milestone", c["active"])
            _require(milestone["state"] == "active", "under review: release or ask changes")
            amount, milestone["escrow"] = milestone["escrow"], 0
            milestone["state"] = "refund_requested"
            self._lapse_change_request(milestone)
        else:
            raise Refused("nothing to refund")
        refund = self._new(
            "refund",
            contract=c["id"],
            state="requested",
            milestone=milestone["id"] if milestone else None,
            amount=amount,
            to_client=None,
            to_freelancer=None,
        )
        c["refund"] = refund["id"]
        self._timer(refund, "refund", "refund_by_default", self.settings.refund_response_time)

    def _close_if_settled(self, c: dict[str, Any]) -> None:
        """X3: an ended contract holding nothing, with nothing open, is closed."""
        if c["state"] == "ended" and self.held(c) == 0 and c["active"] is c["refund"] is None:
            c["state"] = "closed"

    def _lapse_proposal(self, c: dict[str, Any]) -> None:
        if c["proposal"] is not None:
            self.get("proposal", c["proposal"])["state"] = "cancelled"
            c["proposal"] = None

    # -- milestones (MS) ------------------------------------------------------------

    def _milestone_fund(self, m: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        """MS4, MS5, X1, X2: one at a time; the credit counts toward the deposit."""
        _only(p)
        _require(m["state"] == "pending", "not pending")
        self._open(c)
        _require(c["active"] is None, "another milestone is active (MS4)")
        from_credit = min(c["credit"], m["amount"])
        c["credit"] -= from_credit
        self._deposit(c, m["amount"] - from_credit)
        m["escrow"], m["state"], c["active"] = m["amount"], "active", m["id"]
        # FP2: a waiting proposal changing this milestone can no longer apply.
        if c["proposal"] is not None:
            items = self.get("proposal", c["proposal"])["items"]
            if any(key == m["id"] for _, key, _ in items):
                self._lapse_proposal(c)

    def _milestone_edit(self, m: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        """MS3: the client edits a milestone not started."""
        _only(p, *FIELDS)
        _require(m["state"] == "pending", "started (MS12)")
        self._open(c)
        _require(c["proposal"] is None, "a proposal is waiting (FP3)")
        m.update(_fields(p, self.settings.minimum, new=False))

    def _milestone_delete(self, m: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        _only(p)
        _require(m["state"] == "pending", "started (MS3)")
        self._open(c)
        _require(c["proposal"] is None, "a proposal is waiting (FP3)")
        m["state"] = "deleted"
        c["count"] -= 1  # CT3: deleted milestones do not count

    def _milestone_submit(self, m: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        """MS6, MS10, CR5, X4: under review, with a full window; no work after the end."""
        _only(p)
        _require(m["state"] == "active", "not active")
        _require(c["state"] == "active", "contract not active (X4)")
        m["state"] = "in_review"
        self._lapse_change_request(m)
        self._timer(m, "milestone", "auto_approve", self.settings.review_window)

    def _milestone_request_changes(
        self, m: dict[str, Any], c: dict[str, Any], p: dict[str, Any]
    ) -> None:
        """MS7: back to the freelancer; the review clock stops."""
        _only(p)
        _require(m["state"] == "in_review", "not under review")
        m["state"] = "active"
        self._cancel_timer("milestone", m["id"])

    def _milestone_release(self, m: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        """MS8, MS9: all, part or more; without an amount, what MS10 pays. MS14: more
        than twice the agreed amount only as a stated bonus."""
        _only(p, "amount", "bonus")
        _require(m["state"] in ("active", "in_review"), "nothing to release")
        _require(c["state"] in ("active", "ended"), "the freelancer has not accepted (X1)")
        bonus = p.get("bonus", False)
        _require(bonus is True or bonus is False, "bonus is not true or false")
        amount = _amount(p["amount"]) if "amount" in p else min(m["amount"], m["escrow"])
        _require("amount" not in p or bonus or amount <= RELEASE_LIMIT * m["amount"], "MS14")
        self._release(m, c, amount)

    def _approve_by_default(self, m: dict[str, Any]) -> None:
        """MS10: as the client's approval without an amount."""
        self._release(m, self.get("contract", m["contract"]), min(m["amount"], m["escrow"]))

    def _release(self, m: dict[str, Any], c: dict[str, Any], amount: int) -> None:
        if amount > m["escrow"]:  # MS8: the difference is deposited with the release
            self._deposit(c, amount - m["escrow"])
            m["escrow"] = amount
        self._pay(c, "released", amount)
        c["credit"] += m["escrow"] - amount  # MS9: the rest stays for the client
        m["escrow"], m["paid"], m["state"] = 0, m["paid"] + amount, "released"
        c["active"] = None
        self._cancel_timer("milestone", m["id"])
        self._lapse_change_request(m)  # CR5

    def _milestone_deposit(self, m: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        """CR3: top escrow up to an increased amount (the review clock keeps running)."""
        _only(p)
        _require(m["state"] in ("active", "in_review"), "not active")
        _require(m["escrow"] < m["amount"], "escrow already full")
        self._deposit(c, m["amount"] - m["escrow"])
        m["escrow"] = m["amount"]

    def _milestone_open_change_request(
        self, m: dict[str, Any], c: dict[str, Any], p: dict[str, Any]
    ) -> None:
        """CR1: on the active milestone before submission; one at a time; a real change."""
        _only(p, *FIELDS)
        _require(m["state"] == "active", "not active")
        _require(c["state"] == "active", "contract not active")
        _require(m["change_request"] is None, "one pending change request")
        _require(c["proposal"] is None, "a proposal is waiting (FP3)")
        values = _fields(p, self.settings.minimum, new=False)
        _require(any(m[f] != v for f, v in values.items()), "changes nothing")
        request = self._new(
            "change_request", contract=c["id"], milestone=m["id"], state="pending", values=values
        )
        m["change_request"] = request["id"]
        self._timer(request, "change_request", "expire", self.settings.change_request_lifetime)

    def _milestone_refunded(self, m: dict[str, Any]) -> None:
        c = self.get("contract", m["contract"])
        self._pay(c, "refunded", m["escrow"])
        m["escrow"], m["state"], c["active"] = 0, "refunded", None
        self._lapse_change_request(m)

    # -- change requests (CR) -------------------------------------------------------

    def _change_request_accept(
        self, r: dict[str, Any], c: dict[str, Any], p: dict[str, Any]
    ) -> None:
        """CR3: the milestone takes the requested values at once."""
        _only(p)
        _require(r["state"] == "pending", "not pending")
        self.get("milestone", r["milestone"]).update(r["values"])
        self._close_request(r, "accepted")

    def _change_request_reject(
        self, r: dict[str, Any], c: dict[str, Any], p: dict[str, Any]
    ) -> None:
        self._answer_pending(r, p, "rejected")  # CR4

    def _change_request_withdraw(
        self, r: dict[str, Any], c: dict[str, Any], p: dict[str, Any]
    ) -> None:
        self._answer_pending(r, p, "withdrawn")  # CR2

    def _answer_pending(self, r: dict[str, Any], p: dict[str, Any], state: str) -> None:
        """A pending change request closed, with nothing else changed."""
        _only(p)
        _require(r["state"] == "pending", "not pending")
        self._close_request(r, state)

    def _change_request_edit(self, r: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        """CR2, X7: the client edits it; the freelancer gets a full lifetime again."""
        _only(p, *FIELDS)
        _require(r["state"] == "pending", "not pending")
        values = {**r["values"], **_fields(p, self.settings.minimum, new=False)}
        milestone = self.get("milestone", r["milestone"])
        _require(any(milestone[f] != v for f, v in values.items()), "changes nothing")
        r["values"] = values
        self._timer(r, "change_request", "expire", self.settings.change_request_lifetime)

    def _close_request(self, r: dict[str, Any], state: str) -> None:
        r["state"] = state
        self._cancel_timer("change_request", r["id"])
        milestone = self.get("milestone", r["milestone"])
        if milestone["change_request"] == r["id"]:
            milestone["change_request"] = None

    def _lapse_change_request(self, m: dict[str, Any]) -> None:
        """CR5, X4: a pending change request is cancelled."""
        if m["change_request"] is not None:
            self._close_request(self.get("change_request", m["change_request"]), "cancelled")

    # -- proposals (FP) -------------------------------------------------------------

    def _proposal_accept(self, r: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        """FP2: every change applies, together."""
        _only(p)
        _require(r["state"] == "pending", "not pending")
        self._open(c)
        c["proposal"] = None
        for action, key, values in r["items"]:
            if action == "delete":
                self.get("milestone", key)["state"] = "deleted"
                c["count"] -= 1
            elif action == "edit":
                self.get("milestone", key).update(values)
        adds = [values for action, _, values in r["items"] if action == "add"]
        if adds:
            self._create_milestones(c, adds)
        r["state"] = "accepted"

    def _proposal_decline(self, r: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        _only(p)
        _require(r["state"] == "pending", "not pending")
        r["state"], c["proposal"] = "declined", None

    def _proposal_withdraw(self, r: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        _only(p)
        _require(r["state"] == "pending", "not pending")
        r["state"], c["proposal"] = "withdrawn", None

    # -- refunds (RF) ---------------------------------------------------------------

    def _refund_approve(self, r: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        _only(p)
        _require(r["state"] == "requested", "not requested")
        self._settle(r, r["amount"], 0, "refunded")  # RF2

    def _refund_dispute(self, r: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        _only(p)
        _require(r["state"] == "requested", "not requested")
        r["state"] = "disputed"
        self._cancel_timer("refund", r["id"])

    def _refund_cancel(self, r: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        """X5: the money goes back where it was held."""
        _only(p)
        _require(r["state"] == "requested", "not requested")
        r["state"], c["refund"] = "cancelled", None
        self._cancel_timer("refund", r["id"])
        if r["milestone"] is None:
            c["credit"] += r["amount"]
        else:
            milestone = self.get("milestone", r["milestone"])
            milestone["state"], milestone["escrow"] = "active", r["amount"]

    def _refund_resolve(self, r: dict[str, Any], c: dict[str, Any], p: dict[str, Any]) -> None:
        """RF3: all to one party or a split that adds up to the disputed amount."""
        _only(p, "to_client", "to_freelancer")
        _require(r["state"] == "disputed", "not disputed")
        parts = [p.get("to_client", 0), p.get("to_freelancer", 0)]
        parts = [0 if type(part) is int and part == 0 else _amount(part) for part in parts]
        _require(sum(parts) == r["amount"], "the split must add up")
        self._settle(r, parts[0], parts[1], "resolved")

    def _settle(self, r: dict[str, Any], to_client: int, to_freelancer: int, state: str) -> None:
        c = self.get("contract", r["contract"])
        self._pay(c, "refunded", to_client)
        self._pay(c, "released", to_freelancer)
        r.update(state=state, to_client=to_client, to_freelancer=to_freelancer)
        c["refund"] = None
        self._cancel_timer("refund", r["id"])
        if r["milestone"] is not None:
            milestone = self.get("milestone", r["milestone"])
            milestone["paid"] += to_freelancer
            milestone["state"] = (
                "refunded" if to_freelancer == 0 else "released" if to_client == 0 else "settled"
            )
            c["active"] = None

    # -- money (ES) -----------------------------------------------------------------

    def _deposit(self, c: dict[str, Any], amount: int) -> None:
        c["deposited"] += amount

    def _pay(self, c: dict[str, Any], to: str, amount: int) -> None:
        c[to] += amount

    def held(self, c: dict[str, Any]) -> int:
        """ES2: deposited = released + refunded + held."""
        return int(c["deposited"] - c["released"] - c["refunded"])

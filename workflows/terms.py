"""Terms (TM1): the rules' numbers a contract was offered under, kept for its whole life.

A terms version is the durations, reminders, minimum amounts and milestone limit of a
`Policy`, stored once and never changed. The settings' policy names the terms new offers
get: on first use the book finds the stored terms with the same numbers (their
fingerprint) or stores a new version. Every contract records its terms; every later
decision about it (a deadline's length, its reminders, a milestone's minimum) reads the
policy of those terms, not of the settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as DBEngine

from storage import entities
from storage import terms as stored
from storage.db import transaction, translated_errors
from storage.errors import ConcurrentChange, NotFound, ValidationError
from workflows.clock import Clock
from workflows.policy import Policy
from workflows.reminders import iso_duration

SETTINGS = "settings"
"""Who created a terms version that came from a deployment's settings."""
MAX_NAME_LENGTH = 100

_log = logging.getLogger("escrowflow.terms")


def _seconds(length: timedelta) -> int | float:
    seconds = length.total_seconds()
    return int(seconds) if seconds == int(seconds) else seconds


def values_of(policy: Policy) -> dict[str, Any]:
    """The numbers of a policy that terms keep, as JSON (durations in seconds)."""
    return {
        "durations": {name: _seconds(length) for name, length in sorted(policy.durations.items())},
        "reminders": {
            name: [_seconds(before) for before in offsets]
            for name, offsets in sorted(policy.reminders.items())
            if offsets
        },
        "minimum_amounts": dict(sorted(policy.minimum_amounts.items())),
        "max_milestones": policy.max_milestones,
    }


def policy_of(values: dict[str, Any]) -> Policy:
    """The policy a terms version's values describe."""
    return Policy(
        durations={name: timedelta(seconds=s) for name, s in values["durations"].items()},
        reminders={
            name: tuple(timedelta(seconds=s) for s in offsets)
            for name, offsets in values.get("reminders", {}).items()
        },
        minimum_amounts=dict(values.get("minimum_amounts", {})),
        max_milestones=int(values["max_milestones"]),
    )


def fingerprint(values: dict[str, Any]) -> str:
    """The same numbers, the same fingerprint (canonical JSON, sha256)."""
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Terms:
    """One stored terms version."""

    id: int
    name: str
    policy: Policy
    created_at: datetime
    created_by: str

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> Terms:
        return cls(
            id=row["id"],
            name=row["name"],
            policy=policy_of(row["values"]),
            created_at=row["created_at"],
            created_by=row["created_by"],
        )


class TermsBook:
    """The terms a deployment knows: those of its settings (`current`, stored on first
    use) and, read once each, those its contracts run under. Thread-safe."""

    def __init__(self, db: DBEngine, policy: Policy, clock: Clock, name: str | None = None) -> None:
        if name is not None and not 0 < len(name.strip()) <= MAX_NAME_LENGTH:
            raise ValidationError(
                f"a terms name has 1 to {MAX_NAME_LENGTH} characters: set ESCROWFLOW_TERMS_NAME",
                code="invalid_setting",
            )
        self._db = db
        self._policy = policy
        self._clock = clock
        self._name = name.strip() if name else None
        self._current: Terms | None = None
        self._known: dict[int, Terms] = {}
        self._lock = threading.Lock()

    @property
    def policy(self) -> Policy:
        """The settings' policy: that of the terms new offers get."""
        return self._policy

    def current(self) -> Terms:
        """The terms new offers get, stored if they are new (in a transaction of its own:
        call it before opening one). Contracts from before terms were recorded get them."""
        if self._current is not None:
            return self._current
        with self._lock:
            if self._current is None:
                self._current = self._register()
                self._known[self._current.id] = self._current
        return self._current

    def forget_if_gone(self, terms_id: int) -> bool:
        """Whether terms `terms_id`, which this process had read, are gone from the server
        (an asynchronous standby promoted without them, a restored backup); if so, every
        version is read again from now on (an id known here may name other terms there)."""
        with translated_errors(), self._db.connect() as conn:
            if stored.load(conn, terms_id) is not None:
                return False
        with self._lock:
            if self._current is not None and self._current.id == terms_id:
                self._current = None
            self._known.clear()
        _log.warning(
            "terms %s are not on the database server: the settings' are stored again",
            terms_id,
            extra={"fields": {"event": "terms_gone", "terms_id": terms_id}},
        )
        return True

    def _register(self) -> Terms:
        values = values_of(self._policy)
        print_ = fingerprint(values)
        for _attempt in range(3):  # another process may store the same terms meanwhile
            try:
                with transaction(self._db) as conn:
                    row = stored.by_fingerprint(conn, print_) or self._insert(conn, values, print_)
                    given = entities.give_terms_to_unassigned(conn, row["id"])
            except ConcurrentChange:
                continue
            if given:
                _log.info(
                    "contracts from before terms were recorded now run under %s",
                    row["name"],
                    extra={"fields": {"event": "terms_backfilled", "contracts": given}},
                )
            return Terms.of_row(row)
        raise ConcurrentChange("the settings' terms could not be stored: try again")

    def _insert(self, conn: Connection, values: dict[str, Any], print_: str) -> dict[str, Any]:
        now = self._clock.now()
        name = self._name or f"{now:%Y-%m-%d}-{print_[:6]}"
        taken = stored.by_name(conn, name)
        if taken is not None and taken["fingerprint"] == print_:
            return taken  # the same terms, stored meanwhile by another process (TM1)
        if taken is not None:
            raise ValidationError(
                f"terms {name!r} (id {taken['id']}) have other numbers than these settings: "
                "terms never change, so give the changed settings a new ESCROWFLOW_TERMS_NAME",
                code="terms_name_taken",
                details={"name": name, "terms_id": taken["id"]},
            )
        terms_id = stored.insert(
            conn, name=name, fingerprint=print_, values=values, at=now, by=SETTINGS
        )
        _log.info(
            "new terms %s from the settings",
            name,
            extra={"fields": {"event": "terms_created", "terms_id": terms_id, "name": name}},
        )
        found = stored.load(conn, terms_id)
        assert found is not None
        return found

    def get(self, conn: Connection, terms_id: int) -> Terms:
        """A stored version, read once (terms never change)."""
        known = self._known.get(terms_id)
        if known is not None:
            return known
        row = stored.load(conn, terms_id)
        if row is None:
            raise NotFound(f"terms {terms_id} do not exist", code="terms_not_found")
        terms = self._known[terms_id] = Terms.of_row(row)
        return terms

    def of_contract_id(self, contract_id: int) -> Terms:
        """The terms contract `contract_id` runs under, read on a connection of its own."""
        with self._db.connect() as conn:
            contract = entities.read(conn, "contract", contract_id)
            if contract is None:
                raise NotFound(f"contract {contract_id} does not exist", code="contract_not_found")
            return self.of_contract(conn, contract)

    def of_contract(self, conn: Connection, contract: dict[str, Any]) -> Terms:
        """The terms a contract runs under (TM1)."""
        terms_id = contract.get("terms_id")
        return self.current() if terms_id is None else self.get(conn, terms_id)


# -- reading, for people and services ---------------------------------------------------


def shown(terms: Terms, contracts: int | None = None) -> dict[str, Any]:
    """A terms version as the API and the CLI show it: durations in ISO 8601."""
    policy = terms.policy
    found: dict[str, Any] = {
        "id": terms.id,
        "name": terms.name,
        "created_at": terms.created_at.isoformat(),
        "created_by": terms.created_by,
        "durations": {name: iso_duration(length) for name, length in policy.durations.items()},
        "reminders": {
            name: [iso_duration(before) for before in offsets]
            for name, offsets in policy.reminders.items()
        },
        "minimum_amounts": dict(policy.minimum_amounts),
        "max_milestones": policy.max_milestones,
    }
    if contracts is not None:
        found["contracts"] = contracts
    return found


def listing(db: DBEngine) -> list[dict[str, Any]]:
    """Every terms version, oldest first, with how many contracts run under each."""
    with db.connect() as conn:
        counts = entities.contracts_by_terms(conn)
        rows = stored.listing(conn)
    return [shown(Terms.of_row(row), counts.get(row["id"], 0)) for row in rows]


def show(db: DBEngine, terms_id: int) -> dict[str, Any]:
    with db.connect() as conn:
        row = stored.load(conn, terms_id)
        if row is None:
            raise NotFound(f"terms {terms_id} do not exist", code="terms_not_found")
        counts = entities.contracts_by_terms(conn, terms_id)
    return shown(Terms.of_row(row), counts.get(terms_id, 0))

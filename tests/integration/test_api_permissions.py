"""The permission matrix over HTTP: every event x every role x every scope.

For each event, a contract is arranged so that the event is allowed by its state; then
it is fired as each role (the right party), with a token of each scope, and as a client
or freelancer of another contract. Only the role the machine names, with the scope
`act:<role>`, as the contract's own party, succeeds; every other attempt gets 401 or 403
and leaves every row of every table as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from storage.db import make_engine
from storage.models import metadata
from tests.conftest import database_settings
from tests.helpers import CLIENT, FREELANCER, Scenario
from tests.live import Api, live_server
from workflows.actors import Role
from workflows.clock import ManualClock
from workflows.engine import EscrowEngine
from workflows.machines import MACHINES
from workflows.policy import Policy

PARTIES = {
    Role.CLIENT: "client:acme",
    Role.FREELANCER: "freelancer:ada",
    Role.ADMIN: "admin:disputes",
    Role.SYSTEM: "system:escrowflow",
}
STRANGERS = {Role.CLIENT: "client:mallory", Role.FREELANCER: "freelancer:eve"}
SCOPES = [None, "read", "webhooks", "act:client", "act:freelancer", "act:admin"]
COLLECTION = {
    "contract": "contracts",
    "milestone": "milestones",
    "change_request": "change_requests",
    "proposal": "proposals",
    "refund": "refunds",
}

Arrange = Callable[[Scenario], tuple[int, dict[str, Any]]]


def _offer(sc: Scenario) -> tuple[int, dict[str, Any]]:
    return sc.offer(50_000)[0], {}


def _active(sc: Scenario) -> tuple[int, dict[str, Any]]:
    return sc.active_contract(50_000)[0], {}


def _funded(sc: Scenario) -> int:
    _, (m,) = sc.active_contract(50_000)
    sc.fire("milestone", m, "fund", CLIENT)
    return m


def _with_credit(sc: Scenario) -> tuple[int, dict[str, Any]]:
    m = _funded(sc)
    sc.fire("milestone", m, "release", CLIENT, {"amount": 20_000})
    return sc.row("milestone", m)["contract_id"], {"reason": "stop"}


def _change_request(sc: Scenario) -> tuple[int, dict[str, Any]]:
    m = _funded(sc)
    created = sc.fire("milestone", m, "open_change_request", CLIENT, {"amount": 60_000})
    return created["created"][0]["id"], {}


def _proposal(sc: Scenario) -> tuple[int, dict[str, Any]]:
    c, _ = sc.active_contract(50_000)
    created = sc.propose(c, {"action": "add", "title": "X", "amount": 9_000})
    return created["created"][0]["id"], {}


def _refund(sc: Scenario) -> tuple[int, dict[str, Any]]:
    c, _ = _with_credit(sc)
    created = sc.fire("contract", c, "request_refund", CLIENT)
    return created["created"][0]["id"], {}


def _disputed(sc: Scenario) -> tuple[int, dict[str, Any]]:
    r, _ = _refund(sc)
    sc.fire("refund", r, "dispute", FREELANCER)
    return r, {"to_client": 20_000, "to_freelancer": 10_000}


def _in_review(sc: Scenario) -> tuple[int, dict[str, Any]]:
    return sc.in_review(50_000)[1], {}


def _short_escrow(sc: Scenario) -> tuple[int, dict[str, Any]]:
    m = _funded(sc)
    cr = sc.fire("milestone", m, "open_change_request", CLIENT, {"amount": 60_000})
    sc.fire("change_request", cr["created"][0]["id"], "accept", FREELANCER)
    return m, {}


def _pending_milestone(payload: dict[str, Any]) -> Arrange:
    def arrange(sc: Scenario) -> tuple[int, dict[str, Any]]:
        return sc.active_contract(50_000)[1][0], payload

    return arrange


def _reorder(sc: Scenario) -> tuple[int, dict[str, Any]]:
    c, (a, b) = sc.active_contract(50_000, 60_000)
    return c, {"order": [b, a]}


ALLOWED_STATE: dict[tuple[str, str], Arrange] = {
    ("contract", "accept"): _offer,
    ("contract", "decline"): _offer,
    ("contract", "withdraw"): _offer,
    ("contract", "end"): _active,
    ("contract", "add_milestones"): lambda sc: (
        sc.offer()[0],
        {"milestones": [{"title": "X", "amount": 9_000}]},
    ),
    ("contract", "reorder_milestones"): _reorder,
    ("contract", "propose"): lambda sc: (
        sc.active_contract(50_000)[0],
        {"items": [{"action": "add", "title": "X", "amount": 9_000}]},
    ),
    ("contract", "request_refund"): _with_credit,
    ("milestone", "fund"): _pending_milestone({}),
    ("milestone", "edit"): _pending_milestone({"amount": 70_000}),
    ("milestone", "delete"): _pending_milestone({}),
    ("milestone", "submit"): lambda sc: (_funded(sc), {}),
    ("milestone", "request_changes"): _in_review,
    ("milestone", "release"): _in_review,
    ("milestone", "deposit"): _short_escrow,
    ("milestone", "open_change_request"): lambda sc: (_funded(sc), {"amount": 60_000}),
    ("change_request", "accept"): _change_request,
    ("change_request", "reject"): _change_request,
    ("change_request", "edit"): lambda sc: (_change_request(sc)[0], {"amount": 70_000}),
    ("change_request", "withdraw"): _change_request,
    ("proposal", "accept"): _proposal,
    ("proposal", "decline"): _proposal,
    ("proposal", "withdraw"): _proposal,
    ("refund", "approve"): _refund,
    ("refund", "dispute"): _refund,
    ("refund", "resolve"): _disputed,
    ("refund", "cancel"): _refund,
}
"""Every event a party may fire, and a state where it is allowed."""

SYSTEM_EVENTS = [
    (entity, event)
    for entity, machine in MACHINES.items()
    for event, roles in machine.permissions.items()
    if roles == frozenset({Role.SYSTEM})
]
ANY_ENTITY: dict[str, Arrange] = {
    "contract": _active,
    "milestone": _in_review,
    "change_request": _change_request,
    "proposal": _proposal,
    "refund": _refund,
}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, Scenario]]:
    path = tmp_path_factory.mktemp("matrix") / "escrowflow.db"
    db = make_engine(database_settings(f"sqlite:///{path}"))
    metadata.create_all(db)
    clock = ManualClock()
    engine = EscrowEngine(db, Policy(reminders={}), clock)
    with live_server(engine) as url:
        api = Api(url, engine)
        yield api, Scenario(engine, clock)
        api.close()
    db.dispose()


def test_every_party_event_is_covered_by_the_matrix() -> None:
    party_events = {
        (entity, event)
        for entity, machine in MACHINES.items()
        for event, roles in machine.permissions.items()
        if roles != frozenset({Role.SYSTEM})
    }
    assert party_events == set(ALLOWED_STATE)


@pytest.mark.parametrize(("entity", "event"), sorted(ALLOWED_STATE) + sorted(SYSTEM_EVENTS))
def test_permission_matrix(matrix: tuple[Api, Scenario], entity: str, event: str) -> None:
    api, sc = matrix
    tokens = {scope: api.token(scope) if scope else None for scope in SCOPES}
    arrange = ALLOWED_STATE.get((entity, event)) or ANY_ENTITY[entity]
    entity_id, payload = arrange(sc)
    path = f"/v1/{COLLECTION[entity]}/{entity_id}/events/{event}"
    allowed_roles = MACHINES[entity].permissions[event]

    winners = []
    before = sc.snapshot()
    for role, actor in PARTIES.items():
        for scope, token in tokens.items():
            if role is not Role.SYSTEM and role in allowed_roles and scope == f"act:{role.value}":
                winners.append((actor, token))
                continue
            answer = api.request("POST", path, token=token, actor=actor, json=payload)
            expected = 401 if token is None else 403
            assert answer.status_code == expected, (role, scope, answer.text)
    for role, stranger in STRANGERS.items():
        answer = api.request(
            "POST", path, token=tokens[f"act:{role.value}"], actor=stranger, json=payload
        )
        assert answer.status_code == 403, (stranger, answer.text)
    assert sc.snapshot() == before, "a refused request changed the database"

    if allowed_roles == frozenset({Role.SYSTEM}):
        assert winners == []
        return
    # One winner per role the machine names; each succeeds on a freshly arranged entity.
    assert len(winners) == len(allowed_roles)
    for index, (actor, token) in enumerate(winners):
        if index:
            entity_id, payload = arrange(sc)
            path = f"/v1/{COLLECTION[entity]}/{entity_id}/events/{event}"
        answer = api.request("POST", path, token=token, actor=actor, json=payload)
        assert answer.status_code == 200, answer.text
        assert answer.json()["event"] == event

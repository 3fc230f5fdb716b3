"""Who may do what: every role and party check of the engine, in one place.

PA1: each event names the roles that may fire it; a timer's events are the system's.
PA2: a client or freelancer acts only on their own contracts.
X10: no request acts as system — only the engine's own timers and cascades do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from storage.errors import PermissionDenied
from workflows.actors import Actor, Role
from workflows.machines import MACHINES


def refuse_system_role(actor: Actor) -> None:
    """PA1, X10: no request (HTTP, CLI or a Python caller) acts as system; only the
    engine's own timers and cascades do, and they do not come through here."""
    if actor.role is Role.SYSTEM:
        raise PermissionDenied(
            f"nobody acts as system ({actor.party!r} tried): only the engine's own timers "
            "and cascades do; act as client, freelancer or admin",
            code="system_role_reserved",
        )


def check_actor(entity: str, event: str, actor: Actor, contract: Mapping[str, Any]) -> None:
    """PA1: the actor's role may fire `event`; PA2: as a party of this contract."""
    roles = MACHINES[entity].permissions[event]
    if actor.role not in roles:
        allowed = ", ".join(sorted(r.value for r in roles))
        raise PermissionDenied(
            f"{actor.role.value} may not {event} a {entity}; only {allowed} may",
            code="role_not_allowed",
            details={"role": actor.role.value, "allowed": sorted(r.value for r in roles)},
        )
    member = {Role.CLIENT: contract["client_id"], Role.FREELANCER: contract["freelancer_id"]}
    if actor.role in member and member[actor.role] != actor.party:
        raise PermissionDenied(
            f"{actor.party} is not the {actor.role.value} of contract {contract['id']}",
            code="not_a_party",
            details={"party": actor.party, "contract_id": contract["id"]},
        )


def require_client(actor: Actor) -> None:
    """CT2, PA1: only a client offers a contract."""
    if actor.role is not Role.CLIENT:
        raise PermissionDenied(
            f"only a client offers contracts, not a {actor.role.value}", code="role_not_allowed"
        )


def require_admin(actor: Actor, action: str) -> None:
    """PA1: only the dispute team acts on deadlines and terms (`action`, e.g. "pause a
    deadline")."""
    if actor.role is not Role.ADMIN:
        raise PermissionDenied(
            f"only the dispute team (admin) may {action}, not a {actor.role.value}",
            code="role_not_allowed",
        )

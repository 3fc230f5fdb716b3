"""Who acts: a role (PA1) and the party acting in it (PA2)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from storage.errors import ValidationError


class Role(StrEnum):
    CLIENT = "client"
    FREELANCER = "freelancer"
    ADMIN = "admin"  # the platform's dispute team
    SYSTEM = "system"  # the engine's own timers


@dataclass(frozen=True, slots=True)
class Actor:
    role: Role
    party: str

    @classmethod
    def parse(cls, text: str) -> Actor:
        """Parse ``ROLE:PARTY`` as given on the command line, e.g. ``client:acme``."""
        role, sep, party = text.partition(":")
        if not sep or not party.strip():
            raise ValidationError(
                f"actor {text!r} is not ROLE:PARTY, e.g. client:acme or freelancer:ada",
                code="invalid_actor",
            )
        try:
            # Case-sensitive, as every other name in the API: `Client` is no role.
            return cls(Role(role.strip()), party.strip())
        except ValueError:
            roles = ", ".join(r.value for r in Role)
            hint = (
                f" (roles are lower case: {role.strip().lower()})"
                if role.strip().lower() in roles.split(", ")
                else ""
            )
            raise ValidationError(
                f"unknown role {role!r}{hint}: use one of {roles}", code="unknown_role"
            ) from None

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role.value, "party": self.party}


SYSTEM = Actor(Role.SYSTEM, "escrowflow")

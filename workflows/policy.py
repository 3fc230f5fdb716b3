"""Policies: the durations and limits of rules.md, with their defaults.

A deployment changes them through settings; the machines name a policy (e.g. a state's
timer says "after `review_window`"), and only this object knows its length.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from storage.errors import ValidationError

# ISO 4217 codes in use, with the number of digits of their minor unit.
ISO_4217: Mapping[str, int] = MappingProxyType(
    {
        **dict.fromkeys(
            [
                "AED",
                "AFN",
                "ALL",
                "AMD",
                "ANG",
                "AOA",
                "ARS",
                "AUD",
                "AWG",
                "AZN",
                "BAM",
                "BBD",
                "BDT",
                "BGN",
                "BMD",
                "BND",
                "BOB",
                "BRL",
                "BSD",
                "BTN",
                "BWP",
                "BYN",
                "BZD",
                "CAD",
                "CDF",
                "CHF",
                "CNY",
                "COP",
                "CRC",
                "CUP",
                "CVE",
                "CZK",
                "DKK",
                "DOP",
                "DZD",
                "EGP",
                "ERN",
                "ETB",
                "EUR",
                "FJD",
                "FKP",
                "GBP",
                "GEL",
                "GHS",
                "GIP",
                "GMD",
                "GTQ",
                "GYD",
                "HKD",
                "HNL",
                "HTG",
                "HUF",
                "IDR",
                "ILS",
                "INR",
                "IRR",
                "JMD",
                "KES",
                "KGS",
                "KHR",
                "KPW",
                "KYD",
                "KZT",
                "LAK",
                "LBP",
                "LKR",
                "LRD",
                "LSL",
                "MAD",
                "MDL",
                "MGA",
                "MKD",
                "MMK",
                "MNT",
                "MOP",
                "MRU",
                "MUR",
                "MVR",
                "MWK",
                "MXN",
                "MYR",
                "MZN",
                "NAD",
                "NGN",
                "NIO",
                "NOK",
                "NPR",
                "NZD",
                "PAB",
                "PEN",
                "PGK",
                "PHP",
                "PKR",
                "PLN",
                "QAR",
                "RON",
                "RSD",
                "RUB",
                "SAR",
                "SBD",
                "SCR",
                "SDG",
                "SEK",
                "SGD",
                "SHP",
                "SLE",
                "SOS",
                "SRD",
                "SSP",
                "STN",
                "SYP",
                "SZL",
                "THB",
                "TJS",
                "TMT",
                "TOP",
                "TRY",
                "TTD",
                "TWD",
                "TZS",
                "UAH",
                "USD",
                "UYU",
                "UZS",
                "VES",
                "WST",
                "XCD",
                "YER",
                "ZAR",
                "ZMW",
                "ZWL",
            ],
            2,
        ),
        **dict.fromkeys(
            [
                "BIF",
                "CLP",
                "DJF",
                "GNF",
                "ISK",
                "JPY",
                "KMF",
                "KRW",
                "PYG",
                "RWF",
                "UGX",
                "VND",
                "VUV",
                "XAF",
                "XOF",
                "XPF",
            ],
            0,
        ),
        **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    }
)

TIMER_POLICIES = ("review_window", "change_request_lifetime", "refund_response_time")
"""The durations a machine's timer may name."""

DEFAULT_DURATIONS: Mapping[str, timedelta] = MappingProxyType(
    {
        "review_window": timedelta(days=14),  # MS10
        "change_request_lifetime": timedelta(days=7),  # CR6
        "refund_response_time": timedelta(days=7),  # RF2
    }
)
# NT2: how long before a timer fires its party is reminded, by timer policy.
DEFAULT_REMINDERS: Mapping[str, tuple[timedelta, ...]] = MappingProxyType(
    {
        "review_window": (timedelta(days=3), timedelta(days=1)),  # before auto_approve
        "refund_response_time": (timedelta(days=3), timedelta(days=1)),  # refund_by_default
        "change_request_lifetime": (timedelta(days=1),),  # before expire
    }
)
# Smallest milestone amount per currency, in minor units (MS1). A currency not listed
# needs five of its major units, as USD needs 5.00.
DEFAULT_MINIMUM_AMOUNTS: Mapping[str, int] = MappingProxyType({"USD": 500})
DEFAULT_MAX_MILESTONES = 200  # CT3
# MS14: a release above this multiple of the milestone's agreed amount needs "bonus".
DEFAULT_RELEASE_LIMIT_MULTIPLE = 2


@dataclass(frozen=True)
class Policy:
    """The rules' numbers; the defaults above are the only place they are written."""

    durations: Mapping[str, timedelta] = field(default_factory=lambda: dict(DEFAULT_DURATIONS))
    minimum_amounts: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_MINIMUM_AMOUNTS)
    )
    max_milestones: int = DEFAULT_MAX_MILESTONES
    # MS14: the platform's guard, read from the deployment's policy; not kept in terms.
    release_limit_multiple: int = DEFAULT_RELEASE_LIMIT_MULTIPLE
    currencies: frozenset[str] = frozenset(ISO_4217)
    reminders: Mapping[str, tuple[timedelta, ...]] = field(
        default_factory=lambda: dict(DEFAULT_REMINDERS)
    )

    def __post_init__(self) -> None:
        missing = [name for name in TIMER_POLICIES if name not in self.durations]
        if missing:
            raise ValidationError(f"policy has no duration for {', '.join(missing)}")
        for name, length in self.durations.items():
            if length <= timedelta(0):
                raise ValidationError(f"policy duration {name} must be positive, not {length}")
        unknown = sorted(set(self.currencies) - set(ISO_4217))
        if unknown:
            raise ValidationError(f"not ISO 4217 currencies: {', '.join(unknown)}")
        if self.max_milestones < 1:
            raise ValidationError("max_milestones must be at least 1")
        if self.release_limit_multiple < 1:
            raise ValidationError("release_limit_multiple must be at least 1 (MS14)")
        for name, offsets in self.reminders.items():
            if name not in TIMER_POLICIES:
                raise ValidationError(
                    f"reminders for unknown timer {name!r}: use {', '.join(TIMER_POLICIES)}"
                )
            if any(offset <= timedelta(0) for offset in offsets):
                raise ValidationError(f"reminders for {name} must be positive durations")

    def duration(self, name: str) -> timedelta:
        return self.durations[name]

    def check_currency(self, currency: object) -> str:
        if not isinstance(currency, str) or currency.upper() not in self.currencies:
            raise ValidationError(
                f"unknown currency {currency!r}: give an ISO 4217 code such as USD or EUR",
                code="unknown_currency",
                details={"field": "currency"},
            )
        return currency.upper()

    def minimum_amount(self, currency: str) -> int:
        if currency in self.minimum_amounts:
            return self.minimum_amounts[currency]
        return int(5 * 10 ** ISO_4217[currency])


SECOND_APPROVAL_ABOVE = 10_000
"""PA4: an admin's decision moving more than this (major units of its currency) waits for
a second admin. The platform's control, not a term of any contract."""


def format_money(amount: int, currency: str, *, signed: bool = False) -> str:
    """1234, "USD" -> "12.34 USD"; 1240000 -> "12,400.00 USD" ("+12,400.00 USD" if
    `signed`): for messages only; money itself stays an integer."""
    digits = ISO_4217.get(currency, 2)
    sign = "-" if amount < 0 else "+" if signed and amount > 0 else ""
    if digits == 0:
        return f"{sign}{abs(amount):,} {currency}"
    whole, part = divmod(abs(amount), 10**digits)
    return f"{sign}{whole:,}.{part:0{digits}d} {currency}"


# Bounded, so no typed text reaches int() with thousands of digits (a ValueError there).
_TYPED_MONEY = re.compile(
    r"(?P<whole>[0-9]{1,3}(?:,[0-9]{3}){1,6}|[0-9]{1,19})(?:\.(?P<part>[0-9]{0,6}))?"
)
MAX_TYPED_MONEY = 10**15
"""The largest amount a person may type, in minor units."""


def parse_money(text: str, currency: str, field: str = "amount") -> int:
    """What a person types ("600", "600.00", "1,200.5") as minor units of `currency`;
    a `ValidationError` naming `field` and saying what to type otherwise. Grouping
    commas are taken only in groups of three; ASCII digits only."""
    digits = ISO_4217.get(currency, 2)
    example = format_money(60_000 if digits == 2 else 600 * 10**digits, currency)
    cleaned = text.strip().removesuffix(currency).strip()
    found = _TYPED_MONEY.fullmatch(cleaned) if cleaned.isascii() else None
    part = (found.group("part") or "") if found else ""
    if found is None or len(part) > digits:
        places = f"{digits} decimal places" if digits else "no decimals"
        raise ValidationError(
            f"{field} {text.strip()!r} is not an amount of {currency} ({places}): type it as "
            f"people write it, e.g. {example.removesuffix(' ' + currency)}",
            code="invalid_amount",
            details={"field": field},
        )
    minor: int = int(found.group("whole").replace(",", "")) * 10**digits
    minor += int(part.ljust(digits, "0") or 0) if digits else 0
    if minor > MAX_TYPED_MONEY:
        raise ValidationError(
            f"{field} {text.strip()} is more than any escrow holds: check the amount",
            code="invalid_amount",
            details={"field": field},
        )
    return minor


def approved_amount(milestone: Mapping[str, Any] | Any) -> int:
    """MS10: what an approval without an amount pays: the agreed amount, or what the
    milestone holds if that is less (an increase never deposited is not paid). What is
    held beyond the amount (after an accepted decrease, CR3) stays for the client (MS9)."""
    return int(min(milestone["amount"], milestone["escrow"]))


def moved_by_timer(event: str, row: Mapping[str, Any]) -> int | None:
    """What a timer moves if it fires now: an auto-approval releases the approved amount
    to the freelancer (MS10), a default refund returns the refund's amount to the client
    (RF2); the other timers move no money."""
    if event == "auto_approve":
        return approved_amount(row)
    if event == "refund_by_default":
        return int(row["amount"])
    return None

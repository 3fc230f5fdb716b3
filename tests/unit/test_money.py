"""Money as people type it and read it: integers of minor units inside, the currency's
own exponent and grouping outside."""

from __future__ import annotations

import pytest

from storage.errors import ValidationError
from workflows.policy import format_money, parse_money


@pytest.mark.parametrize(
    ("typed", "currency", "minor"),
    [
        ("600", "EUR", 60_000),
        ("600.00", "EUR", 60_000),
        ("600.5", "EUR", 60_050),
        ("1,200.50", "EUR", 120_050),
        (" 1,200.50 EUR ", "EUR", 120_050),
        ("0.01", "USD", 1),
        ("1,500", "JPY", 1_500),
        ("12.345", "KWD", 12_345),  # three decimals
    ],
)
def test_an_amount_typed_as_people_write_it_is_minor_units_of_its_currency(
    typed: str, currency: str, minor: int
) -> None:
    assert parse_money(typed, currency) == minor
    assert parse_money(format_money(minor, currency), currency) == minor  # round trip


@pytest.mark.parametrize(
    ("typed", "currency", "says"),
    [
        ("600.001", "EUR", "2 decimal places"),
        ("600.5", "JPY", "no decimals"),
        ("1,20", "EUR", "e.g. 600.00"),
        ("-5", "EUR", "not an amount of EUR"),
        ("\uff16\uff10\uff10", "EUR", "not an amount of EUR"),  # full-width 600
        ("", "EUR", "not an amount of EUR"),
        ("9" * 16, "EUR", "more than any escrow holds"),
        ("9" * 5000, "EUR", "not an amount of EUR"),  # no int() of 5,000 digits
    ],
)
def test_what_is_not_an_amount_is_refused_saying_what_to_type(
    typed: str, currency: str, says: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_money(typed, currency, "to the client")
    assert refused.value.code == "invalid_amount"
    assert says in refused.value.message and "to the client" in refused.value.message

"""Idempotency keys: the same request twice has one effect; a reused key is refused."""

from __future__ import annotations

import pytest

from storage.errors import IdempotencyConflict
from tests.helpers import CLIENT, FREELANCER, Scenario


def test_same_key_twice_gives_one_effect_and_the_same_result(sc: Scenario) -> None:
    contract, m = sc.in_review(10_000)
    first = sc.fire("milestone", m, "release", CLIENT, {"amount": 4_000}, idempotency_key="k-1")
    before = sc.snapshot()
    again = sc.fire("milestone", m, "release", CLIENT, {"amount": 4_000}, idempotency_key="k-1")
    assert again == {**first, "replayed": True}
    assert sc.snapshot() == before
    assert sc.ledger(contract) == [("deposit", 10_000), ("release", 4_000)]


def test_same_key_with_a_different_request_is_refused(sc: Scenario) -> None:
    contract, m = sc.in_review(10_000)
    sc.fire("milestone", m, "release", CLIENT, {"amount": 4_000}, idempotency_key="k-2")
    before = sc.snapshot()
    assert (
        sc.refused(
            IdempotencyConflict,
            "milestone",
            m,
            "release",
            CLIENT,
            {"amount": 5_000},
            idempotency_key="k-2",
        )
        == "idempotency_key_reused"
    )
    with pytest.raises(IdempotencyConflict):
        sc.fire("contract", contract, "end", FREELANCER, idempotency_key="k-2")
    assert sc.snapshot() == before


def test_offer_with_the_same_key_creates_one_contract(sc: Scenario) -> None:
    payload = {
        "freelancer_id": "ada",
        "title": "T",
        "currency": "USD",
        "milestones": [{"title": "a", "amount": 1000}],
    }
    first = sc.engine.create_contract(CLIENT, payload, idempotency_key="offer-1")
    again = sc.engine.create_contract(CLIENT, payload, idempotency_key="offer-1")
    assert again["id"] == first["id"] and again["replayed"]
    assert len(sc.rows("contracts")) == 1


def test_keys_never_expire(sc: Scenario) -> None:
    contract, m = sc.in_review(10_000)
    sc.fire("milestone", m, "release", CLIENT, idempotency_key="old")
    sc.wait(days=3650)
    result = sc.fire("milestone", m, "release", CLIENT, idempotency_key="old")
    assert result["replayed"]
    assert sc.ledger(contract) == [("deposit", 10_000), ("release", 10_000)]


def test_failed_request_does_not_burn_its_key(sc: Scenario) -> None:
    _contract, (m,) = sc.active_contract(10_000)
    with pytest.raises(Exception):  # noqa: B017 - any refusal; the point is what follows
        sc.fire("milestone", m, "submit", FREELANCER, idempotency_key="retry-me")
    sc.fire("milestone", m, "fund", CLIENT)
    sc.fire("milestone", m, "submit", FREELANCER, idempotency_key="retry-me")
    assert sc.state("milestone", m) == "in_review"

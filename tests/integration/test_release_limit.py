"""MS14: a release far above the milestone's agreed amount needs a deliberate act. A
client's release above the deployment's multiple (default 2x) of the agreed amount is
refused, naming the limit, and changes nothing; stated as a bonus it is paid (the
difference deposited, CR3). Over the API it is a 409 with a stable code."""

from __future__ import annotations

import pytest

from storage.errors import TransitionRejected, ValidationError
from tests.helpers import CLIENT, FREELANCER, Scenario
from tests.live import Api
from workflows.engine import EscrowEngine
from workflows.policy import Policy


def _in_review(sc: Scenario, amount: int) -> tuple[int, int]:
    contract, (milestone,) = sc.active_contract(amount)
    sc.fire("milestone", milestone, "fund", CLIENT)
    sc.fire("milestone", milestone, "submit", FREELANCER)
    return contract, milestone


def test_ms14_a_release_above_twice_the_agreed_amount_is_refused_naming_the_limit(
    sc: Scenario,
) -> None:
    _, milestone = _in_review(sc, 50_000)  # 500.00 USD
    before = sc.snapshot()
    with pytest.raises(TransitionRejected) as refused:
        sc.fire("milestone", milestone, "release", CLIENT, {"amount": 99_999_999})
    assert refused.value.code == "release_above_limit"
    assert refused.value.details == {"limit": 100_000, "amount": 99_999_999, "multiple": 2}
    assert "999,999.99 USD" in refused.value.message
    assert "release at most 1,000.00 USD" in refused.value.message
    assert '"bonus": true' in refused.value.message
    assert sc.snapshot() == before


def test_ms14_up_to_the_limit_is_paid_and_above_it_only_as_a_stated_bonus(sc: Scenario) -> None:
    contract, milestone = _in_review(sc, 50_000)
    sc.fire("milestone", milestone, "release", CLIENT, {"amount": 100_000})  # exactly 2x
    assert sc.ledger(contract)[-2:] == [("deposit", 50_000), ("release", 100_000)]

    other, second = _in_review(sc, 50_000)
    sc.fire("milestone", second, "release", CLIENT, {"amount": 250_000, "bonus": True})
    assert sc.ledger(other)[-2:] == [("deposit", 200_000), ("release", 250_000)]
    assert sc.row("milestone", second)["released_amount"] == 250_000
    sc.check_invariants()


def test_ms14_bonus_must_be_true_or_false_and_a_release_without_amount_is_unaffected(
    sc: Scenario,
) -> None:
    contract, milestone = _in_review(sc, 50_000)
    before = sc.snapshot()
    with pytest.raises(ValidationError) as refused:
        sc.fire("milestone", milestone, "release", CLIENT, {"amount": 200_000, "bonus": "yes"})
    assert (refused.value.code, refused.value.details) == ("invalid_bonus", {"field": "bonus"})
    assert sc.snapshot() == before
    sc.fire("milestone", milestone, "release", CLIENT)
    assert sc.ledger(contract)[-1] == ("release", 50_000)


def test_ms14_the_multiple_is_the_deployments_setting_for_running_contracts_too(
    sc: Scenario, engine: EscrowEngine
) -> None:
    _, milestone = _in_review(sc, 50_000)  # offered under the default (2x)
    looser = EscrowEngine(engine.db, Policy(reminders={}, release_limit_multiple=3), sc.clock)
    with pytest.raises(TransitionRejected, match="more than 3x"):
        looser.apply("milestone", milestone, "release", CLIENT, {"amount": 150_001})
    looser.apply("milestone", milestone, "release", CLIENT, {"amount": 150_000})
    assert sc.row("milestone", milestone)["released_amount"] == 150_000


def test_ms14_over_http_a_typo_is_a_409_naming_the_limit_and_a_bonus_is_paid(
    sc: Scenario, api: Api
) -> None:
    token = api.token("act:client")
    _, milestone = _in_review(sc, 50_000)
    path = f"/v1/milestones/{milestone}/events/release"
    typo = api.request("POST", path, token=token, actor="client:acme", json={"amount": 99_999_999})
    assert typo.status_code == 409, typo.text
    assert typo.json()["code"] == "release_above_limit"
    assert "1,000.00 USD" in typo.json()["message"]
    assert sc.row("milestone", milestone)["state"] == "in_review"
    paid = api.request(
        "POST", path, token=token, actor="client:acme", json={"amount": 150_000, "bonus": True}
    )
    assert paid.status_code == 200, paid.text
    assert sc.row("milestone", milestone)["released_amount"] == 150_000

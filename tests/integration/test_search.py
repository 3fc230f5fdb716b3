"""The dispute desk's search and its "needs attention" counts (workflows.search), on both
backends: every criterion alone and together, typed money, the deployment's clock, paging
by cursor, a party's own contracts only, and refusals that name the field."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from storage.errors import ValidationError
from tests.helpers import ADMIN, CLIENT, FREELANCER, Scenario
from workflows import search
from workflows.actors import Actor, Role

BOLT = Actor(Role.CLIENT, "Bolt-Labs")
ZED = Actor(Role.CLIENT, "zed")


def _contract(
    sc: Scenario,
    title: str,
    amount: int = 10_000,
    *,
    client: Actor = CLIENT,
    freelancer: str = FREELANCER.party,
    currency: str = "USD",
) -> tuple[int, int]:
    payload: dict[str, Any] = {
        "freelancer_id": freelancer,
        "title": title,
        "currency": currency,
        "milestones": [{"title": "Work", "amount": amount}],
    }
    made = sc.engine.create_contract(client, payload)
    (milestone,) = [c["id"] for c in made["created"] if c["entity"] == "milestone"]
    return int(made["id"]), int(milestone)


def _funded(sc: Scenario, contract: int, milestone: int, client: Actor = CLIENT) -> None:
    freelancer = Actor(Role.FREELANCER, sc.row("contract", contract)["freelancer_id"])
    sc.fire("contract", contract, "accept", freelancer)
    sc.fire("milestone", milestone, "fund", client)


def _found(sc: Scenario, viewer: Actor | None = None, **given: str) -> list[int]:
    page = search.contract_page(sc.db, given, viewer, sc.clock.now())
    return [c["id"] for c in page["items"]]


def test_text_criteria_ignore_case_match_prefixes_and_words_and_take_wildcards_literally(
    sc: Scenario,
) -> None:
    logo = _contract(sc, "Logo for the new Site")[0]
    site = _contract(sc, "Website rebuild", client=BOLT, freelancer="bob")[0]
    odd = _contract(sc, "100% off_season", client=ZED, freelancer="Adams")[0]

    assert _found(sc, party="ACM") == [logo]  # the client acme, ignoring case
    assert _found(sc, party="ad") == [logo, odd]  # the freelancers ada and Adams
    assert _found(sc, party="bolt-") == [site]
    assert _found(sc, party="cme") == []  # a prefix, not anywhere in the id
    assert _found(sc, title="site") == [logo, site]
    assert _found(sc, title="SITE logo") == [logo]  # every word, in any order
    assert _found(sc, title="100%") == [odd]
    assert _found(sc, title="%") == [odd]  # a wildcard is a character like any other
    assert _found(sc, title="o_f") == []  # and so is an underscore ("off" is no match)
    assert _found(sc, title="off_s") == [odd]
    assert _found(sc, party="a", title="site") == [logo]


def test_state_currency_and_the_money_held_typed_as_people_write_it(sc: Scenario) -> None:
    eur_small = _contract(sc, "A", 50_000, currency="EUR")
    eur_big = _contract(sc, "B", 150_000, currency="EUR")
    usd_big = _contract(sc, "C", 150_000, currency="USD")
    jpy = _contract(sc, "D", 90_000, currency="JPY")  # no decimals: 90,000 JPY
    unfunded = _contract(sc, "E", 70_000, currency="EUR")[0]
    for contract, milestone in (eur_small, eur_big, usd_big, jpy):
        _funded(sc, contract, milestone)

    assert _found(sc, state="offer") == [unfunded]
    assert _found(sc, state="active", currency="eur") == [eur_small[0], eur_big[0]]
    assert _found(sc, currency="EUR", held_min="600.00") == [eur_big[0]]
    assert _found(sc, currency="EUR", held_max="500") == [eur_small[0], unfunded]  # held 0
    assert _found(sc, currency="EUR", held_min="500", held_max="1,500.00") == [
        eur_small[0],
        eur_big[0],
    ]
    assert _found(sc, currency="JPY", held_min="90,000") == [jpy[0]]
    assert _found(sc, currency="JPY", held_min="90,001") == []


def test_timers_due_within_n_days_by_the_deployments_clock_and_held_back_deadlines(
    sc: Scenario,
) -> None:
    reviewing, m = _contract(sc, "Review me")
    _funded(sc, reviewing, m)
    sc.fire("milestone", m, "submit", FREELANCER)  # auto-approval in 14 days (MS4)
    paused, p = _contract(sc, "Paused")
    _funded(sc, paused, p)
    sc.fire("milestone", p, "submit", FREELANCER)
    (deadline,) = sc.pending_deadlines("milestone", p)
    sc.engine.adjust_deadline(deadline["id"], "pause", ADMIN, "fraud check")
    _contract(sc, "Nothing pending")  # an offer waits on no timer
    # A paused timer is not running: only the review's auto-approval waits.
    assert _found(sc, due_within_days="3650") == [reviewing]

    due_13 = set(_found(sc, due_within_days="13"))
    assert reviewing not in due_13 and paused not in due_13
    assert reviewing in _found(sc, due_within_days="14")
    sc.clock.advance(timedelta(days=2))  # the engine's clock: 12 days left now
    assert reviewing in _found(sc, due_within_days="12")
    assert _found(sc, held_back="true") == [paused]
    assert _found(sc, held_back="yes", title="review") == []


def test_has_a_dispute_and_a_party_sees_only_its_own(sc: Scenario) -> None:
    mine, m = _contract(sc, "Disputed", 120_000, currency="EUR")
    _funded(sc, mine, m)
    sc.fire("contract", mine, "end", CLIENT)
    made = sc.fire("contract", mine, "request_refund", CLIENT, {"reason": "not delivered"})
    sc.fire("refund", made["created"][0]["id"], "dispute", FREELANCER, {"reason": "delivered"})
    theirs, t = _contract(sc, "Disputed too", client=BOLT)
    _funded(sc, theirs, t, BOLT)
    _contract(sc, "Calm")

    assert _found(sc, has_dispute="1") == [mine]
    assert _found(sc, BOLT, title="disputed") == [theirs]
    assert _found(sc, CLIENT, title="disputed") == [mine]
    assert _found(sc, FREELANCER, party="bolt") == [theirs]  # ada works for both
    assert _found(sc, Actor(Role.FREELANCER, "bob")) == []

    counts = search.attention(sc.db, sc.clock.now())
    assert counts["disputes"] == 1
    assert counts["held_back"] == 0


def test_pages_follow_the_lists_cursors_with_the_criteria_kept(sc: Scenario) -> None:
    made = [_contract(sc, f"Logo {i}")[0] for i in range(7)]
    _contract(sc, "Other")
    seen: list[int] = []
    cursor = None
    while True:
        page = search.contract_page(
            sc.db, {"title": "logo"}, None, sc.clock.now(), limit=3, cursor=cursor
        )
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made


def test_attention_counts_stop_at_the_cap(sc: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(4):
        contract, m = _contract(sc, "Review")
        _funded(sc, contract, m)
        sc.fire("milestone", m, "submit", FREELANCER)
    sc.clock.advance(timedelta(days=12))
    assert search.attention(sc.db, sc.clock.now())["due_soon"] == 4
    monkeypatch.setattr("storage.search.COUNT_CAP", 2)
    assert search.attention(sc.db, sc.clock.now())["due_soon"] == 3  # "more than 2"


@pytest.mark.parametrize(
    ("given", "field", "says"),
    [
        ({"state": "funded"}, "state", "is not a contract's: give one of offer, active"),
        ({"currency": "EURO"}, "currency", "ISO 4217"),
        ({"held_min": "600"}, "held_min", "needs a currency"),
        ({"currency": "EUR", "held_min": "6", "held_max": "5"}, "held_min", "above held_max"),
        ({"currency": "EUR", "held_max": "6.001"}, "held_max", "2 decimal places"),
        ({"due_within_days": "2.5"}, "due_within_days", "is not a number of days"),
        ({"due_within_days": "99999"}, "due_within_days", "give 0 to 3650"),
        ({"has_dispute": "maybe"}, "has_dispute", "is not yes or no"),
        ({"title": "x" * 101}, "title", "longer than 100"),
        ({"title": " ".join("abcdefghi")}, "title", "more than 8 words"),
    ],
)
def test_a_search_it_cannot_mean_is_refused_naming_the_field(
    sc: Scenario, given: dict[str, str], field: str, says: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        search.contract_page(sc.db, given, None, sc.clock.now())
    assert says in refused.value.message
    assert refused.value.details["field"] == field


def test_an_unknown_search_field_is_refused(sc: Scenario) -> None:
    with pytest.raises(ValidationError) as refused:
        search.contract_page(sc.db, {"client": "acme"}, None, sc.clock.now())
    assert refused.value.code == "unknown_filter"
    assert "search takes party, title" in refused.value.message


def test_a_text_match_pages_alike_whether_read_through_its_index_or_by_walking_ids(
    sc: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Few matches are read through the text's index and sorted, many by walking ids in
    order (storage.search.NARROW decides): both give the same pages in id order."""
    from storage import search as stored

    made = [_contract(sc, f"Logo {n}", client=BOLT if n % 2 else CLIENT)[0] for n in range(7)]
    _contract(sc, "Other", client=ZED)

    def pages(**given: str) -> list[list[int]]:
        found, cursor = [], None
        while True:
            page = search.contract_page(sc.db, given, None, sc.clock.now(), 2, cursor)
            found.append([c["id"] for c in page["items"]])
            if not (cursor := page["next_cursor"]):
                return found

    narrow = pages(title="logo"), pages(party="bolt"), pages(party="acm", title="logo")
    monkeypatch.setattr(stored, "NARROW", 1)  # every text now matches "many"
    assert (pages(title="logo"), pages(party="bolt"), pages(party="acm", title="logo")) == narrow
    assert [c for page in narrow[0] for c in page] == made
    assert [c for page in narrow[1] for c in page] == [c for n, c in enumerate(made) if n % 2]

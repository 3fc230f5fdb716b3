"""The liability forecast agrees with `next` summed over every contract, on a seeded
population of contracts in mixed states; over HTTP and from the CLI."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from tests.helpers import ADMIN, CLIENT, FREELANCER, Scenario
from tests.integration.test_cli_admin import cli
from tests.live import Api
from workflows import views
from workflows.forecast import forecast


def _seed(sc: Scenario, contracts: int, seed: int = 13) -> list[int]:
    """Contracts in mixed states and currencies, their deadlines spread over five weeks."""
    rng = random.Random(seed)
    made = []
    for _ in range(contracts):
        sc.clock.advance(timedelta(hours=rng.randint(0, 3)))
        currency = rng.choice(["USD", "EUR"])
        amount = rng.randint(5, 500) * 1_000
        payload: dict[str, Any] = {
            "freelancer_id": "ada",
            "title": "Site",
            "currency": currency,
            "milestones": [{"title": "Work", "amount": amount}],
        }
        created = sc.engine.create_contract(CLIENT, payload)
        contract, milestone = created["id"], created["created"][0]["id"]
        made.append(contract)
        kind = rng.choice(["offer", "review", "review", "changes", "topped", "refund", "released"])
        if kind == "offer":
            continue
        sc.fire("contract", contract, "accept", FREELANCER)
        sc.fire("milestone", milestone, "fund", CLIENT)
        if kind in ("review", "released"):
            sc.fire("milestone", milestone, "submit", FREELANCER)
            if kind == "released":
                sc.fire("milestone", milestone, "release", CLIENT)
        elif kind == "changes":  # a smaller amount accepted: part stays for the client
            smaller = {"amount": amount // 2}
            result = sc.fire("milestone", milestone, "open_change_request", CLIENT, smaller)
            change = result["created"][0]["id"]
            sc.fire("change_request", change, "accept", FREELANCER)
            sc.fire("milestone", milestone, "submit", FREELANCER)
        elif kind == "topped":  # a larger amount accepted, submitted, then deposited (CR3)
            larger = {"amount": amount * 2}
            result = sc.fire("milestone", milestone, "open_change_request", CLIENT, larger)
            sc.fire("change_request", result["created"][0]["id"], "accept", FREELANCER)
            sc.fire("milestone", milestone, "submit", FREELANCER)
            if rng.random() < 0.5:
                sc.fire("milestone", milestone, "deposit", CLIENT)
        else:
            sc.fire("contract", contract, "end", CLIENT)
            sc.fire("contract", contract, "request_refund", CLIENT, {"reason": "late"})
        pending = [d["deadline_id"] for d in views.what_next(sc.db, contract)]
        if pending and rng.random() < 0.1:
            sc.engine.adjust_deadline(pending[0], "pause", ADMIN, "checking a complaint")
    return made


def _next_summed(sc: Scenario, contracts: list[int], until: datetime) -> Counter[tuple[Any, ...]]:
    """What `next` says will move before `until`, summed: the forecast's reference."""
    paused = {d["id"] for d in sc.rows("deadlines", status="pending") if d["paused"]}
    summed: Counter[tuple[Any, ...]] = Counter()
    for contract in contracts:
        for item in views.what_next(sc.db, contract):
            money = item["money"]
            if money is None or datetime.fromisoformat(item["due_at"]) >= until:
                continue
            side = "to_freelancers" if item["event"] == "auto_approve" else "to_clients"
            where = "paused" if item["deadline_id"] in paused else item["due_at"][:10]
            summed[(where, money["currency"], side)] += money["amount"]
            summed[(where, money["currency"], side, "count")] += 1
    return summed


def _forecast_summed(found: dict[str, Any]) -> Counter[tuple[Any, ...]]:
    summed: Counter[tuple[Any, ...]] = Counter()
    for rows, where in [(found["by_day"], None), (found["paused"], "paused")]:
        for row in rows:
            key = where or row["date"]
            for side, count in (("to_freelancers", "releases"), ("to_clients", "refunds")):
                if row[count]:
                    summed[(key, row["currency"], side)] += row[side]
                    summed[(key, row["currency"], side, "count")] += row[count]
    return summed


def test_the_forecast_equals_next_summed_over_500_contracts_in_mixed_states(
    sc: Scenario,
) -> None:
    contracts = _seed(sc, 500)
    for days in (3, 10, 30):
        found = forecast(sc.db, sc.clock.now(), days)
        until = datetime.fromisoformat(found["until"])
        expected = _next_summed(sc, contracts, until)
        assert expected, "the seeded population moves no money"
        assert _forecast_summed(found) == expected
        for total in found["totals"]:
            days_of = [d for d in found["by_day"] if d["currency"] == total["currency"]]
            assert total["to_freelancers"] == sum(d["to_freelancers"] for d in days_of)
            assert total["to_clients"] == sum(d["to_clients"] for d in days_of)
    assert found["paused"], "no paused deadline in the population"


def test_the_forecast_over_http_needs_a_read_token_and_refuses_bad_days(
    sc: Scenario, api: Api
) -> None:
    _seed(sc, 20)
    read = api.token("read")
    over_http = api.ok("GET", "/v1/forecast", token=read, params={"days": 30})
    assert over_http == forecast(sc.db, sc.clock.now(), 30)
    assert api.request("GET", "/v1/forecast", token=read, params={"days": 0}).status_code == 422
    assert api.request("GET", "/v1/forecast", token=read, params={"days": 367}).status_code == 422
    party = api.token("act:client")
    refused = api.request("GET", "/v1/forecast", token=party, actor="client:acme")
    assert (refused.status_code, refused.json()["code"]) == (403, "scope_missing")


def test_the_cli_lists_contracts_milestones_refunds_and_prints_the_forecast(
    sc: Scenario,
) -> None:
    contract, (m1, m2) = sc.active_contract(10_000, 20_000)
    sc.fire("contract", contract, "reorder_milestones", CLIENT, {"order": [m2, m1]})
    other, (m3,) = sc.active_contract(30_000)
    sc.fire("milestone", m3, "fund", CLIENT)
    sc.fire("contract", other, "end", CLIENT)
    refund = sc.fire("contract", other, "request_refund", CLIENT, {"reason": "late"})
    refund_id = refund["created"][0]["id"]
    sc.fire("refund", refund_id, "dispute", FREELANCER, {"reason": "delivered"})

    def run(*args: str) -> Any:
        done = cli(sc.db, *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    listed = run("contracts", "list", "--client", "acme", "--limit", "1")
    assert [c["id"] for c in listed["items"]] == [contract]
    rest = run("contracts", "list", "--client", "acme", "--cursor", listed["next_cursor"])
    assert [c["id"] for c in rest["items"]] == [other]
    assert [m["id"] for m in run("milestones", "list", str(contract))["items"]] == [m2, m1]
    assert [r["id"] for r in run("refunds", "list", "--state", "disputed")["items"]] == [refund_id]
    people = cli(sc.db, "milestones", "list", str(contract)).stdout
    assert f"milestone {m1:>6}" in people and "100.00 USD" in people  # money as money
    disputed = cli(sc.db, "refunds", "list", "--state", "disputed").stdout
    assert "300.00 USD  late" in disputed
    assert run("contracts", "list", "--state", "closed")["items"] == []
    text = cli(sc.db, "contracts", "list", "--state", "closed")
    assert text.returncode == 0 and "no contracts match" in text.stdout
    bad = cli(sc.db, "contracts", "list", "--limit", "500")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "1 to 200" in bad.stderr
    missing = cli(sc.db, "milestones", "list", "999")
    assert missing.returncode != 0 and "contract 999 does not exist" in missing.stderr

    sc.fire("milestone", m2, "fund", CLIENT)
    sc.fire("milestone", m2, "submit", FREELANCER)
    printed = run("forecast", "--days", "30")
    assert printed["totals"] == [
        {"currency": "USD", "to_freelancers": 20_000, "releases": 1, "to_clients": 0, "refunds": 0}
    ]
    assert "to freelancers (1 releases)" in cli(sc.db, "forecast").stdout


def test_the_cli_offer_sets_a_milestones_description_and_due_date(sc: Scenario) -> None:
    done = cli(
        sc.db,
        *("offer", "--as", "client:acme", "--freelancer", "ada", "--title", "Site", "--json"),
        *("--milestone", "Design=50000;due=2026-12-01;desc=Wireframes and a style guide"),
        *("--milestone", "Build=70000"),
    )
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)["created"]
    design, build = [sc.row("milestone", c["id"]) for c in created if c["entity"] == "milestone"]
    assert (design["title"], design["amount"]) == ("Design", 50_000)
    assert str(design["due_date"]) == "2026-12-01"
    assert design["description"] == "Wireframes and a style guide"
    assert (build["description"], build["due_date"]) == ("", None)
    bad = cli(
        sc.db,
        *("offer", "--as", "client:acme", "--freelancer", "ada", "--title", "Site"),
        *("--milestone", "Design=50000;when=tomorrow"),
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "due=YYYY-MM-DD" in bad.stderr

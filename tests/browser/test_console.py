"""The operator console in Debian's chromium: sign-in, the inspector through a timer,
disputes, deadline actions, escaping, CSRF, and the pages at 1366 and 800 px."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.engine import Engine as DBEngine

from escrowflow import tokens
from tests.browser.conftest import screenshot
from tests.helpers import check_invariants
from tests.receivers import Receiver
from tests.served import START, Caller, Server, until
from workflows.clock import ManualClock
from workflows.engine import EscrowEngine
from workflows.policy import DEFAULT_DURATIONS, Policy

# Chromium against a served process.
pytestmark = pytest.mark.slow


class Console:
    """A person at the console in the browser, and the marketplace's backend (`caller`)
    acting for the parties over HTTP on the same served process."""

    def __init__(self, page: Page, server: Server, db: DBEngine, caller: Caller) -> None:
        self.page, self.server, self.db, self.caller = page, server, db, caller

    def sign_in(self, *scopes: str, token: str | None = None) -> None:
        """With a new token of `scopes` (or `token` as typed)."""
        self.go("/console/login")
        self.page.fill(
            "#token", token or str(tokens.create(self.db, START, "ops", scopes)["token"])
        )
        self.page.click("button[type=submit]")

    def go(self, path: str) -> Any:
        return self.page.goto(f"{self.server.url}{path}")

    def api(self, path: str, **params: Any) -> Any:
        return self.caller.http.get(path, params=params).json()

    def dispute_before_an_admin(self) -> tuple[int, int]:
        """A disputed refund, and an admin at the disputes queue: (contract, refund)."""
        found = _disputed(self.caller)
        self.sign_in("act:admin")
        self.go("/console/disputes")
        return found


@pytest.fixture
def console(page: Page, server: Server, db: DBEngine, caller: Caller) -> Console:
    return Console(page, server, db, caller)


def _in_review(
    caller: Caller, title: str = "Design", amount: int = 50_000, currency: str = "USD"
) -> tuple[int, int]:
    body = {"freelancer_id": "ada", "title": "Shop", "currency": currency}
    offered = caller.act(
        "client:acme", "/v1/contracts", {**body, "milestones": [{"title": title, "amount": amount}]}
    )
    contract = offered["id"]
    (m,) = [c["id"] for c in offered["created"] if c["entity"] == "milestone"]
    caller.act("freelancer:ada", f"/v1/contracts/{contract}/events/accept")
    caller.act("client:acme", f"/v1/milestones/{m}/events/fund")
    caller.act("freelancer:ada", f"/v1/milestones/{m}/events/submit")
    return contract, m


def _disputed(caller: Caller, amount: int = 50_000, currency: str = "USD") -> tuple[int, int]:
    contract, m = _in_review(caller, amount=amount, currency=currency)
    caller.act("client:acme", f"/v1/milestones/{m}/events/request_changes")
    caller.act("client:acme", f"/v1/contracts/{contract}/events/end")
    refund = caller.act("client:acme", f"/v1/contracts/{contract}/refunds", {"reason": "late"})
    refund_id = refund["created"][0]["id"] if refund["entity"] != "refund" else refund["id"]
    caller.act("freelancer:ada", f"/v1/refunds/{refund_id}/events/dispute", {"reason": "done"})
    return contract, refund_id


def test_a_read_token_signs_in_without_admin_forms_and_a_wrong_token_is_told_so(
    console: Console,
) -> None:
    page, caller = console.page, console.caller
    console.sign_in(token="efk_not_a_token")
    expect(page.get_by_role("alert")).to_contain_text("That token is not valid")
    console.sign_in("read")
    expect(page.locator("h1")).to_have_text("Contracts")
    expect(page.locator("header .who")).to_contain_text("read only")
    _disputed(caller)
    console.go("/console/disputes")
    expect(page.locator("#disputes tbody tr")).to_have_count(1)
    expect(page.locator("form.resolve")).to_have_count(0)  # reading only: no admin form
    console.go("/console/deadlines")
    expect(page.locator("#upcoming tbody tr").first).to_be_visible()
    expect(page.locator("#upcoming form")).to_have_count(0)
    console.sign_in("act:client")
    expect(page.get_by_role("alert")).to_contain_text("needs the scope read or act:admin")


def test_search_by_party_prefix_title_words_and_money_and_the_attention_counts_link_views(
    console: Console,
) -> None:
    page, caller = console.page, console.caller
    reviewing, _m = _in_review(caller)  # "Shop", acme and ada, 500.00 USD held
    disputed, _r = _disputed(caller)  # "Shop" too, its refund disputed
    caller.act(
        "client:bolt", "/v1/contracts", {"freelancer_id": "ada", "title": "Logo", "currency": "EUR"}
    )
    console.sign_in("read")
    expect(page.locator("#attention-disputes")).to_contain_text("1 with a disputed refund")
    expect(page.locator("#attention-held-back")).to_contain_text("0 with a paused")
    expect(page.locator("#contracts tbody tr")).to_have_count(3)

    page.fill("#search input[name=party]", "ACM")
    page.fill("#search input[name=title]", "shop")
    page.click("#search button[type=submit]")
    rows = page.locator("#contracts tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("acme")

    page.fill("#search input[name=held_min]", "500.01")  # no currency chosen
    page.click("#search button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("held_min needs a currency")
    expect(page.locator("#search input[name=held_min]")).to_have_value("500.01")  # kept
    page.select_option("#search select[name=currency]", "USD")
    page.click("#search button[type=submit]")
    expect(page.locator("#contracts tbody")).to_contain_text("No contract matches")
    page.fill("#search input[name=held_min]", "500")
    page.click("#search button[type=submit]")
    expect(rows).to_have_count(2)
    expect(rows.first.locator("td.num")).to_have_text("500.00 USD")

    page.click("#attention-disputes")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("a")).to_have_text(str(disputed))
    page.click("#attention-due-soon")  # the review's auto-approval is 14 days off
    expect(page.locator("#contracts tbody")).to_contain_text("No contract matches")
    page.fill("#search input[name=due_within_days]", "14")
    page.click("#search button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("a")).to_have_text(str(reviewing))


def test_the_inspector_follows_a_milestone_through_its_auto_approval(console: Console) -> None:
    page, server, caller = console.page, console.server, console.caller
    contract, m = _in_review(caller)
    console.sign_in("read")
    console.go(f"/console/contracts/{contract}")
    row = page.locator(f"#milestone-{m}")
    expect(row).to_contain_text("in_review")
    pending = page.locator("#pending tbody")
    expect(pending.locator("tr.deadline")).to_contain_text("auto_approve")
    expect(pending.locator("tr.deadline")).to_contain_text("500.00 USD released to the freelancer")
    countdown = pending.locator("tr.deadline time.countdown")
    due = START + DEFAULT_DURATIONS["review_window"]  # 14 days on the engine's clock
    expect(countdown).to_have_attribute("data-due", due.isoformat())
    # It counts down from the page's load on the browser's own clock: 14 days to the
    # minute, or a minute less once it has ticked, however slowly the page came.
    expect(countdown).to_have_text(re.compile(r"^in (14d 0h 0m|13d 23h 59m)$"))
    expect(pending.locator("tr.reminder")).to_have_count(2)
    expect(pending.locator("tr.reminder").first).to_contain_text("reminder to client acme")
    diagram = page.locator(f'img[data-entity="milestone"][data-id="{m}"]')
    expect(diagram).to_be_visible()
    svg = page.request.get(f"{server.url}/console/diagram/milestone/{m}.svg").text()
    assert "in_review" in svg and "#" in svg  # drawn with the current state highlighted
    screenshot(page, "inspector")

    server.set_clock(START + timedelta(days=14, minutes=1))

    def released() -> bool:
        page.reload()
        return "released" in row.inner_text()

    until(released, "the auto-approval on the page")
    timer = page.locator("#history tr.cause-timer").filter(has_text="auto_approve")
    expect(timer).to_have_count(1)
    expect(timer).to_contain_text("2026-01-19 09:00 UTC")  # due: 14 days after submission
    expect(timer.locator("td").first).to_contain_text("2026-01-19 09:01 UTC")  # fired
    expect(page.locator("#held-now")).to_have_text("0.00 USD")
    expect(page.locator("#ledger tbody tr").last.locator("td.balance")).to_have_text("0.00 USD")


def test_an_admin_resolves_a_dispute_typed_as_money_and_a_split_that_does_not_add_up_fails(
    console: Console,
) -> None:
    """The desk types amounts as people write them; the form says as they type whether
    the split adds up; refused, it keeps what was typed; done, it says what moved."""
    page, db, caller = console.page, console.db, console.caller
    _usd, small = _disputed(caller)  # 500.00 USD
    contract, refund = _disputed(caller, 120_000, "EUR")  # 1,200.00 EUR
    console.sign_in("act:admin")
    console.go("/console/disputes")
    row = page.locator(f"#refund-{refund}")
    expect(row).to_contain_text("client acme, freelancer ada")
    expect(row.locator("td.amount")).to_have_text("1,200.00 EUR")
    expect(row.locator(".why-client")).to_contain_text("late")
    expect(row.locator(".why-freelancer")).to_contain_text("done")
    expect(row).to_contain_text("held 1,200.00 EUR")
    form = page.locator(f"#resolve-{refund} form.resolve")

    def fill(to_client: str, to_freelancer: str, confirm: bool = True) -> None:
        form.locator("input[name=to_client]").fill(to_client)
        form.locator("input[name=to_freelancer]").fill(to_freelancer)
        form.locator("input[name=reason]").fill("half the work was delivered")
        if confirm:
            form.locator("input[name=confirm]").check()

    fill("700.00", "600.00")
    expect(form.locator("output.adds-up")).to_have_text("100.00 EUR too much")
    form.locator("button").click()
    expect(page.get_by_role("alert")).to_contain_text("must add up to the disputed 1,200.00 EUR")
    expect(form.locator("input[name=to_client]")).to_have_value("700.00")  # kept
    assert caller.http.get(f"/v1/refunds/{refund}").json()["state"] == "disputed"
    fill("600.00", "600.00", confirm=False)
    expect(form.locator("output.adds-up")).to_have_text("adds up to 1,200.00 EUR")
    form.locator("button").click()
    expect(page.get_by_role("alert")).to_contain_text("tick the box")
    fill("600.00", "600.00")
    form.locator("button").click()
    expect(page.locator("#notice")).to_have_text(
        f"Refund {refund} resolved: 600.00 EUR to the client, 600.00 EUR to the freelancer."
    )
    expect(page.locator(f"#refund-{small}")).to_be_visible()  # the other still waits
    assert caller.http.get(f"/v1/refunds/{refund}").json()["state"] == "resolved"
    moved = caller.http.get(f"/v1/contracts/{contract}/ledger").json()["items"]
    assert [(e["kind"], e["amount"]) for e in moved[-2:]] == [
        ("refund", 60_000),
        ("release", 60_000),
    ]
    console.go(f"/console/contracts/{contract}")
    shown = [r.inner_text().split("\t") for r in page.locator("#ledger tbody tr").all()]
    assert [(s[1], s[4]) for s in shown] == [
        (e["kind"], f"{e['amount'] // 100:,}.{e['amount'] % 100:02d} EUR") for e in moved
    ]
    check_invariants(db)


def test_an_admin_pauses_and_extends_a_deadline_with_a_reason_in_the_history(
    console: Console,
) -> None:
    page, caller = console.page, console.caller
    contract, m = _in_review(caller)
    deadlines = caller.http.get("/v1/deadlines", params={"event": "auto_approve"}).json()
    (deadline,) = [d["id"] for d in deadlines["items"] if d["entity_id"] == m]
    console.sign_in("act:admin")
    console.go(f"/console/contracts/{contract}")
    row = page.locator(f"#next-{deadline}")
    row.locator("form").first.locator("input[name=reason]").fill("client reported fraud")
    row.locator("form").first.locator("button").click()
    expect(page.locator(f"#paused-{deadline}")).to_be_visible()
    extend = page.locator(f"#paused-{deadline} form").nth(1)
    extend.locator("input[name=by]").fill("P2D")
    extend.locator("input[name=reason]").fill("holiday week")
    extend.locator("button").click()
    expect(page.get_by_role("status")).to_contain_text(f"deadline {deadline} extended")
    console.go(f"/console/contracts/{contract}")
    history = page.locator("#history")
    paused_row = history.locator("tr").filter(has_text="client reported fraud")
    expect(paused_row).to_contain_text("pending → paused")
    expect(paused_row).to_contain_text("admin ops")
    expect(history.locator("tr").filter(has_text="holiday week")).to_contain_text("extend")
    page.fill("#add-note textarea", "client will send the logs by Friday")
    page.locator("#add-note button").click()
    noted = page.locator("#history tr").filter(has_text="client will send the logs by Friday")
    expect(noted).to_contain_text("admin ops")
    moved = caller.http.get("/v1/deadlines", params={"contract_id": contract}).json()["items"]
    assert [d["due_at"] for d in moved if d["id"] == deadline] == [
        (START + timedelta(days=16)).isoformat()
    ]
    console.sign_in("read")  # a read-only viewer sees it held, not counting down (DL1)
    console.go(f"/console/contracts/{contract}")
    held = page.locator(f"#next-{deadline} td.timer-state")
    expect(held).to_contain_text("paused 16 days left when resumed")
    expect(held.locator("time.countdown")).to_have_count(0)
    # One id per milestone on every table: the deadline's and the milestone's agree.
    expect(page.locator(f"#next-{deadline}")).to_contain_text(f"milestone {m} auto_approve")
    expect(page.locator(f"#milestone-{m} td.milestone-ref")).to_contain_text(f"milestone {m} (#1")


def test_a_title_with_a_script_renders_as_text(console: Console) -> None:
    page, caller = console.page, console.caller
    contract, m = _in_review(caller, title="<script>alert(1)</script>")
    dialogs: list[Any] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    console.sign_in("read")
    console.go(f"/console/contracts/{contract}")
    expect(page.locator(f"#milestone-{m}")).to_contain_text("<script>alert(1)</script>")
    assert dialogs == []
    assert page.locator("#milestones script").count() == 0


def test_a_form_posted_without_its_csrf_token_is_refused_and_changes_nothing(
    console: Console,
) -> None:
    page, server, caller = console.page, console.server, console.caller
    contract, refund = console.dispute_before_an_admin()
    forged = page.request.post(
        f"{server.url}/console/refunds/{refund}/resolve",
        form={"to_client": "50000", "to_freelancer": "0"},
    )
    assert forged.status == 403 and "did not come from this console" in forged.text()
    wrong = page.request.post(
        f"{server.url}/console/refunds/{refund}/resolve",
        form={"to_client": "50000", "to_freelancer": "0", "csrf": "guessed"},
    )
    assert wrong.status == 403
    assert caller.http.get(f"/v1/refunds/{refund}").json()["state"] == "disputed"
    assert (
        caller.http.get(f"/v1/contracts/{contract}/ledger").json()["items"][-1]["kind"] == "deposit"
    )


def test_every_page_renders_at_1366_and_800_px_wide_under_a_strict_policy(console: Console) -> None:
    page, server, caller = console.page, console.server, console.caller
    contract, _m = _in_review(caller)
    _disputed(caller)
    console.sign_in("act:admin")
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    for name, path in (
        ("contracts", "/console/contracts"),
        ("inspector", f"/console/contracts/{contract}"),
        ("deadlines", "/console/deadlines"),
        ("disputes", "/console/disputes"),
        ("webhooks", "/console/webhooks"),
        ("workers", "/console/workers"),
        ("terms", "/console/terms"),
    ):
        for width in (1366, 800):
            page.set_viewport_size({"width": width, "height": 800})
            answer = page.goto(f"{server.url}{path}")
            assert answer is not None and answer.status == 200, path
            assert "default-src 'self'" in answer.headers["content-security-policy"]
            expect(page.locator("h1")).to_be_visible()
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (path, width, overflow)
            screenshot(page, f"{name}-{width}")
    assert errors == []  # no script or policy error in any page


def test_signing_out_or_revoking_the_token_ends_the_session(console: Console) -> None:
    page = console.page
    token = tokens.create(console.db, START, "ops", ["read"])
    console.sign_in(token=token["token"])
    console.go("/console/workers")
    expect(page.locator("#backlog")).to_contain_text("nothing is overdue")
    tokens.revoke(console.db, START, token["id"])
    console.go("/console/contracts")
    expect(page.locator("h1")).to_have_text("Sign in")  # revoked: the session is over
    console.sign_in("read")
    expect(page.locator("h1")).to_have_text("Contracts")
    page.click("header .who button")
    expect(page.locator("h1")).to_have_text("Sign in")
    console.go("/console/deadlines")
    expect(page.locator("h1")).to_have_text("Sign in")


def test_an_admin_previews_a_terms_plan_and_applies_it_only_once_confirmed(
    console: Console,
) -> None:
    page, caller = console.page, console.caller
    contract, m = _in_review(caller)
    current = caller.http.get(f"/v1/contracts/{contract}").json()["terms_id"]
    shorter = {**DEFAULT_DURATIONS, "review_window": timedelta(days=10)}
    target = EscrowEngine(
        console.db, Policy(durations=shorter), ManualClock(START), terms_name="ten-day"
    )
    new = target.terms.current()
    target.close()
    console.sign_in("act:admin")
    console.go("/console/terms")
    expect(page.locator(f"#terms-{new.id}")).to_contain_text("P10D")
    page.select_option("#from-terms", str(current))
    page.select_option("#to-terms", str(new.id))
    page.locator("#plan-form button").click()
    expect(page.locator("#plan-status")).to_have_text("planned")
    expect(page.locator("#plan-summary")).to_contain_text("Moves 1 contracts")
    expect(page.locator("#forecast")).to_contain_text("+500.00 USD")
    expect(page.locator("#moves")).to_contain_text("2026-01-15 09:00 UTC")
    screenshot(page, "terms-plan")
    page.fill("#reason", "ten-day review for everyone")
    page.locator("#apply-form button").click()  # not confirmed: refused, nothing moves
    expect(page.get_by_role("alert")).to_contain_text("tick the box")
    expect(page.locator("#plan-status")).to_have_text("planned")
    assert caller.http.get(f"/v1/contracts/{contract}").json()["terms_id"] == current
    page.check("#confirm")
    page.fill("#reason", "ten-day review for everyone")
    page.locator("#apply-form button").click()
    expect(page.locator("#plan-status")).to_have_text("applied")
    expect(page.get_by_role("status")).to_contain_text("1 contracts moved")
    console.go(f"/console/contracts/{contract}")
    expect(page.locator("#contract-terms")).to_have_text("ten-day")
    shown = caller.http.get(f"/v1/milestones/{m}").json()["pending_deadlines"]
    assert [d["due_at"] for d in shown if d["event"] == "auto_approve"] == [
        (START + timedelta(days=10)).isoformat()
    ]
    check_invariants(console.db)


def _preview_a_freeze_of_acme(console: Console) -> None:
    """From the deadlines page (nothing frozen yet): the freeze form for acme's
    auto-approvals, sent; its preview shown."""
    page = console.page
    console.go("/console/deadlines")
    expect(page.locator("#frozen")).to_contain_text("Nothing is frozen")
    page.fill("#freeze-client", "acme")
    page.check("input[name=events][value=auto_approve]")
    page.locator("#freeze-form button").click()
    expect(page.locator("#bulk-status")).to_have_text("previewed")


def test_an_admin_freezes_one_clients_deadlines_from_the_preview_and_thaws_them(
    console: Console,
) -> None:
    page, caller = console.page, console.caller
    frozen = [_in_review(caller) for _ in range(2)]
    console.sign_in("act:admin")
    _preview_a_freeze_of_acme(console)
    expect(page.locator("#bulk-summary")).to_contain_text("Pause 2 deadlines of 2 contracts")
    expect(page.locator("#bulk-money")).to_contain_text("1,000.00 USD")
    screenshot(page, "freeze-preview")
    page.fill("#bulk-reason", "payment provider outage")
    page.locator("#bulk-apply button").click()  # not confirmed: nothing changes
    expect(page.get_by_role("alert")).to_contain_text("tick the box")
    page.check("#bulk-confirm")
    page.fill("#bulk-reason", "payment provider outage")
    page.locator("#bulk-apply button").click()
    expect(page.locator("#bulk-status")).to_have_text("done")
    expect(page.locator("#bulk-results")).to_contain_text("2 done")
    for _contract, m in frozen:
        shown = caller.http.get(f"/v1/milestones/{m}").json()["pending_deadlines"]
        assert [d["id"] for d in shown]  # still pending, now paused (DL1: time kept)
    paused = caller.http.get("/v1/deadlines", params={"event": "auto_approve"}).json()["items"]
    assert all(d["paused"] for d in paused)
    page.locator("#bulk-undo button").click()
    expect(page.locator("#bulk-summary")).to_contain_text("Resume 2 deadlines")
    page.check("#bulk-confirm")
    page.fill("#bulk-reason", "provider back")
    page.locator("#bulk-apply button").click()
    expect(page.locator("#bulk-results")).to_contain_text("2 done")
    resumed = caller.http.get("/v1/deadlines", params={"event": "auto_approve"}).json()["items"]
    assert not any(d["paused"] for d in resumed)


def test_a_freeze_is_a_job_the_page_follows_until_a_worker_has_done_it(
    page: Page, db: DBEngine, tmp_path: Any
) -> None:
    """DL4: on an API-only node the applied freeze waits, running, at 0 of 2; a worker
    starts elsewhere and the page, refreshing itself, shows it through to 2 of 2 done.
    The deadlines page then shows the frozen money, who froze it and since when."""
    api_only = Server(db, tmp_path, "--no-worker")
    worker: Server | None = None
    try:
        api_only.wait_ready()
        caller = Caller(api_only, db, "act:client", "act:freelancer", "read")
        console = Console(page, api_only, db, caller)
        for _ in range(2):
            _in_review(caller)
        console.sign_in("act:admin")
        _preview_a_freeze_of_acme(console)
        page.check("#bulk-confirm")
        page.fill("#bulk-reason", "payment provider outage")
        page.locator("#bulk-apply button").click()
        expect(page.locator("#bulk-status")).to_have_text("running")
        expect(page.locator("#bulk-progress-text")).to_contain_text("0 of 2 deadlines")
        expect(page.locator("#bulk-progress")).to_have_attribute("max", "2")
        screenshot(page, "freeze-running")
        worker = Server(db, tmp_path, command="worker")
        worker.wait_started(db)
        expect(page.locator("#bulk-status")).to_have_text("done", timeout=30_000)
        expect(page.locator("#bulk-progress-text")).to_have_text("2 of 2 deadlines")
        expect(page.locator("#bulk-results")).to_contain_text("2 done")
        screenshot(page, "freeze-done")
        console.go("/console/deadlines")
        expect(page.locator("#frozen-1")).to_contain_text("1,000.00 USD in 2 deadlines")
        expect(page.locator("#frozen-1")).to_contain_text("paused by ops")
        expect(page.locator("#frozen-1")).to_contain_text("since 2026-01-05 09:00")
        caller.http.close()
    finally:
        if worker is not None:
            worker.kill()
        api_only.kill()


def test_a_resolution_above_the_threshold_waits_in_the_console_for_a_second_admin(
    page: Page, db: DBEngine, tmp_path: Any
) -> None:
    """Alice resolves a 500.00 USD dispute with the threshold at 100: nothing moves, the
    disputes page says it waits and offers her no approve button; Bob approves it."""
    served = Server(db, tmp_path, ESCROWFLOW_SECOND_APPROVAL_ABOVE="100")
    try:
        served.wait_ready()
        caller = Caller(served, db, "act:client", "act:freelancer", "read")
        console = Console(page, served, db, caller)
        _contract, refund = _disputed(caller)
        alice = str(tokens.create(db, START, "alice", ["act:admin"])["token"])
        bob = str(tokens.create(db, START, "bob", ["act:admin"])["token"])
        console.sign_in(token=alice)
        console.go("/console/disputes")
        form = page.locator(f"#resolve-{refund} form.resolve")
        form.locator("input[name=to_client]").fill("500.00")
        form.locator("input[name=reason]").fill("nothing was delivered")
        form.locator("input[name=confirm]").check()
        form.locator("button").click()
        expect(page.locator("#notice")).to_contain_text("waits for a second admin")
        expect(page.locator("#notice")).to_contain_text("500.00 USD")
        row = page.locator("#approvals tbody tr")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("yours: another admin approves it")
        expect(row.locator("form.approve")).to_have_count(0)
        assert caller.http.get(f"/v1/refunds/{refund}").json()["state"] == "disputed"
        screenshot(page, "approval-waiting")
        console.sign_in(token=bob)
        console.go("/console/disputes")
        page.locator("#approvals form.approve button").click()
        expect(page.locator("#notice")).to_contain_text("is resolved, 500.00 USD moved")
        expect(page.locator("#approvals")).to_have_count(0)
        assert caller.http.get(f"/v1/refunds/{refund}").json()["state"] == "resolved"
        caller.http.close()
    finally:
        served.kill()


def test_history_reads_as_changes_in_money_not_as_python(console: Console) -> None:
    page, caller = console.page, console.caller
    body = {"freelancer_id": "ada", "title": "Shop", "currency": "EUR"}
    offered = caller.act(
        "client:acme", "/v1/contracts", {**body, "milestones": [{"title": "A", "amount": 120_000}]}
    )
    contract = offered["id"]
    (m,) = [c["id"] for c in offered["created"] if c["entity"] == "milestone"]
    caller.act("freelancer:ada", f"/v1/contracts/{contract}/events/accept")
    caller.act("client:acme", f"/v1/milestones/{m}/events/fund")
    caller.act("client:acme", f"/v1/milestones/{m}/events/open_change_request", {"amount": 150_000})
    console.sign_in("read")
    console.go(f"/console/contracts/{contract}")
    changes = page.locator("#history td.changes")
    expect(changes.filter(has_text="1,500.00 EUR").first).to_be_visible()
    texts = " ".join(changes.all_inner_texts())
    assert "{" not in texts and "'" not in texts, texts  # no Python reprs
    href = page.locator("#dossier-csv").get_attribute("href")
    sheet = page.request.get(f"{console.server.url}{href}")  # with the console's session
    assert sheet.status == 200 and "open_change_request" in sheet.text()
    assert "1,200.00 EUR" in sheet.text()  # the deposit, as people read it


def test_a_dead_letter_shows_its_payload_and_answer_and_all_are_replayed_at_once(
    page: Page, db: DBEngine, tmp_path: Any
) -> None:
    receiver = Receiver()
    receiver.status = 500  # refuses everything
    receiver.start()
    served = Server(
        db, tmp_path, ESCROWFLOW_WEBHOOK_ALLOW_PRIVATE="true", ESCROWFLOW_WEBHOOK_MAX_ATTEMPTS="1"
    )
    try:
        served.wait_ready()
        caller = Caller(served, db, "act:client", "act:freelancer", "read", "webhooks")
        made = caller.http.post("/v1/webhooks", json={"url": receiver.url})
        assert made.status_code == 201, made.text
        caller.offer()
        until(
            lambda: bool(caller.http.get("/v1/webhooks/deliveries", params={"status": "dead"})
                         .json()["items"]),
            "a dead letter",
        )  # fmt: skip
        console = Console(page, served, db, caller)
        console.sign_in("act:admin")
        console.go("/console/webhooks?status=dead")
        expect(page.locator("#deliveries thead")).to_contain_text("Next try")
        row = page.locator("#deliveries tbody tr").first
        expect(row.locator("td.last-error")).to_contain_text("HTTP 500")
        expect(row).to_contain_text("none: dead-lettered")
        row.locator("details summary").click()
        expect(row.locator("pre.payload")).to_contain_text('"currency": "USD"')
        dead = page.locator("#deliveries tbody tr").count()
        page.locator("#replay-all button").click()
        expect(page.locator("#notice")).to_have_text(
            f"{dead} dead letters queued to be sent again."
        )
        caller.http.close()
    finally:
        served.kill()
        receiver.close()

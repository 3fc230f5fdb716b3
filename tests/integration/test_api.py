"""The HTTP API on a real server: parties act over HTTP, errors are clear, nothing changes
on a refusal, retries are safe, the feed is ordered."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from escrowflow import tokens
from storage import models
from storage.dialect import adapter_of
from storage.errors import Unauthenticated
from tests.conftest import table_counts
from tests.helpers import Scenario
from tests.live import Api

CLIENT = "client:acme"
FREELANCER = "freelancer:ada"


@pytest.fixture
def web(api: Api) -> str:
    """The marketplace's web backend: acts for clients and freelancers."""
    return api.token("act:client", "act:freelancer", service="web")


def offer(api: Api, token: str, *amounts: int, key: str | None = None) -> dict[str, Any]:
    body = {
        "freelancer_id": "ada",
        "title": "Landing page",
        "currency": "USD",
        "milestones": [{"title": f"M{i}", "amount": a} for i, a in enumerate(amounts, 1)],
    }
    result: dict[str, Any] = api.ok(
        "POST", "/v1/contracts", token=token, actor=CLIENT, json=body, key=key
    )
    return result


def milestones_of(result: dict[str, Any]) -> list[int]:
    return [c["id"] for c in result["created"] if c["entity"] == "milestone"]


def test_a_milestone_is_funded_submitted_and_released_over_http(
    api: Api, web: str, sc: Scenario
) -> None:
    contract = offer(api, web, 50_000)
    (milestone,) = milestones_of(contract)
    api.ok("POST", f"/v1/contracts/{contract['id']}/events/accept", token=web, actor=FREELANCER)
    api.ok("POST", f"/v1/milestones/{milestone}/events/fund", token=web, actor=CLIENT)
    api.ok("POST", f"/v1/milestones/{milestone}/events/submit", token=web, actor=FREELANCER)

    seen = api.request("GET", f"/v1/milestones/{milestone}", token=web, actor=CLIENT)
    assert seen.json()["state"] == "in_review"
    assert seen.json()["allowed_events"] == ["request_changes", "release", "deposit"]
    assert [d["event"] for d in seen.json()["pending_deadlines"]] == ["auto_approve"]
    released = api.request(
        "POST",
        f"/v1/milestones/{milestone}/events/release",
        token=web,
        actor=CLIENT,
        if_match=seen.headers["ETag"],
    )
    assert released.status_code == 200, released.text
    assert released.json()["state"] == "released"
    assert released.headers["ETag"] == f'"v{released.json()["version"]}"'

    ledger = api.ok("GET", f"/v1/contracts/{contract['id']}/ledger", token=web)["items"]
    assert [(e["kind"], e["amount"]) for e in ledger] == [("deposit", 50_000), ("release", 50_000)]
    history = api.ok("GET", f"/v1/milestones/{milestone}/history", token=web)["items"]
    assert [h["event"] for h in history] == ["create", "fund", "submit", "release"]
    assert sc.state("milestone", milestone) == "released"


def test_milestones_are_added_edited_reordered_and_deleted_by_name(api: Api, web: str) -> None:
    contract = offer(api, web, 50_000)["id"]
    added = api.request(
        "POST",
        f"/v1/contracts/{contract}/milestones",
        token=web,
        actor=CLIENT,
        json={"milestones": [{"title": "Build", "amount": 70_000}, {"title": "QA", "amount": 900}]},
    )
    assert added.status_code == 201, added.text
    first, second = milestones_of(added.json())
    edited = api.ok(
        "PATCH", f"/v1/milestones/{first}", token=web, actor=CLIENT, json={"amount": 80_000}
    )
    assert edited["event"] == "edit"
    api.ok(
        "PUT",
        f"/v1/contracts/{contract}/milestones/order",
        token=web,
        actor=CLIENT,
        json={"order": [second, first, 1]},
    )
    assert (
        api.ok("DELETE", f"/v1/milestones/{second}", token=web, actor=CLIENT)["state"] == "deleted"
    )
    shown = api.ok("GET", f"/v1/milestones/{first}", token=web)
    assert shown["fields"]["amount"] == 80_000
    assert shown["fields"]["position"] == 2


def test_no_token_or_a_revoked_one_is_401_and_changes_nothing(
    api: Api, web: str, sc: Scenario
) -> None:
    contract = offer(api, web, 50_000)["id"]
    before = sc.snapshot()
    for token in (None, "efk_not-a-token"):
        answer = api.request(
            "POST", f"/v1/contracts/{contract}/events/accept", token=token, actor=FREELANCER
        )
        assert answer.status_code == 401
        assert answer.json()["code"] in ("unauthenticated", "invalid_token")
        assert answer.headers["WWW-Authenticate"] == "Bearer"

    assert sc.snapshot() == before
    tokens.revoke(api.engine.db, api.engine.clock.now(), tokens.listing(api.engine.db)[0]["id"])
    before = sc.snapshot()
    answer = api.request(
        "POST", f"/v1/contracts/{contract}/events/accept", token=web, actor=FREELANCER
    )
    assert (answer.status_code, answer.json()["code"]) == (401, "invalid_token")
    answer = api.request("GET", f"/v1/contracts/{contract}", token=web)
    assert (answer.status_code, answer.json()["code"]) == (401, "invalid_token")
    assert sc.snapshot() == before


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/contracts/99/events/accept", None, 404, "contract_not_found"),
        ("/v1/widgets/1/events/accept", None, 404, "unknown_entity"),
        ("/v1/contracts/1/events/fly", None, 404, "unknown_event"),
        ("/v1/contracts/1/events/end", None, 409, "event_not_allowed_in_state"),
        (
            "/v1/contracts/1/milestones",
            {"milestones": [{"title": "x", "amount": 5.0}]},
            422,
            "invalid_request",
        ),
        (
            "/v1/contracts/1/milestones",
            {"milestones": [{"title": "x", "amount": 10}]},
            422,
            "amount_below_minimum",
        ),
        ("/v1/contracts/1/milestones", {"milestones": [], "extra": 1}, 422, "invalid_request"),
    ],
)
def test_bad_requests_get_their_code_and_change_nothing(
    api: Api, web: str, sc: Scenario, path: str, body: Any, status: int, code: str
) -> None:
    offer(api, web, 50_000)
    before = sc.snapshot()
    answer = api.request("POST", path, token=web, actor=CLIENT, json=body)
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    assert answer.json()["message"]
    assert sc.snapshot() == before


def test_malformed_json_if_match_and_actor_are_refused_plainly(
    api: Api, web: str, sc: Scenario
) -> None:
    contract = offer(api, web, 50_000)["id"]
    before = sc.snapshot()
    raw = api.http.post(
        f"/v1/contracts/{contract}/milestones",
        content=b'{"milestones": [',
        headers={
            "Authorization": f"Bearer {web}",
            "Escrowflow-Actor": CLIENT,
            "Content-Type": "application/json",
        },
    )
    assert (raw.status_code, raw.json()["code"]) == (400, "malformed_json")
    accept = f"/v1/contracts/{contract}/events/accept"
    bad_etag = api.request("POST", accept, token=web, actor=FREELANCER, if_match="yesterday")
    assert (bad_etag.status_code, bad_etag.json()["code"]) == (400, "invalid_if_match")
    stale = api.request("POST", accept, token=web, actor=FREELANCER, if_match='"v7"')
    assert (stale.status_code, stale.json()["code"]) == (412, "version_conflict")
    no_actor = api.request("POST", f"/v1/contracts/{contract}/events/accept", token=web)
    assert (no_actor.status_code, no_actor.json()["code"]) == (422, "actor_required")
    system = api.request(
        "POST", f"/v1/contracts/{contract}/events/accept", token=web, actor="system:x"
    )
    assert (system.status_code, system.json()["code"]) == (403, "system_role_reserved")
    assert sc.snapshot() == before


def test_a_replayed_idempotency_key_answers_the_first_result(
    api: Api, web: str, sc: Scenario
) -> None:
    first = offer(api, web, 50_000, key="offer-1")
    again = api.request(
        "POST",
        "/v1/contracts",
        token=web,
        actor=CLIENT,
        key="offer-1",
        json={
            "freelancer_id": "ada",
            "title": "Landing page",
            "currency": "USD",
            "milestones": [{"title": "M1", "amount": 50_000}],
        },
    )
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first["id"]
    assert len(sc.rows("contracts")) == 1
    reused = api.request(
        "POST",
        "/v1/contracts",
        token=web,
        actor=CLIENT,
        key="offer-1",
        json={"freelancer_id": "bob", "title": "Other", "currency": "USD"},
    )
    assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")
    # Keys belong to the service that sent them: another service's key cannot collide.
    other = api.token("act:client", service="mobile")
    separate = offer(api, other, 50_000, key="offer-1")
    assert separate["id"] != first["id"]


def _hold_the_contract(
    engine: Any, contract_id: int, release: threading.Event, held: threading.Event
) -> None:
    """Keep the contract locked, as a slow transaction would, until told to let go."""
    with engine.db.connect() as conn:
        conn = conn.execution_options(escrowflow_writes=True)
        with conn.begin():
            query = sa.select(models.CONTRACTS.c.id).where(models.CONTRACTS.c.id == contract_id)
            if adapter_of(conn).locks_rows:
                query = query.with_for_update()
            else:  # BEGIN IMMEDIATE took the write lock; touch the row for good measure
                conn.execute(
                    models.CONTRACTS.update()
                    .where(models.CONTRACTS.c.id == contract_id)
                    .values(version=models.CONTRACTS.c.version)
                )
            conn.execute(query)
            held.set()
            release.wait(10)


def _until(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the server never finished the first request"
        time.sleep(0.02)


MUTATIONS = {
    "fund": ("POST", "/v1/milestones/{m}/events/fund", None),
    "release part": ("POST", "/v1/milestones/{m}/events/release", {"amount": 20_000}),
    "add milestones": (
        "POST",
        "/v1/contracts/{c}/milestones",
        {"milestones": [{"title": "X", "amount": 9_000}]},
    ),
    "change request": ("POST", "/v1/milestones/{m}/change_requests", {"amount": 60_000}),
    "refund request": ("POST", "/v1/contracts/{c}/refunds", {"reason": "stop"}),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_a_retry_after_a_client_timeout_never_doubles_an_effect(
    api: Api, web: str, sc: Scenario, name: str
) -> None:
    contract = offer(api, web, 50_000)
    c, (m,) = contract["id"], milestones_of(contract)
    api.ok("POST", f"/v1/contracts/{c}/events/accept", token=web, actor=FREELANCER)
    if name != "fund":
        api.ok("POST", f"/v1/milestones/{m}/events/fund", token=web, actor=CLIENT)
    if name == "refund request":
        api.ok(
            "POST",
            f"/v1/milestones/{m}/events/release",
            token=web,
            actor=CLIENT,
            json={"amount": 20_000},
        )
    method, path, body = MUTATIONS[name]
    path = path.format(c=c, m=m)
    before = table_counts(api.engine.db)

    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_the_contract, args=(api.engine, c, release, held))
    holder.start()
    assert held.wait(10)
    with pytest.raises(httpx.ReadTimeout):  # the client gives up; the server carries on
        api.request(method, path, token=web, actor=CLIENT, json=body, key=f"k-{name}", timeout=0.3)
    release.set()
    holder.join()
    _until(lambda: table_counts(api.engine.db)["history"] > before["history"])
    retried = api.request(method, path, token=web, actor=CLIENT, json=body, key=f"k-{name}")
    assert retried.status_code in (200, 201), retried.text
    assert retried.headers.get("Idempotent-Replayed") == "true"
    once = table_counts(api.engine.db)
    api.request(method, path, token=web, actor=CLIENT, json=body, key=f"k-{name}")
    assert table_counts(api.engine.db) == once  # a third try changes nothing either
    sc.check_invariants()
    ledger = sc.ledger(c)
    assert len(ledger) == len(set(ledger)) or name == "add milestones"


def test_the_feed_pages_through_every_event_in_order(api: Api, web: str) -> None:
    reader = api.token("read", service="notifications")
    contract = offer(api, web, 50_000)
    (m,) = milestones_of(contract)
    api.ok("POST", f"/v1/contracts/{contract['id']}/events/accept", token=web, actor=FREELANCER)
    api.ok("POST", f"/v1/milestones/{m}/events/fund", token=web, actor=CLIENT)
    seen: list[dict[str, Any]] = []
    cursor = "0"
    while True:  # the feed's next_cursor is its position: pass it as cursor (or after)
        page = api.ok("GET", "/v1/events", token=reader, params={"cursor": cursor, "limit": 2})
        if not page["items"]:
            assert page["next_cursor"] == cursor  # at the end, it stays where it was
            break
        seen += page["items"]
        cursor = page["next_cursor"]
    assert [e["type"] for e in seen] == [
        "contract.create",
        "milestone.create",
        "contract.add_milestones",
        "contract.accept",
        "milestone.fund",
    ]
    assert [e["position"] for e in seen] == list(range(1, 6))
    only = api.ok("GET", "/v1/events", token=reader, params={"type": "milestone.*"})
    assert [e["type"] for e in only["items"]] == ["milestone.create", "milestone.fund"]
    assert only["next_cursor"] == "5"
    assert (
        api.ok("GET", "/v1/events", token=reader, params={"after": 4})["items"][0]["position"] == 5
    )
    bad = api.request("GET", "/v1/events", token=reader, params={"cursor": "Wzdd"})
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_cursor")


@pytest.mark.postgresql_only
def test_the_feed_never_skips_an_event_that_commits_late(api: Api, web: str, sc: Scenario) -> None:
    """PostgreSQL hands out ids at insert: id n can commit after id n+1 is read."""
    reader = api.token("read", service="notifications")
    c = offer(api, web, 50_000)["id"]
    other = offer(api, web, 50_000)["id"]  # the late transaction's FK locks c
    page = api.ok("GET", "/v1/events", token=reader)
    cursor = page["next_cursor"]
    with api.engine.db.connect() as late, late.begin():
        late.execute(
            models.HISTORY.insert().values(
                contract_id=c,
                entity="contract",
                entity_id=c,
                event="note",
                to_state="offer",
                version=1,
                actor_role="admin",
                actor_party="ops",
                cause="request",
                at=sc.clock.now(),
                payload={},
            )
        )
        history_id = late.execute(sa.select(sa.func.max(models.HISTORY.c.id))).scalar_one()
        late.execute(
            models.OUTBOX.insert().values(
                event_id="late",
                contract_id=c,
                history_id=history_id,
                type="contract.note",
                entity="contract",
                entity_id=c,
                recipients=[],
                at=sc.clock.now(),
                data={},
            )
        )
        # Meanwhile a later transaction commits a higher id, and a reader reads it.
        api.ok("POST", f"/v1/contracts/{other}/events/accept", token=web, actor=FREELANCER)
        page = api.ok("GET", "/v1/events", token=reader, params={"after": cursor})
        assert [e["type"] for e in page["items"]] == ["contract.accept"]
        cursor = page["next_cursor"]
    page = api.ok("GET", "/v1/events", token=reader, params={"after": cursor})
    assert [e["type"] for e in page["items"]] == ["contract.note"]


def test_health_readiness_and_metrics(api: Api, web: str) -> None:
    assert api.ok("GET", "/healthz", token=None) == {"status": "ok", "detail": None}
    ready = api.request("GET", "/readyz", token=None)
    # The suite builds its schema from the models, not the migrations: not "migrated".
    assert ready.status_code == 503 and ready.json()["status"] == "not_migrated"
    offer(api, web, 50_000)
    metrics = api.request("GET", "/metrics", token=None).text
    assert (
        'escrowflow_transitions_total{cause="request",entity="contract",event="create"} 1.0'
        in metrics
    )
    assert "escrowflow_deadlines_backlog 0.0" in metrics
    assert 'escrowflow_webhook_deliveries{status="dead"} 0.0' in metrics


def test_a_cached_token_is_refused_once_its_cache_time_is_up(api: Api, web: str) -> None:
    now = [0.0]
    cache = tokens.TokenCache(5.0, monotonic=lambda: now[0])
    header = f"Bearer {web}"
    assert cache.authenticate(api.engine.db, header).service == "web"
    tokens.revoke(api.engine.db, api.engine.clock.now(), tokens.listing(api.engine.db)[0]["id"])
    assert cache.authenticate(api.engine.db, header).service == "web"  # within the 5 s
    now[0] = 5.0
    with pytest.raises(Unauthenticated):
        cache.authenticate(api.engine.db, header)


def test_webhook_subscriptions_are_managed_over_http_with_the_webhooks_scope(
    api: Api, web: str
) -> None:
    admin = api.token("webhooks", service="payments")
    reader = api.token("read", service="notifications")
    body = {"url": "https://payments.internal/hook", "event_types": ["milestone.*"]}
    refused = api.request("POST", "/v1/webhooks", token=reader, json=body)
    assert (refused.status_code, refused.json()["code"]) == (403, "scope_missing")
    bad = api.request("POST", "/v1/webhooks", token=admin, json={**body, "url": "ftp://x"})
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_url")
    created = api.request("POST", "/v1/webhooks", token=admin, json=body)
    assert created.status_code == 201 and created.json()["secret"].startswith("whsec_")
    listed = api.ok("GET", "/v1/webhooks", token=admin)["items"]
    assert [(s["id"], s["url"]) for s in listed] == [(created.json()["id"], body["url"])]
    assert "secret" not in listed[0]
    offer(api, web, 50_000)  # milestone.create is owed to it once sequenced
    api.ok("GET", "/v1/events", token=reader)
    owed = api.ok("GET", "/v1/webhooks/deliveries", token=admin, params={"status": "pending"})[
        "items"
    ]
    assert [d["type"] for d in owed] == ["milestone.create"]
    not_dead = api.request("POST", f"/v1/webhooks/deliveries/{owed[0]['id']}/replay", token=admin)
    assert (not_dead.status_code, not_dead.json()["code"]) == (404, "delivery_not_dead")
    gone = api.request("DELETE", f"/v1/webhooks/{created.json()['id']}", token=admin)
    assert gone.status_code == 204
    assert api.ok("GET", "/v1/webhooks", token=admin)["items"] == []
    dead = api.ok("GET", "/v1/webhooks/deliveries", token=admin, params={"status": "dead"})["items"]
    assert [d["last_error"] for d in dead] == ["subscription removed"]


def test_a_long_idempotency_key_of_a_long_named_service_still_protects_a_retry(
    api: Api, sc: Scenario
) -> None:
    token = api.token("act:client", service="s" * 100)
    first = offer(api, token, 50_000, key="k" * 150)
    again = offer(api, token, 50_000, key="k" * 150)
    assert again["id"] == first["id"] and again["replayed"]
    assert len(sc.rows("contracts")) == 1


def test_readiness_names_the_failed_check_not_the_driver(tmp_path: Any) -> None:
    from storage.db import make_engine
    from tests.conftest import database_settings
    from tests.live import live_server
    from workflows.clock import ManualClock
    from workflows.engine import EscrowEngine
    from workflows.policy import Policy

    missing = make_engine(database_settings(f"sqlite:///{tmp_path}/no/such/dir/x.db"))
    with live_server(EscrowEngine(missing, Policy(reminders={}), ManualClock())) as url:
        ready = httpx.get(f"{url}/readyz", timeout=30)
    missing.dispose()
    assert ready.status_code == 503 and ready.json()["status"] == "database_unavailable"
    assert "unable to open" not in ready.text and "sqlite" not in ready.text.lower()


def test_deliveries_are_listed_a_page_at_a_time(api: Api, web: str) -> None:
    admin = api.token("webhooks", service="payments")
    api.ok("POST", "/v1/webhooks", token=admin, json={"url": "https://hooks.example.com/a"})
    for _ in range(3):
        offer(api, web, 50_000)  # three events each
    api.ok("GET", "/v1/events", token=admin)  # sequenced: deliveries owed
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.ok("GET", "/v1/webhooks/deliveries", token=admin, params=params)
        assert len(page["items"]) <= 2
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    with api.engine.db.connect() as conn:
        owed = conn.execute(sa.select(models.WEBHOOK_DELIVERIES.c.id)).scalars().all()
    assert len(owed) == 9  # three offers, three events each
    assert seen == sorted(owed)  # every one once, in order, no gap
    too_many = api.request("GET", "/v1/webhooks/deliveries", token=admin, params={"limit": 201})
    assert too_many.status_code == 422


def test_docs_and_redoc_work_offline_every_asset_served_here(api: Api) -> None:
    """/docs and /redoc name no other host: every script, style and icon they load is
    served by this process (Swagger UI and ReDoc come with the `fastapi-offline` package)."""
    for page in ("/docs", "/redoc"):
        html = api.request("GET", page, token=None)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", html.text, re.I), page
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
        assets += re.findall(r"""url: ['"]([^'"]+)['"]""", html.text)  # the OpenAPI document
        assert any(a.endswith(".js") for a in assets), (page, assets)
        for asset in assets:
            served = api.request("GET", asset, token=None)
            assert served.status_code == 200 and served.content, (page, asset)


def test_the_client_adds_reorders_edits_and_deletes_milestones_over_http(
    api: Api, web: str
) -> None:
    contract = offer(api, web, 10_000, 20_000)
    first, second = milestones_of(contract)
    path = f"/v1/contracts/{contract['id']}/milestones"
    added = api.request(
        "POST",
        path,
        token=web,
        actor=CLIENT,
        json={"milestones": [{"title": "M3", "amount": 5_000}]},
    )
    assert added.status_code == 201, added.text
    assert added.json()["event"] == "add_milestones"
    (third,) = [c["id"] for c in added.json()["created"] if c["entity"] == "milestone"]
    order = [third, second, first]
    reordered = api.ok("PUT", f"{path}/order", token=web, actor=CLIENT, json={"order": order})
    assert reordered["event"] == "reorder_milestones"
    edited = api.request(
        "PATCH", f"/v1/milestones/{second}", token=web, actor=CLIENT, json={"amount": 25_000}
    )
    assert edited.status_code == 200 and edited.headers["ETag"] == f'"v{edited.json()["version"]}"'
    deleted = api.request("DELETE", f"/v1/milestones/{first}", token=web, actor=CLIENT)
    assert deleted.status_code == 200 and deleted.json()["event"] == "delete"

    shown = api.ok("GET", f"/v1/milestones/{second}", token=web)
    assert shown["fields"]["amount"] == 25_000, shown
    again = api.request("DELETE", f"/v1/milestones/{first}", token=web, actor=CLIENT)
    assert again.status_code in (404, 409), again.text
    no_body = api.request("PATCH", f"/v1/milestones/{second}", token=web, actor=CLIENT)
    assert no_body.status_code == 422 and no_body.json()["code"] == "invalid_request"

"""The three defects found from outside, as a new user meets them: over HTTP against the
served process (its own worker firing the timers) and through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.engine import Engine as DBEngine

from escrowflow import tokens
from tests.helpers import FREELANCER, Scenario, check_invariants
from tests.served import START, Server, until
from workflows.clock import ManualClock
from workflows.engine import EscrowEngine
from workflows.policy import Policy

FIRE = [sys.executable, "-m", "escrowflow", "fire", "milestone"]


class Client:
    def __init__(self, server: Server, db: DBEngine) -> None:
        token = tokens.create(db, START, "web", ["act:client", "act:freelancer"])["token"]
        self.http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})

    def act(self, party: str, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, path, json=body, headers={"Escrowflow-Actor": party})
        assert response.status_code in (200, 201), response.text
        return response.json()

    def offer(self, **milestones: int) -> Any:
        """client:acme offers ada a contract with these milestones (title=amount)."""
        body = {
            "freelancer_id": "ada",
            "title": "Shop",
            "currency": "USD",
            "milestones": [{"title": t, "amount": a} for t, a in milestones.items()],
        }
        return self.act("client:acme", "POST", "/v1/contracts", body)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()


def _created(result: dict[str, Any], entity: str) -> list[int]:
    return [c["id"] for c in result["created"] if c["entity"] == entity]


def test_ms10_auto_approval_after_an_accepted_decrease_pays_3000_and_keeps_2000_over_http(
    server: Server, db: DBEngine
) -> None:
    with Client(server, db) as api:
        offered = api.offer(Design=5_000)
        c, (m,) = offered["id"], _created(offered, "milestone")
        api.act("freelancer:ada", "POST", f"/v1/contracts/{c}/events/accept")
        api.act("client:acme", "POST", f"/v1/milestones/{m}/events/fund")
        opened = api.act(
            "client:acme", "POST", f"/v1/milestones/{m}/change_requests", {"amount": 3_000}
        )
        (cr,) = _created(opened, "change_request")
        api.act("freelancer:ada", "POST", f"/v1/change_requests/{cr}/events/accept")
        fields = api.get(f"/v1/milestones/{m}")["fields"]
        assert (fields["amount"], fields["escrow"]) == (3_000, 5_000)
        api.act("freelancer:ada", "POST", f"/v1/milestones/{m}/events/submit")

        (prediction,) = api.get(f"/v1/contracts/{c}/next")["items"]
        assert prediction["event"] == "auto_approve"
        assert prediction["money"]["amount"] == 3_000
        assert prediction["money"]["stays_for_client"] == 2_000
        assert "30.00 USD released" in prediction["summary"]
        assert "20.00 USD stays in escrow for the client" in prediction["summary"]

        server.set_clock(START + timedelta(days=14, seconds=1))
        until(lambda: api.get(f"/v1/milestones/{m}")["state"] == "released", "the auto-approval")
        ledger = [(e["kind"], e["amount"]) for e in api.get(f"/v1/contracts/{c}/ledger")["items"]]
        assert ledger == [("deposit", 5_000), ("release", 3_000)]  # what `next` promised
        escrow = api.get(f"/v1/contracts/{c}")["escrow"]
        assert (escrow["released"], escrow["held"], escrow["credit"]) == (3_000, 2_000, 2_000)
        check_invariants(db)
        assert server.stop() == 0


def test_fp2_nt1_a_proposal_is_readable_before_answering_over_http(
    server: Server, db: DBEngine
) -> None:
    with Client(server, db) as api:
        offered = api.offer(Design=5_000, Build=900)
        c, (design, build) = offered["id"], _created(offered, "milestone")
        proposed = api.act(
            "freelancer:ada",
            "POST",
            f"/v1/contracts/{c}/proposals",
            {
                "items": [
                    {"action": "edit", "milestone_id": design, "amount": 6_000},
                    {"action": "delete", "milestone_id": build},
                    {"action": "add", "title": "Launch", "amount": 700},
                ]
            },
        )
        (proposal,) = _created(proposed, "proposal")
        items = api.get(f"/v1/proposals/{proposal}")["fields"]["items"]
        assert [(i["action"], i["milestone_id"]) for i in items] == [
            ("edit", design),
            ("delete", build),
            ("add", None),
        ]
        assert items[0]["changes"] == {"amount": {"before": 5_000, "after": 6_000}}
        assert items[1]["changes"]["title"] == {"before": "Build", "after": None}
        assert items[2]["changes"]["title"] == {"before": None, "after": "Launch"}
        (created,) = [
            h
            for h in api.get(f"/v1/proposals/{proposal}/history")["items"]
            if h["event"] == "create"
        ]
        assert created["payload"]["items"] == items
        events = api.get("/v1/events", type="proposal.create")["items"]
        assert [e["data"]["items"] for e in events] == [items]
        assert server.stop() == 0


def test_pa1_x10_the_cli_refuses_to_act_as_system_and_changes_nothing(db: DBEngine) -> None:
    clock = ManualClock()
    sc = Scenario(EscrowEngine(db, Policy(reminders={}), clock), clock)
    _contract, m = sc.in_review()
    before = sc.snapshot()
    env = {**os.environ, "ESCROWFLOW_DATABASE_URL": db.url.render_as_string(hide_password=False)}
    for actor in ("system:mallory", "system:escrowflow"):
        done = subprocess.run(
            [*FIRE, str(m), "auto_approve", "--as", actor],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 4, done.stderr  # permission denied
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert "nobody acts as system" in done.stderr
    assert sc.snapshot() == before
    assert sc.state("milestone", m) == "in_review"
    sc.fire("milestone", m, "request_changes")  # the milestone is still the parties' to move
    assert FREELANCER.party == "ada"

"""An incident freeze through the served process (DL4, DL1): 300 contracts under review
across three clients. The dispute desk freezes one client's auto-approvals over HTTP (the
preview's count and money are the forecast's for that client) and the real worker carries
the freeze out as a background job. The clock passes every due date: the other clients'
are paid, the frozen ones are not. Five days later the freeze is undone: each frozen
deadline falls due the time it had left after the resume, and every contract pays what
the reference model (tests/model, no engine code) says, to whom it says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine as DBEngine

from escrowflow import tokens
from storage.models import CONTRACTS, DEADLINES, HISTORY, LEDGER, MILESTONES
from tests.model.escrow import Model
from tests.served import START, Server, until

CLIENTS = {"acme": "ada", "globex": "bo", "initech": "cy"}  # client: freelancer
FROZEN = "globex"
CONTRACTS_EACH = 100
SPACING = timedelta(minutes=10)  # submissions, one after another
FREEZE_AT = START + timedelta(days=3)  # after the last submission
PAST_DUE = START + timedelta(days=17)  # after the last original due date
THAW_AT = PAST_DUE + timedelta(days=5)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


class Desk:
    """The marketplace's backend and the dispute desk, over HTTP."""

    def __init__(self, server: Server, db: DBEngine) -> None:
        made = tokens.create(db, START, "market", ["act:client", "act:freelancer", "read"])
        admin = tokens.create(db, START, "desk", ["act:admin"])
        self.market = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {made['token']}"}
        )
        self.desk = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {admin['token']}", "Escrowflow-Actor": "admin:desk"},
        )

    def act(self, party: str, path: str, body: Any = None) -> Any:
        response = self.market.post(path, json=body, headers={"Escrowflow-Actor": party})
        assert response.status_code in (200, 201), response.text
        return response.json()

    def bulk(self, path: str = "", body: Any = None, status: int = 201) -> Any:
        response = self.desk.post(f"/v1/deadlines/bulk{path}", json=body)
        assert response.status_code == status, response.text
        return response.json()

    def shown(self, bulk_id: int) -> Any:
        return self.desk.get(f"/v1/deadlines/bulk/{bulk_id}").json()

    def close(self) -> None:
        self.market.close()
        self.desk.close()


def _released(db: DBEngine, milestones: list[int]) -> set[int]:
    query = sa.select(MILESTONES.c.id).where(
        MILESTONES.c.id.in_(milestones), MILESTONES.c.state == "released"
    )
    with db.connect() as conn:
        return set(conn.execute(query).scalars())


def _apply_and_wait(desk: Desk, preview: dict[str, Any], reason: str) -> dict[str, Any]:
    job = desk.bulk(f"/{preview['id']}/apply", {"reason": reason}, status=202)
    assert job["status"] in ("running", "done")
    until(lambda: desk.shown(preview["id"])["status"] == "done", f"bulk {preview['id']} done")
    return desk.shown(preview["id"])  # type: ignore[no-any-return]


@pytest.mark.slow  # a served process and 1,200 requests
def test_a_freeze_of_one_clients_auto_approvals_holds_them_and_its_undo_credits_their_time(
    db: DBEngine, tmp_path: Path
) -> None:
    server = Server(db, tmp_path)
    try:
        server.wait_ready()
        desk = Desk(server, db)
        # contract id: (client, milestone id, its reference model)
        contracts: dict[int, tuple[str, int, Model]] = {}
        for i in range(CONTRACTS_EACH * len(CLIENTS)):
            client = list(CLIENTS)[i % len(CLIENTS)]
            freelancer, amount = CLIENTS[client], 10_000 + 137 * i
            now = START + i * SPACING
            server.set_clock(now)
            milestone = {"title": "Work", "amount": amount}
            offered = desk.act(
                f"client:{client}",
                "/v1/contracts",
                {"freelancer_id": freelancer, "title": f"Contract {i}", "currency": "USD",
                 "milestones": [milestone]},
            )  # fmt: skip
            (m,) = [c["id"] for c in offered["created"] if c["entity"] == "milestone"]
            desk.act(f"freelancer:{freelancer}", f"/v1/contracts/{offered['id']}/events/accept")
            desk.act(f"client:{client}", f"/v1/milestones/{m}/events/fund")
            desk.act(f"freelancer:{freelancer}", f"/v1/milestones/{m}/events/submit")
            model = Model(now=_naive(now))
            model.offer(client, {"freelancer": freelancer, "milestones": [milestone]})
            model.act("freelancer", freelancer, "contract", 1, "accept", {})
            model.act("client", client, "milestone", 1, "fund", {})
            model.act("freelancer", freelancer, "milestone", 1, "submit", {})
            contracts[offered["id"]] = (client, m, model)
        frozen = {c: v for c, v in contracts.items() if v[0] == FROZEN}
        others = {c: v for c, v in contracts.items() if v[0] != FROZEN}

        # The freeze: previewed (the forecast's count and money for that client), applied.
        server.set_clock(FREEZE_AT)
        forecast = desk.market.get("/v1/forecast", params={"client_id": FROZEN, "days": 30}).json()
        (due,) = forecast["totals"]
        selection = {"client_id": FROZEN, "events": ["auto_approve"]}
        preview = desk.bulk("", {"action": "pause", "selection": selection})
        assert (preview["deadlines"], preview["contracts"]) == (due["releases"], len(frozen))
        assert sum(m["amount"] for m in preview["money"]) == due["to_freelancers"]
        assert due["to_freelancers"] == sum(model.get("milestone", 1)["amount"]
                                            for _, _, model in frozen.values())  # fmt: skip
        done = _apply_and_wait(desk, preview, "fraud wave on one client")
        assert (done["results"], done["progress"]) == (
            {"done": len(frozen)}, {"done": len(frozen), "total": len(frozen)},
        )  # fmt: skip
        for _client, _m, model in frozen.values():
            model.advance(_naive(FREEZE_AT))
            model.pause("milestone", 1)
        held = desk.market.get("/v1/forecast", params={"client_id": FROZEN}).json()
        assert held["totals"] == [] and held["paused"][0]["to_freelancers"] == due["to_freelancers"]

        # Every original due date passes: the others are paid, the frozen ones are not.
        server.set_clock(PAST_DUE)
        until(
            lambda: len(_released(db, [m for _, m, _ in others.values()])) == len(others),
            "the other clients' auto-approvals",
        )
        assert _released(db, [m for _, m, _ in frozen.values()]) == set()
        for _client, _m, model in contracts.values():
            model.advance(_naive(PAST_DUE))

        # Five days later the freeze is undone: each has the time it had left.
        server.set_clock(THAW_AT)
        thaw = desk.bulk(f"/{preview['id']}/undo", None)
        assert (thaw["action"], thaw["deadlines"]) == ("resume", len(frozen))
        assert _apply_and_wait(desk, thaw, "fraud cleared")["results"] == {"done": len(frozen)}
        for _client, _m, model in frozen.values():
            model.advance(_naive(THAW_AT))
            model.resume("milestone", 1)
        expected_due = {m: model.timers[0][0] for _, m, model in frozen.values()}
        with db.connect() as conn:
            rows = conn.execute(
                sa.select(DEADLINES.c.entity_id, DEADLINES.c.due_at).where(
                    DEADLINES.c.entity == "milestone",
                    DEADLINES.c.entity_id.in_(expected_due),
                    DEADLINES.c.status == "pending",
                )
            ).all()
        assert {m: _naive(due_at) for m, due_at in rows} == expected_due
        assert min(expected_due.values()) == _naive(THAW_AT) + (
            _naive(START + timedelta(days=14)) - _naive(FREEZE_AT) + SPACING
        )  # the first frozen one (contract 2, submitted 10 minutes in) had 11 days left

        # Half-way through their new due dates: exactly the earlier half has fired.
        middle = sorted(expected_due.values())[len(expected_due) // 2]
        server.set_clock(middle.replace(tzinfo=UTC))
        early = {m for m, when in expected_due.items() if when <= middle}
        until(lambda: _released(db, list(expected_due)) == early, "the earlier half")
        server.set_clock(THAW_AT + timedelta(days=20))
        until(lambda: _released(db, list(expected_due)) == set(expected_due), "the rest")
        for _client, _m, model in contracts.values():
            model.advance(_naive(THAW_AT + timedelta(days=20)))

        # Money: what the model says, to whom it says, for every contract.
        with db.connect() as conn:
            totals = {
                row.id: row
                for row in conn.execute(
                    sa.select(
                        CONTRACTS.c.id,
                        CONTRACTS.c.freelancer_id,
                        CONTRACTS.c.deposited,
                        CONTRACTS.c.released,
                        CONTRACTS.c.refunded,
                        CONTRACTS.c.held,
                    )
                )
            }
            paid = dict(
                conn.execute(
                    sa.select(LEDGER.c.contract_id, sa.func.sum(LEDGER.c.amount))
                    .where(LEDGER.c.kind == "release")
                    .group_by(LEDGER.c.contract_id)
                ).all()
            )
            notes = conn.execute(
                sa.select(
                    HISTORY.c.event, HISTORY.c.actor_role, HISTORY.c.actor_party, HISTORY.c.payload
                ).where(HISTORY.c.entity == "deadline")
            ).all()
        for contract_id, (client, _m, model) in contracts.items():
            expected = model.get("contract", 1)
            row = totals[contract_id]
            assert row.freelancer_id == CLIENTS[client]
            assert (row.deposited, row.released, row.refunded, row.held) == (
                expected["deposited"], expected["released"], expected["refunded"], 0,
            ), contract_id  # fmt: skip
            assert paid[contract_id] == expected["released"]
        # One history row per deadline and action, naming who, why and the bulk job.
        reasons = sorted((n.event, n.payload["reason"], n.payload["bulk_id"]) for n in notes)
        assert reasons == sorted(
            [("pause", "fraud wave on one client", preview["id"])] * len(frozen)
            + [("resume", "fraud cleared", thaw["id"])] * len(frozen)
        )
        assert {(n.actor_role, n.actor_party) for n in notes} == {("admin", "desk")}
        desk.close()
        assert server.stop() == 0
    finally:
        server.kill()

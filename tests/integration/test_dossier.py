"""A contract's dossier, for arbitration and audits: one JSON with everything, one CSV
with the timeline, both agreeing with the ledger and the history."""

from __future__ import annotations

import csv
import io

from tests.helpers import CLIENT, FREELANCER, Scenario
from tests.live import Api


def test_a_contracts_dossier_holds_its_timeline_ledger_and_deadlines_as_json_and_csv(
    sc: Scenario, api: Api
) -> None:
    contract, m = sc.in_review(120_000)
    sc.fire("milestone", m, "release", CLIENT, {"amount": 50_000})
    token = api.token("read")
    found = api.request("GET", f"/v1/contracts/{contract}/dossier", token=token)
    assert found.status_code == 200, found.text
    body = found.json()
    assert (body["contract"]["client_id"], body["contract"]["freelancer_id"]) == (
        CLIENT.party, FREELANCER.party,
    )  # fmt: skip
    assert body["terms"]["id"] == body["contract"]["terms_id"]
    ledger = [(e["kind"], e["amount"]) for e in body["ledger"]]
    assert ledger == [("deposit", 120_000), ("release", 50_000)]
    moments = [row["at"] for row in body["timeline"]]
    assert moments == sorted(moments)
    kinds = {row["kind"] for row in body["timeline"]}
    assert {"history", "ledger"} <= kinds and any(k.startswith("deadline ") for k in kinds)
    events = [row["event"] for row in body["timeline"] if row["kind"] == "history"]
    assert events[0] == "create" and events.index("submit") < events.index("release")
    assert {d["event"] for d in body["deadlines"]} >= {"auto_approve"}
    sheet = api.request("GET", f"/v1/contracts/{contract}/dossier.csv", token=token)
    assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/csv")
    assert f"contract-{contract}.csv" in sheet.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(sheet.text)))
    assert len(rows) == len(body["timeline"])
    moved = [(r["event"], r["amount"], r["amount_shown"]) for r in rows if r["kind"] == "ledger"]
    assert moved == [("deposit", "120000", "1,200.00 USD"), ("release", "50000", "500.00 USD")]
    missing = api.request("GET", "/v1/contracts/999/dossier", token=token)
    assert missing.status_code == 404


def test_an_admins_note_is_kept_in_the_contracts_history_and_its_dossier(
    sc: Scenario, api: Api
) -> None:
    contract, _m = sc.in_review(10_000)
    admin = api.token("act:admin")
    path = f"/v1/contracts/{contract}/notes"
    made = api.request("POST", path, token=admin, actor="admin:desk", json={"text": " Called. "})
    assert made.status_code == 201, made.text
    assert made.json()["event"] == "note" and made.json()["state"] == "active"
    empty = api.request("POST", path, token=admin, actor="admin:desk", json={"text": "  "})
    assert (empty.status_code, empty.json()["code"]) == (422, "field_required")
    client = api.request(
        "POST", path, token=api.token("act:client"), actor="client:acme", json={"text": "hi"}
    )
    assert client.status_code == 403
    body = api.request("GET", f"/v1/contracts/{contract}/dossier", token=api.token("read")).json()
    notes = [r for r in body["timeline"] if r["event"] == "note"]
    assert [(n["who"], n["details"]) for n in notes] == [("admin:desk", {"note": "Called."})]
    sc.check_invariants()

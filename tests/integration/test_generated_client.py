"""A client generated from `/openapi.json` by openapi-python-client drives a contract's
whole life over real HTTP, using only the generated functions and models (issue 25):
offer with milestones, accept, fund, submit, request changes, submit, a partial release,
a refund asked for, disputed and resolved, and one refusal read as a typed error."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from openapi_python_client import generate
from openapi_python_client.config import Config, ConfigFile, MetaType

from tests.live import Api

PACKAGE = "escrowflow_generated_client"
_MADE: dict[str, ModuleType] = {}


def _client_package(url: str, where: Path) -> ModuleType:
    """The package openapi-python-client generates from the served document (once a run:
    the document is the same whichever backend serves it)."""
    if PACKAGE in _MADE:
        return _MADE[PACKAGE]
    config = Config.from_sources(
        ConfigFile(post_hooks=[], package_name_override=PACKAGE),
        MetaType.NONE,
        document_source=f"{url}/openapi.json",
        file_encoding="utf-8",
        overwrite=True,
        output_path=where / PACKAGE,
    )
    problems = generate(config=config)
    # Every operation and every model is generated: no warning, no error.
    assert not problems, "\n".join(f"{p.header}: {p.detail}" for p in problems)
    sys.path.insert(0, str(where))
    _MADE[PACKAGE] = importlib.import_module(PACKAGE)
    return _MADE[PACKAGE]


class _Operations:
    """The generated operations of one tag: `transitions.milestone_fund` is the module
    `PACKAGE.api.transitions.milestone_fund` (imported when first used)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __getattr__(self, operation: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.api.{self.tag}.{operation}")


def test_a_generated_client_drives_a_whole_lifecycle_with_its_own_models(
    api: Api, tmp_path_factory: pytest.TempPathFactory
) -> None:
    package = _client_package(api.base_url, tmp_path_factory.mktemp("generated"))
    models = importlib.import_module(f"{PACKAGE}.models")
    transitions, reading, lists = (_Operations(t) for t in ("transitions", "reading", "lists"))
    token = api.token("act:client", "act:freelancer", "act:admin", "read")
    client = package.AuthenticatedClient(base_url=api.base_url, token=token)
    acme, ada, desk = "client:acme", "freelancer:ada", "admin:disputes"

    def ok(operation: Any, **kwargs: Any) -> Any:
        answer = operation.sync_detailed(client=client, **kwargs)
        assert answer.status_code < 300, answer.content
        assert isinstance(answer.parsed, models.TransitionOut), answer.parsed
        return answer.parsed

    offer = models.ContractCreate(
        freelancer_id="ada",
        title="Landing page",
        currency=models.Currency.USD,
        milestones=[
            models.MilestoneIn(title="Design", amount=50_000),
            models.MilestoneIn(title="Build", amount=80_000),
        ],
    )
    created = ok(transitions.create_contract, body=offer, escrowflow_actor=acme)
    contract = created.id
    design, _build = (ref.id for ref in created.created if ref.entity == models.Entity.MILESTONE)
    ok(transitions.contract_accept, entity_id=contract, escrowflow_actor=ada)  # no body at all
    ok(transitions.milestone_fund, entity_id=design, escrowflow_actor=acme)
    ok(transitions.milestone_submit, entity_id=design, escrowflow_actor=ada)
    changes = models.EventNote(reason="the header is too tall")
    asked = ok(
        transitions.milestone_request_changes, entity_id=design, body=changes, escrowflow_actor=acme
    )
    assert asked.state == models.State.ACTIVE
    ok(transitions.milestone_submit, entity_id=design, escrowflow_actor=ada)

    # One refusal: a release far above the agreed amount (MS14), read as a typed error.
    typo = models.MilestoneRelease(amount=5_000_000)
    refused = transitions.milestone_release.sync_detailed(
        client=client, entity_id=design, body=typo, escrowflow_actor=acme
    )
    assert refused.status_code == 409
    assert isinstance(refused.parsed, models.ErrorOut)
    assert refused.parsed.code == "release_above_limit"

    part = models.MilestoneRelease(amount=30_000, reason="the design, less the logo")
    released = ok(transitions.milestone_release, entity_id=design, body=part, escrowflow_actor=acme)
    assert released.state == models.State.RELEASED
    ok(transitions.contract_end, entity_id=contract, escrowflow_actor=acme)
    refund = ok(
        transitions.contract_request_refund,
        entity_id=contract,
        body=models.EventNote(reason="the remainder"),
        escrowflow_actor=acme,
    )
    (refund_ref,) = (ref for ref in refund.created if ref.entity == models.Entity.REFUND)
    ok(transitions.refund_dispute, entity_id=refund_ref.id, escrowflow_actor=ada)
    split = models.RefundResolution(to_client=10_000, to_freelancer=10_000, reason="halves")
    resolved = ok(
        transitions.refund_resolve, entity_id=refund_ref.id, body=split, escrowflow_actor=desk
    )
    assert resolved.state == models.State.RESOLVED

    # Typed reads: the milestone's own fields, a list page, the ledger and the diagram.
    shown = reading.show_milestone.sync(client=client, entity_id=design)
    assert isinstance(shown, models.MilestoneOut)
    assert (shown.fields.amount, shown.fields.released_amount) == (50_000, 30_000)
    assert shown.escrow.currency == models.Currency.USD
    page = lists.list_contracts.sync(client=client, client_id="acme")
    assert isinstance(page, models.ContractPage)
    assert [c.id for c in page.items] == [contract] and page.next_cursor is None
    ledger = reading.contract_ledger.sync(client=client, entity_id=contract)
    assert isinstance(ledger, models.LedgerPage)
    kinds = [(entry.kind, entry.amount) for entry in ledger.items]
    assert kinds == [
        (models.LedgerKind.DEPOSIT, 50_000),
        (models.LedgerKind.RELEASE, 30_000),
        (models.LedgerKind.REFUND, 10_000),
        (models.LedgerKind.RELEASE, 10_000),
    ]
    drawn = reading.entity_diagram.sync(
        client=client, collection=models.Collection.MILESTONES, entity_id=design
    )
    assert drawn is not None and drawn.payload.read().startswith(b"<?xml")
    client.get_httpx_client().close()

"""schemathesis against the app's own OpenAPI document, on a real server: whatever a
schema-valid (or nearly valid) request holds, the answer is never a 5xx and always
conforms to the documented status codes, content types and response schemas.

Bounded: ESCROWFLOW_FUZZ_EXAMPLES examples per operation (25 by default)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from escrowflow import tokens
from escrowflow.api import create_app
from escrowflow.settings import Settings
from storage.db import make_engine
from storage.migrate import upgrade
from tests.conftest import database_settings
from tests.helpers import Scenario
from tests.live import live_server
from workflows.clock import ManualClock
from workflows.engine import EscrowEngine
from workflows.policy import Policy

EXAMPLES = int(os.environ.get("ESCROWFLOW_FUZZ_EXAMPLES", "25"))


def _document() -> dict[str, object]:
    """The OpenAPI document, from an app that never connects (no request is served)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{tmp}/schema.db")
        app = create_app(settings, engine=settings.engine(create=True))
        return app.openapi()


schema = schemathesis.openapi.from_dict(_document())


class Target:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "escrowflow.db"
    db = make_engine(database_settings(f"sqlite:///{path}"))
    upgrade(db)  # migrated, as in production: /readyz is ready
    clock = ManualClock()
    engine = EscrowEngine(db, Policy(reminders={}), clock)
    sc = Scenario(engine, clock)
    for _ in range(3):  # something for ids 1..3 to find
        sc.in_review(50_000)
    token = tokens.create(db, clock.now(), "fuzz", tokens.SCOPES)["token"]
    with live_server(engine) as url:
        yield Target(url, token)
    db.dispose()


@pytest.mark.slow  # every operation fuzzed: about 30 s of the fast loop otherwise
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_never_fails_and_answers_as_documented(case: object, target: Target) -> None:
    response = case.call(base_url=target.url, headers=target.headers)  # type: ignore[attr-defined]
    case.validate_response(  # type: ignore[attr-defined]
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )

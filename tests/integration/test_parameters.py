"""Every endpoint of the API refuses a query parameter it does not take (422
`unknown_filter`, naming it), instead of ignoring it: `/v1/events?afterr=5` must not
quietly read from the start. And a list's state filter takes only the machine's states."""

from __future__ import annotations

import re

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute

from escrowflow.api.app import create_app
from escrowflow.api.deps import checked
from escrowflow.api.parameters import ApiRoute
from escrowflow.settings import Settings
from tests.helpers import Scenario
from tests.live import Api


def _get_paths(engine: object) -> list[str]:
    """Every GET path the OpenAPI document declares, ids filled in."""
    document = create_app(Settings(), engine=engine).openapi()  # type: ignore[arg-type]
    paths = []
    for path, operations in document["paths"].items():
        if "get" in operations:
            path = re.sub(r"\{collection\}", "milestones", path)
            paths.append(re.sub(r"\{\w+\}", "1", path))
    return sorted(set(paths))


def test_every_get_endpoint_refuses_an_unknown_parameter_and_names_it(
    sc: Scenario, api: Api
) -> None:
    sc.in_review(50_000)
    token = api.token("read", "webhooks", "act:admin")
    paths = _get_paths(sc.engine)
    assert "/v1/events" in paths and "/v1/contracts" in paths and len(paths) > 15
    for path in paths:
        answer = api.request("GET", path, token=token, actor="admin:ops", params={"bogus": "1"})
        assert answer.status_code == 422, (path, answer.status_code, answer.text)
        body = answer.json()
        assert body["code"] == "unknown_filter", (path, body)
        assert "bogus" in body["message"] and body["details"]["parameters"] == ["bogus"]
    # What an endpoint declares still passes.
    assert api.request("GET", "/v1/events", token=token, params={"after": 0}).status_code == 200


def test_a_list_refuses_a_state_its_machine_does_not_have(sc: Scenario, api: Api) -> None:
    token = api.token("read")
    bad = api.request("GET", "/v1/contracts", token=token, params={"state": "bogus"})
    assert bad.status_code == 422 and bad.json()["code"] == "unknown_state"
    assert "offer" in bad.json()["message"]
    good = api.request("GET", "/v1/contracts", token=token, params={"state": "offer"})
    assert good.status_code == 200


def test_operation_ids_are_readable_and_unique(sc: Scenario) -> None:
    """A generated client names its functions after them: `list_contracts`, not
    `contracts_v1_contracts_get`; no two operations share one."""
    document = create_app(Settings(), engine=sc.engine).openapi()
    names = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(names) == len(set(names)) > 40, [n for n in names if names.count(n) > 1]
    bad = [n for n in names if not re.fullmatch(r"[a-z][a-z0-9_]{2,40}", n) or "_v1_" in n]
    assert not bad, bad
    assert {"list_contracts", "milestone_release", "list_events", "show_milestone"} <= set(names)


def test_every_api_route_is_built_to_refuse_unknown_parameters(sc: Scenario) -> None:
    """The refusal lives in the API's route class, so a router made another way (or an
    API route added outside one) would answer unknown parameters silently: refused."""
    app = create_app(Settings(), engine=sc.engine)
    documented = [r for r in app.routes if isinstance(r, APIRoute) and r.include_in_schema]
    assert len(documented) > 40
    assert all(isinstance(r, ApiRoute) for r in documented), [
        r.path for r in documented if not isinstance(r, ApiRoute)
    ]
    with pytest.raises(TypeError, match="api_router"):
        checked(APIRouter(prefix="/v1"))

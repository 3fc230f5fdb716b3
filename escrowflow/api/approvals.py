"""Money decisions waiting for a second admin (PA4): list them, approve one (it happens
now, as the approver's), reject one with a reason. For the dispute team (act:admin)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool as offload

from escrowflow import resources, schemas
from escrowflow.api.deps import ERRORS, ActingDep, EngineDep, api_router

ApprovalId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The approval's id.")]


def router() -> APIRouter:
    router = api_router(prefix="/v1/approvals", tags=["approvals"], responses=ERRORS)

    @router.get("", summary="Money decisions, newest first (pending: waiting for an admin)")
    async def list_approvals(
        acting: ActingDep,
        engine: EngineDep,
        status: Annotated[
            Literal["pending", "approved", "rejected", "stale", "all"], Query()
        ] = "pending",
    ) -> resources.ApprovalPage:
        engine_status = None if status == "all" else status
        items = await offload(engine.decisions, acting.actor, engine_status)
        return resources.ApprovalPage.model_validate({"items": items, "next_cursor": None})

    @router.post("/{approval_id}/approve", summary="Approve as a second, different admin")
    async def approve_decision(
        approval_id: ApprovalId,
        body: schemas.ApprovalDecision,
        acting: ActingDep,
        engine: EngineDep,
    ) -> resources.DecisionOut:
        done = await offload(engine.approve_decision, acting.actor, approval_id, body.reason)
        return _decision(done)

    @router.post("/{approval_id}/reject", summary="Reject, with a reason: nothing moves")
    async def reject_decision(
        approval_id: ApprovalId,
        body: schemas.ApprovalDecision,
        acting: ActingDep,
        engine: EngineDep,
    ) -> resources.DecisionOut:
        done = await offload(engine.reject_decision, acting.actor, approval_id, body.reason or "")
        return _decision(done)

    return router


def _decision(done: dict[str, Any]) -> resources.DecisionOut:
    """The engine's answer as the API gives it: the approval beside what happened (an
    entity's transition, or a bulk action's job)."""
    rest = {k: v for k, v in done.items() if k != "approval"}
    what = "bulk" if done["approval"]["entity"] == "bulk_action" else "transition"
    return resources.DecisionOut.model_validate({"approval": done["approval"], what: rest or None})

"""Money decisions waiting for a second admin (PA4): list them, approve one (it happens
now, as the approver's), reject one with a reason. For the dispute team (act:admin)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool as offload

from escrowflow import schemas
from escrowflow.api.deps import ERRORS, ActingDep, EngineDep

ApprovalId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The approval's id.")]


def router() -> APIRouter:
    router = APIRouter(prefix="/v1/approvals", tags=["approvals"], responses=ERRORS)

    @router.get("", summary="Money decisions, newest first (pending: waiting for an admin)")
    async def list_approvals(
        acting: ActingDep,
        engine: EngineDep,
        status: Annotated[
            Literal["pending", "approved", "rejected", "stale", "all"], Query()
        ] = "pending",
    ) -> dict[str, Any]:
        engine_status = None if status == "all" else status
        items = await offload(engine.decisions, acting.actor, engine_status)
        return {"items": items}

    @router.post("/{approval_id}/approve", summary="Approve as a second, different admin")
    async def approve_decision(
        approval_id: ApprovalId,
        body: schemas.ApprovalDecision,
        acting: ActingDep,
        engine: EngineDep,
    ) -> dict[str, Any]:
        return await offload(engine.approve_decision, acting.actor, approval_id, body.reason)

    @router.post("/{approval_id}/reject", summary="Reject, with a reason: nothing moves")
    async def reject_decision(
        approval_id: ApprovalId,
        body: schemas.ApprovalDecision,
        acting: ActingDep,
        engine: EngineDep,
    ) -> dict[str, Any]:
        return await offload(engine.reject_decision, acting.actor, approval_id, body.reason or "")

    return router

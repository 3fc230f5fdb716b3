"""Bulk actions on deadlines (DL4): preview by a selection, apply by the preview's id,
undo by the inverse action. For the dispute team (act:admin, as admin)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import pydantic
from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool as offload

from escrowflow import resources, schemas
from escrowflow.api.deps import ERRORS, ActingDep, EngineDep, api_router
from storage.errors import ValidationError
from workflows import bulk

BulkId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The bulk action's id.")]
_DURATION = pydantic.TypeAdapter(timedelta)


def _duration(text: str | None) -> timedelta | None:
    if text is None:
        return None
    try:
        return _DURATION.validate_python(text)
    except pydantic.ValidationError:
        raise ValidationError(
            f"extend_by {text!r} is not a duration: use ISO 8601 such as P2D",
            code="invalid_duration",
            details={"field": "extend_by"},
        ) from None


def router() -> APIRouter:
    router = api_router(prefix="/v1/deadlines/bulk", tags=["deadlines"], responses=ERRORS)

    @router.post("", status_code=201, summary="Preview a bulk pause, resume, extend or retry")
    async def preview_bulk(
        body: schemas.BulkPreviewCreate, acting: ActingDep, engine: EngineDep
    ) -> resources.BulkOut:
        made = await offload(
            engine.preview_bulk,
            acting.actor,
            body.action,
            body.selection,
            _duration(body.extend_by),
        )
        return resources.BulkOut.model_validate(await offload(bulk.show, engine.db, made["id"]))

    @router.get("/{bulk_id}", summary="A bulk action: its preview, results and a sample")
    async def show_bulk(bulk_id: BulkId, acting: ActingDep, engine: EngineDep) -> resources.BulkOut:
        return resources.BulkOut.model_validate(await offload(bulk.show, engine.db, bulk_id))

    @router.post(
        "/{bulk_id}/apply",
        status_code=202,
        summary="Apply a preview by its id, with a reason: a worker carries it out",
        description="The action becomes a running job; its progress and per-item results "
        "are read with GET. Applying it again changes nothing.",
    )
    async def apply_bulk(
        bulk_id: BulkId, body: schemas.BulkApply, acting: ActingDep, engine: EngineDep
    ) -> resources.BulkOut:
        await offload(engine.start_bulk, acting.actor, bulk_id, body.reason)
        return resources.BulkOut.model_validate(await offload(bulk.show, engine.db, bulk_id))

    @router.post("/{bulk_id}/undo", status_code=201, summary="Preview the inverse action")
    async def undo_bulk(bulk_id: BulkId, acting: ActingDep, engine: EngineDep) -> resources.BulkOut:
        made = await offload(engine.undo_bulk, acting.actor, bulk_id)
        return resources.BulkOut.model_validate(await offload(bulk.show, engine.db, made["id"]))

    return router

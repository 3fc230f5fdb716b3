"""An admin's notes on a contract: the dispute desk's working record, kept in the
contract's history and shown in its timeline."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool as offload

from escrowflow import schemas
from escrowflow.api.deps import ERRORS, ActingDep, EngineDep, EntityId, api_router


def router() -> APIRouter:
    router = api_router(prefix="/v1/contracts", tags=["contracts"], responses=ERRORS)

    @router.post("/{entity_id}/notes", status_code=201, summary="An admin's note on a contract")
    async def add_note(
        entity_id: EntityId, body: schemas.NoteIn, acting: ActingDep, engine: EngineDep
    ) -> schemas.TransitionOut:
        noted = await offload(engine.add_note, acting.actor, entity_id, body.text)
        return schemas.TransitionOut.model_validate(noted)

    return router

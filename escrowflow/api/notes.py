"""An admin's notes on a contract: the dispute desk's working record, kept in the
contract's history and shown in its timeline."""

from __future__ import annotations

from fastapi import APIRouter, Request

from escrowflow import schemas
from escrowflow.api.deps import ERRORS, ActingDep, EngineDep, EntityId, api_router
from escrowflow.api.write_turn import WriteTurn


def router() -> APIRouter:
    router = api_router(prefix="/v1/contracts", tags=["contracts"], responses=ERRORS)

    @router.post("/{entity_id}/notes", status_code=201, summary="An admin's note on a contract")
    async def add_note(
        request: Request,
        entity_id: EntityId,
        body: schemas.NoteIn,
        acting: ActingDep,
        engine: EngineDep,
    ) -> schemas.TransitionOut:
        turn: WriteTurn = request.app.state.write_turn
        noted = await turn.run(engine, "add_note", acting.actor, entity_id, body.text)
        return schemas.TransitionOut.model_validate(noted)

    return router

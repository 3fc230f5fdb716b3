"""Terms (TM1) and their migration plans (TM2): reading terms, planning a move of
running contracts, applying a plan by its id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from starlette.concurrency import run_in_threadpool as offload

from escrowflow import resources, schemas, tokens
from escrowflow.api.deps import ERRORS, ActingDep, CallerDep, EngineDep, api_router
from storage.errors import PermissionDenied
from workflows import terms, terms_migration
from workflows.actors import Role

TermsId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The terms' id.")]
PlanId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The plan's id.")]


async def _plan_reader(caller: CallerDep) -> tokens.Caller:
    """Plans name contracts and money: for the dispute team and readers of everything."""
    if "read" not in caller.scopes and Role.ADMIN not in caller.roles:
        raise PermissionDenied(
            f"service {caller.service} may not read terms plans: its token needs the scope "
            "read or act:admin",
            code="scope_missing",
            details={"needed": "read", "scopes": sorted(caller.scopes)},
        )
    return caller


PlanReader = Annotated[tokens.Caller, Depends(_plan_reader)]


def router() -> APIRouter:
    router = api_router(prefix="/v1/terms", tags=["terms"], responses=ERRORS)

    @router.get("", summary="Every terms version, oldest first (TM1)")
    async def list_terms(engine: EngineDep, _caller: CallerDep) -> resources.TermsPage:
        found = await offload(terms.listing, engine.db)
        return resources.TermsPage.model_validate({"items": found, "next_cursor": None})

    @router.get("/migrations", summary="Terms migration plans, newest first (TM2)")
    async def list_plans(engine: EngineDep, _caller: PlanReader) -> resources.TermsPlanPage:
        found = await offload(terms_migration.listing, engine.db)
        return resources.TermsPlanPage.model_validate({"items": found, "next_cursor": None})

    @router.get("/{terms_id}", summary="One terms version: durations, reminders, minimums")
    async def show_terms(terms_id: TermsId, engine: EngineDep, _caller: CallerDep) -> schemas.Terms:
        return schemas.Terms.model_validate(await offload(terms.show, engine.db, terms_id))

    @router.post(
        "/migrations",
        status_code=201,
        summary="Plan moving running contracts to other terms: a preview, nothing changes",
    )
    async def create_plan(
        body: schemas.TermsPlanCreate, acting: ActingDep, engine: EngineDep
    ) -> schemas.TermsPlan:
        selection = body.selection.model_dump(exclude_none=True)
        made = await offload(engine.plan_terms, acting.actor, body.to_terms_id, selection)
        shown = await offload(terms_migration.show, engine.db, made["id"])
        return schemas.TermsPlan.model_validate(shown)

    @router.get("/migrations/{plan_id}", summary="A plan: what it moves, before and after")
    async def show_plan(
        plan_id: PlanId,
        engine: EngineDep,
        _caller: PlanReader,
        moves_after: Annotated[int | None, Query(ge=0)] = None,
    ) -> schemas.TermsPlan:
        shown = await offload(terms_migration.show, engine.db, plan_id, moves_after)
        return schemas.TermsPlan.model_validate(shown)

    @router.post(
        "/migrations/{plan_id}/apply",
        summary="Apply a plan exactly as previewed, with a reason (resumable, idempotent)",
    )
    async def apply_plan(
        plan_id: PlanId, body: schemas.TermsPlanApply, acting: ActingDep, engine: EngineDep
    ) -> schemas.TermsPlan:
        result = await offload(engine.apply_terms_plan, acting.actor, plan_id, body.reason)
        shown = await offload(terms_migration.show, engine.db, plan_id)
        return schemas.TermsPlan.model_validate({**shown, "moved": result["moved"]})

    return router

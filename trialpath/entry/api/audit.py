"""Who did what: `GET /v1/audit` (support, admin) and the key list `GET /v1/keys` (admin)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from starlette.types import ASGIApp, Scope

from trialpath.entry.api.metrics import AfterResponse
from trialpath.entry.api.routes import COMMON, _problems
from trialpath.entry.api.security import allow
from trialpath.entry.trials import Trials
from trialpath.operations import audit
from trialpath.operations.access import PERMISSIONS, Role

log = logging.getLogger("trialpath.audit")

router = APIRouter(prefix="/v1")


class AuditLog(AfterResponse):
    """Records each request a route marked as a write (`request.state.audit_action`, set by
    `trialpath.entry.api.security.allow`) once it is answered, with the caller's key and the status.
    Requests whose key is unknown are not recorded (nobody to name); they are logged."""

    def __init__(self, app: ASGIApp, engine: Engine, secret: str) -> None:
        super().__init__(app)
        self.engine = engine
        self.secret = secret

    async def answered(self, scope: Scope, status: int, seconds: float) -> None:
        state = scope.get("state") or {}
        action = state.get("audit_action")
        key = state.get("api_key")
        if action is None or key is None:
            return
        path_params = scope.get("path_params") or {}
        user_id = state.get("audit_user") or path_params.get("user_id")
        if action == audit.ERASE_ACTION and user_id:
            user_id = audit.pseudonym(self.secret, user_id)
        try:
            await asyncio.to_thread(
                audit.record, self.engine, key.name, key.role, action, user_id, status
            )
        except Exception:
            log.exception("could not record %s by %s in the audit log", action, key.name)


@router.get(
    "/audit",
    dependencies=[Depends(allow("audit"))],
    response_model=audit.AuditPage,
    tags=["audit"],
    summary="The audit log: every write through the API or the CLI, newest first",
    responses=_problems(*COMMON),
)
async def audit_log(
    request: Request,
    user_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    actor: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    action: Annotated[str | None, Query(min_length=1, max_length=40)] = None,
    since: Annotated[
        datetime | None, Query(description="Entries at or after this time (ISO 8601).")
    ] = None,
    before: Annotated[
        int | None,
        Query(ge=1, le=2**31 - 1, description="`next_before` of the previous page."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> audit.AuditPage:
    service: Trials = request.app.state.trials
    return await asyncio.to_thread(
        audit.entries, service.engine, user_id, actor, action, since, before, limit
    )


class KeyItem(BaseModel):
    name: str
    role: Role
    may: list[str] = Field(description="What the role allows.")


class KeyList(BaseModel):
    items: list[KeyItem]


@router.get(
    "/keys",
    dependencies=[Depends(allow("keys"))],
    response_model=KeyList,
    tags=["audit"],
    summary="The API keys configured: names and roles, never the secrets",
    responses=_problems(*COMMON),
)
async def keys(request: Request) -> KeyList:
    return KeyList(
        items=[
            KeyItem(name=k.name, role=k.role, may=sorted(PERMISSIONS[k.role]))
            for k in request.app.state.settings.api_keys
        ]
    )

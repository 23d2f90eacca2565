"""Who did what: `GET /v1/audit` (support, admin) and the key list `GET /v1/keys` (admin)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from trialpath import audit
from trialpath.access import PERMISSIONS, Role
from trialpath.api.routes import COMMON, _problems
from trialpath.api.security import allow
from trialpath.trials import Trials

router = APIRouter(prefix="/v1")


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
        int | None, Query(ge=1, le=2**62, description="`next_before` of the previous page.")
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

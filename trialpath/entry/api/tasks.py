"""Support's work queue over HTTP (`trialpath.support.tasks`): list, read, claim, snooze, close.

Needs the `tasks` permission (roles support and admin). Closing a task sends its outcome to the
trial's workflow (`task_closed`), queued first so it is delivered later if Temporal is away.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import Engine

from trialpath.entry.api.routes import COMMON, _problems
from trialpath.entry.api.security import allow
from trialpath.entry.trials import Trials
from trialpath.support import tasks
from trialpath.support.tasks import (
    ClaimTask,
    CloseTask,
    SnoozeTask,
    StateFilter,
    TaskPage,
    TaskView,
)

log = logging.getLogger("trialpath.tasks")

router = APIRouter(prefix="/v1", tags=["tasks"])

TaskKey = Annotated[
    str,
    Path(
        min_length=1,
        max_length=300,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="The task's key, `<workflow id>:<occurrence>` (as listed).",
    ),
]


def _engine(request: Request) -> Engine:
    service: Trials = request.app.state.trials
    return service.engine


async def _now(request: Request) -> datetime:
    service: Trials = request.app.state.trials
    return await service.clock()


@router.get(
    "/tasks",
    dependencies=[Depends(allow("tasks"))],
    response_model=TaskPage,
    summary="The support queue, oldest first: filter by state, owner, kind or user",
    responses=_problems(401, 403, 422, 503),
)
async def list_tasks(
    request: Request,
    state: Annotated[
        StateFilter,
        Query(description="open, claimed, snoozed, closed; active: all but closed; all"),
    ] = "active",
    owner: Annotated[
        str | None, Query(min_length=1, max_length=100, description="Only this owner's tasks")
    ] = None,
    unowned: Annotated[bool, Query(description="Only tasks nobody owns")] = False,
    kind: Annotated[
        str | None,
        Query(min_length=1, max_length=40, description="stalled, inactive, no_show, ..."),
    ] = None,
    user_id: Annotated[
        str | None, Query(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=tasks.MAX_PAGE)] = 100,
) -> TaskPage:
    return await asyncio.to_thread(
        tasks.list_tasks,
        _engine(request),
        state=state,
        owner=owner,
        unowned=unowned,
        kind=kind,
        user_id=user_id,
        limit=limit,
        now=await _now(request),
    )


@router.get(
    "/tasks/{key}",
    dependencies=[Depends(allow("tasks"))],
    response_model=TaskView,
    summary="One task",
    responses=_problems(401, 403, 404, 422, 503),
)
async def get_task(request: Request, key: TaskKey) -> TaskView:
    return await asyncio.to_thread(tasks.get_task, _engine(request), key, await _now(request))


async def _audit_user(request: Request, key: TaskKey) -> None:
    """The audit log names the task's user (read from its key), whatever the answer."""
    request.state.audit_user = tasks.user_of(key)


@router.post(
    "/tasks/{key}/claim",
    dependencies=[Depends(allow("tasks", "task.claim")), Depends(_audit_user)],
    response_model=TaskView,
    summary="Take a task (409 if someone else has it, unless `force`)",
    responses=_problems(*COMMON, 404, 409),
)
async def claim_task(request: Request, key: TaskKey, command: ClaimTask) -> TaskView:
    return await asyncio.to_thread(
        tasks.claim_task, _engine(request), key, command, await _now(request)
    )


@router.post(
    "/tasks/{key}/snooze",
    dependencies=[Depends(allow("tasks", "task.snooze")), Depends(_audit_user)],
    response_model=TaskView,
    summary="Take a task out of the queue until a time (`until`) or for `hours`",
    responses=_problems(*COMMON, 404, 409),
)
async def snooze_task(request: Request, key: TaskKey, command: SnoozeTask) -> TaskView:
    return await asyncio.to_thread(
        tasks.snooze_task, _engine(request), key, command, await _now(request)
    )


@router.post(
    "/tasks/{key}/close",
    dependencies=[Depends(allow("tasks", "task.close")), Depends(_audit_user)],
    response_model=TaskView,
    summary="Close a task with its outcome; the outcome goes to the trial's journey",
    responses=_problems(*COMMON, 404, 409),
)
async def close_task(request: Request, key: TaskKey, command: CloseTask) -> TaskView:
    closed = await asyncio.to_thread(
        tasks.close_task, _engine(request), key, command, await _now(request)
    )
    if closed.signal_id is not None:
        service: Trials = request.app.state.trials
        try:
            await service.deliver([closed.signal_id])
        except Exception:  # Queued: the redelivery loop sends it once Temporal answers.
            log.warning("task_closed for %s queued for redelivery", key, exc_info=True)
    return closed.task

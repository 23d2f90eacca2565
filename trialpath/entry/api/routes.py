"""Routes: each translates HTTP to one typed command on `Trials` and back, nothing more."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import Field

from trialpath.core.contract import QualifyResult, Stage, TrialStatus
from trialpath.core.definition import Persona
from trialpath.entry.api.problems import Problem, problem
from trialpath.entry.api.security import allow, require
from trialpath.entry.commands import (
    MAX_EVENTS_PER_REQUEST,
    Accepted,
    CallCommand,
    ConversionCommand,
    Erased,
    EventsAccepted,
    ExtensionCommand,
    NewEvent,
    QualifyCommand,
    StartTrial,
    SurveyAnswer,
    SurveyRecorded,
    TrialCreated,
    TrialPage,
    UnsubscribeCommand,
)
from trialpath.entry.trials import Trials

UserId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="The product's opaque user id.",
    ),
]


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "Bad request",
        401: "No API key",
        403: "Wrong API key",
        404: "No such trial",
        409: "Conflict (the trial ended, or exists with other data, or a reused Idempotency-Key)",
        413: "Body over 64 KiB",
        422: "Invalid input; `errors` names each field",
        503: "Temporal or the database is unreachable",
    }
    return {
        code: {
            "model": Problem,
            "description": described[code],
            "content": {"application/problem+json": {}},
        }
        for code in codes
    }


COMMON = (401, 403, 413, 422, 503)


async def trials(request: Request) -> Trials:
    service: Trials = request.app.state.trials
    return service


TrialsDep = Annotated[Trials, Depends(trials)]

router = APIRouter(prefix="/v1")
health = APIRouter(prefix="/v1", tags=["health"])


@router.post(
    "/trials",
    dependencies=[Depends(allow("start", "trial.start"))],
    status_code=201,
    response_model=TrialCreated,
    tags=["trials"],
    summary="Start a trial at signup",
    responses={
        200: {"model": TrialCreated, "description": "Already running with the same data"},
        **_problems(*COMMON, 409),
    },
)
async def start_trial(
    command: StartTrial, service: TrialsDep, request: Request, response: Response
) -> TrialCreated:
    request.state.audit_user = command.user_id
    created, new = await service.start(command)
    if not new:
        response.status_code = 200
    return created


@router.get(
    "/trials",
    dependencies=[Depends(allow("read"))],
    response_model=TrialPage,
    tags=["trials"],
    summary="List trials (Temporal visibility), newest first",
    responses=_problems(*COMMON),
)
async def list_trials(
    service: TrialsDep,
    stage: Stage | None = None,
    persona: Persona | None = None,
    activated: bool | None = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 50,
    page_token: Annotated[str | None, Query(max_length=2000)] = None,
) -> TrialPage:
    return await service.list(stage, persona, activated, page_size, page_token)


@router.get(
    "/trials/{user_id}",
    dependencies=[Depends(allow("read"))],
    response_model=TrialStatus,
    tags=["trials"],
    summary="Where a trial stands (live, or as last recorded once it ended)",
    responses=_problems(*COMMON, 404),
)
async def get_trial(user_id: UserId, service: TrialsDep) -> TrialStatus:
    return await service.status(user_id)


@router.post(
    "/trials/{user_id}/qualification",
    dependencies=[Depends(allow("commands", "trial.qualify"))],
    response_model=QualifyResult,
    tags=["trials"],
    summary="Send the qualifier answers; returns the persona path chosen",
    responses=_problems(*COMMON, 404, 409),
)
async def qualify(user_id: UserId, command: QualifyCommand, service: TrialsDep) -> QualifyResult:
    return await service.qualify(user_id, command)


EventList = Annotated[
    list[NewEvent],
    # The bounds the service checks (in its own words), stated in the schema.
    Field(json_schema_extra={"minItems": 1, "maxItems": MAX_EVENTS_PER_REQUEST}),
]


@router.post(
    "/trials/{user_id}/events",
    dependencies=[Depends(allow("events", "trial.events"))],
    status_code=202,
    response_model=EventsAccepted,
    tags=["events"],
    summary="Report one product action, or a list of up to 100",
    responses=_problems(*COMMON, 404, 409),
)
async def add_events(
    user_id: UserId,
    service: TrialsDep,
    body: Annotated[NewEvent | EventList, Body()],
) -> EventsAccepted:
    """Each event is stored once (its `idempotency_key`). A list reaches the trial in one
    signal, a single event in one too: sending a session's events together costs fewer
    Temporal actions."""
    events = body if isinstance(body, list) else [body]
    return await service.add_events(user_id, events)


@router.post(
    "/trials/{user_id}/call",
    dependencies=[Depends(allow("call", "trial.call"))],
    status_code=202,
    response_model=Accepted,
    tags=["trials"],
    summary="Record the success call: booked, rescheduled, completed or no-show",
    responses=_problems(*COMMON, 404, 409),
)
async def call(user_id: UserId, command: CallCommand, service: TrialsDep) -> Accepted:
    return await service.call(user_id, command)


@router.post(
    "/trials/{user_id}/extension",
    dependencies=[Depends(allow("extend", "trial.extend"))],
    status_code=202,
    response_model=Accepted,
    tags=["trials"],
    summary="Extend the trial by 1 to 60 days",
    responses=_problems(*COMMON, 404, 409),
)
async def extend(user_id: UserId, command: ExtensionCommand, service: TrialsDep) -> Accepted:
    return await service.extend(user_id, command)


@router.post(
    "/trials/{user_id}/conversion",
    dependencies=[Depends(allow("commands", "trial.convert"))],
    status_code=202,
    response_model=Accepted,
    tags=["trials"],
    summary="The user bought a plan",
    responses=_problems(*COMMON, 404, 409),
)
async def convert(user_id: UserId, command: ConversionCommand, service: TrialsDep) -> Accepted:
    return await service.convert(user_id, command)


@router.post(
    "/trials/{user_id}/unsubscribe",
    dependencies=[Depends(allow("commands", "trial.unsubscribe"))],
    status_code=202,
    response_model=Accepted,
    tags=["trials"],
    summary="Stop marketing messages on a channel (or all)",
    responses=_problems(*COMMON, 404, 409),
)
async def unsubscribe(user_id: UserId, command: UnsubscribeCommand, service: TrialsDep) -> Accepted:
    return await service.unsubscribe(user_id, command)


@router.post(
    "/trials/{user_id}/survey",
    dependencies=[Depends(allow("events", "trial.survey"))],
    status_code=202,
    response_model=SurveyRecorded,
    tags=["events"],
    summary="A survey answer (CSAT 1-5, CES 1-7), stored once as a `survey_<name>` event",
    responses=_problems(*COMMON, 404),
)
async def survey(user_id: UserId, answer: SurveyAnswer, service: TrialsDep) -> SurveyRecorded:
    return await service.answer_survey(user_id, answer)


@router.delete(
    "/trials/{user_id}",
    dependencies=[Depends(allow("cancel", "trial.cancel"))],
    status_code=202,
    response_model=Erased,
    tags=["trials"],
    summary="Cancel a trial; with erase=true also wipe the user's personal data (GDPR)",
    responses=_problems(*COMMON, 404, 409),
)
async def cancel(
    user_id: UserId,
    service: TrialsDep,
    request: Request,
    erase: bool = False,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> Erased:
    if erase:
        request.state.audit_action = "trial.erase"
        require(request.state.api_key, "erase")
    return await service.cancel(user_id, reason=reason, erase=erase)


@health.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get(
    "/readyz",
    summary="Readiness: Temporal and the database answer",
    responses={
        503: {
            "model": Problem,
            "description": "Not ready",
            "content": {"application/problem+json": {}},
        }
    },
)
async def readyz(request: Request) -> Any:
    service: Trials = request.app.state.trials
    failures = [f for f in (await service.check_temporal(), service.check_database()) if f]
    if failures:
        return problem(503, "Not ready", "; ".join(failures), request)
    return {"status": "ready"}

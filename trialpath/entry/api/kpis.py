"""The onboarding KPIs over HTTP: `GET /v1/kpis` and `GET /v1/kpis/experiment`.

Both read the database only (no Temporal); definitions are in docs/kpis.md.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, WithJsonSchema
from sqlalchemy import Engine

from trialpath.entry.api.problems import problem
from trialpath.entry.api.routes import _problems
from trialpath.entry.api.security import allow
from trialpath.entry.trials import Trials
from trialpath.growth.discover import DEFAULT_MIN_USERS, discover
from trialpath.growth.experiments import (
    ArmComparison,
    arm_sizes,
    experiment_note,
    experiment_report,
)
from trialpath.growth.kpis import (
    Filters,
    KpiError,
    KpiValue,
    Split,
    compute_kpis,
    parse_bound,
    to_csv,
)
from trialpath.growth.stats import plan_power

router = APIRouter(prefix="/v1", tags=["kpis"], dependencies=[Depends(allow("kpis"))])


async def database(request: Request) -> Engine:
    service: Trials = request.app.state.trials
    return service.engine


EngineDep = Annotated[Engine, Depends(database)]
# Parsed by `_filters` (a bare date, or a date-time with or without offset), declared as such.
DATE_OR_DATETIME = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "format": "date", "maxLength": 40, "examples": ["2026-11-02"]},
            {
                "type": "string",
                "format": "date-time",
                "maxLength": 40,
                "examples": ["2026-11-02T09:00:00+01:00"],
            },
        ]
    }
)
Since = Annotated[
    str | None,
    Query(
        max_length=40,
        description="Trials signed up on or after this date (YYYY-MM-DD) or ISO 8601 "
        "date-time; UTC when no offset is given.",
    ),
    DATE_OR_DATETIME,
]
Until = Annotated[
    str | None,
    Query(
        max_length=40,
        description="Trials signed up before this date-time; a bare date includes that day.",
    ),
    DATE_OR_DATETIME,
]
Control = Annotated[
    str,
    Query(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The control arm the others are compared with.",
    ),
]


class FiltersOut(BaseModel):
    since: datetime | None
    until: datetime | None


class KpiOut(BaseModel):
    """One KPI for one group; `n` is its denominator (users, or answers for surveys)."""

    kpi: str
    group: str
    value: float | None
    n: int
    unit: str
    detail: dict[str, Any]


class ArmComparisonOut(BaseModel):
    """One KPI of an arm against the control: `diff` = arm - control in `unit` (percentage
    points for rates), with its 95 % interval, p-value and a verdict in plain words."""

    kpi: str
    arm: str
    control: str
    unit: str
    value: float | None
    control_value: float | None
    n: int
    control_n: int
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    needed_per_arm: int | None
    verdict: str
    method: str
    always_valid_low: float | None = Field(
        default=None,
        description="Rates: the always-valid 95 % interval of `diff` (normal-mixture confidence "
        "sequence, tuned for 5 points): read it any day, as often as wanted.",
    )
    always_valid_high: float | None = None
    cuped_diff: float | None = Field(
        default=None,
        description="Activation and trial-to-paid: `diff` adjusted by what each user told at "
        "signup (CUPED), with its interval and the share of variance removed.",
    )
    cuped_ci_low: float | None = None
    cuped_ci_high: float | None = None
    variance_reduction: float | None = None


class PowerAnswer(BaseModel):
    """Users needed to detect a lift of a rate, each arm against the control."""

    baseline: float
    target: float
    alpha: float
    power: float
    arms: int
    per_arm: int = Field(
        description="Normal approximation with the variances under both hypotheses "
        "(Fleiss, Levin & Paik)."
    )
    total: int
    cohen_h: float
    per_arm_arcsine: int = Field(description="Cohen's arcsine method (effect size h).")


class KpisAnswer(BaseModel):
    filters: FiltersOut
    by: Split | None
    kpis: list[KpiOut]
    experiment: list[ArmComparisonOut] = Field(
        description="Arms against the `generic` control; empty when `experiment_note` says why."
    )
    experiment_note: str | None


class ExperimentAnswer(BaseModel):
    filters: FiltersOut
    control: str
    arms: dict[str, int] = Field(description="Trials per arm (`default`: outside the experiment).")
    note: str | None = Field(description="Why nothing is compared, when nothing is.")
    comparisons: list[ArmComparisonOut]


def _filters(request: Request, since: str | None, until: str | None) -> Filters | JSONResponse:
    errors = []
    bounds: dict[str, datetime | None] = {"since": None, "until": None}
    for name, text, end in (("since", since, False), ("until", until, True)):
        if text is None:
            continue
        try:
            bounds[name] = parse_bound(text, end=end)
        except KpiError as err:
            errors.append({"field": f"query.{name}", "message": str(err)})
    if not errors:
        try:
            return Filters(since=bounds["since"], until=bounds["until"])
        except KpiError as err:
            errors.append({"field": "query.until", "message": str(err)})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, "Invalid request", detail, request, errors)


def _filters_out(filters: Filters) -> FiltersOut:
    return FiltersOut(since=filters.since, until=filters.until)


def _kpi(value: KpiValue) -> KpiOut:
    return KpiOut.model_validate(value.as_dict())


def _comparison(row: ArmComparison) -> ArmComparisonOut:
    return ArmComparisonOut.model_validate(row.as_dict())


CSV_CONTENT = {"text/csv": {"schema": {"type": "string"}}}


@router.get(
    "/kpis",
    response_model=KpisAnswer,
    summary="Onboarding KPIs, optionally split by persona, cohort, arm, channel, source, "
    "qualifier or journey version",
    responses={
        200: {"description": "The KPIs (JSON), or one CSV row per KPI and group"},
        **_problems(401, 403, 422),
    },
    openapi_extra={"responses": {"200": {"content": CSV_CONTENT}}},
)
def get_kpis(
    request: Request,
    engine: EngineDep,
    since: Since = None,
    until: Until = None,
    by: Annotated[
        Split | None,
        Query(
            description="persona, cohort (ISO week of signup), arm, channel, source "
            "(utm_source, else the referrer's host, else direct), qualifier (how the persona "
            "was known) or journey (the journey version, v3)."
        ),
    ] = None,
    output: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> KpisAnswer | Response:
    """Every KPI (docs/kpis.md) for the trials signed up in the period, and the experiment's
    arms against the `generic` control. Channel splits only the message KPIs."""
    filters = _filters(request, since, until)
    if isinstance(filters, Response):
        return filters
    values = compute_kpis(engine, filters, by)
    if output == "csv":
        return Response(to_csv(values), media_type="text/csv")
    note = experiment_note(arm_sizes(engine, filters))
    comparisons = [] if note else experiment_report(engine, filters)
    return KpisAnswer(
        filters=_filters_out(filters),
        by=by,
        kpis=[_kpi(v) for v in values],
        experiment=[_comparison(c) for c in comparisons],
        experiment_note=note,
    )


@router.get(
    "/kpis/experiment",
    response_model=ExperimentAnswer,
    summary="Experiment arms against the control, with intervals, p-values and verdicts",
    responses=_problems(401, 403, 422),
)
def get_experiment(
    request: Request,
    engine: EngineDep,
    since: Since = None,
    until: Until = None,
    control: Control = "generic",
) -> ExperimentAnswer | Response:
    """For activation, trial-to-paid, 7-day retention, onboarding completion, TTFV median and
    CSAT: each arm against the control."""
    filters = _filters(request, since, until)
    if isinstance(filters, Response):
        return filters
    sizes = arm_sizes(engine, filters)
    note = experiment_note(sizes, control)
    comparisons = [] if note else experiment_report(engine, filters, control)
    return ExperimentAnswer(
        filters=_filters_out(filters),
        control=control,
        arms=sizes,
        note=note,
        comparisons=[_comparison(c) for c in comparisons],
    )


@router.get(
    "/kpis/power",
    response_model=PowerAnswer,
    summary="Sample size per arm to detect a planned lift of a rate",
    responses=_problems(401, 403, 422),
)
def get_power(
    request: Request,
    baseline: Annotated[float, Query(gt=0, lt=1, description="The control's rate (0.2).")],
    lift: Annotated[
        float,
        Query(description="The lift to detect: absolute (0.05 = +5 points) or, `relative`, 0.1."),
    ],
    relative: bool = False,
    alpha: Annotated[float, Query(gt=0, lt=0.5)] = 0.05,
    power: Annotated[float, Query(ge=0.5, lt=1)] = 0.8,
    arms: Annotated[int, Query(ge=2, le=20)] = 2,
) -> PowerAnswer | Response:
    """Users per arm (and in all) a two-sided test at `alpha` needs to detect `lift` over
    `baseline` with `power`."""
    try:
        plan = plan_power(baseline, lift, relative=relative, alpha=alpha, power=power, arms=arms)
    except ValueError as err:
        return problem(422, "Invalid request", str(err), request)
    return PowerAnswer(**{**asdict(plan), "total": plan.total})


class CandidateOut(BaseModel):
    """A rule "event X at least N times within D days" (or the journey's configured activation
    rule, `event` null) and how it separates buyers from the others (docs/kpis.md)."""

    rank: int
    rule: str
    event: str | None
    at_least: int | None
    within_days: int | None
    users: int
    reached: int
    buyers: int
    buyers_reached: int
    share: float
    precision: float = Field(description="Conversion of the users who reached it.")
    precision_ci: tuple[float, float]
    recall: float = Field(description="Share of the buyers who had reached it.")
    recall_ci: tuple[float, float]
    others: float = Field(description="Conversion of the users who did not.")
    lift: float | None
    separation: float = Field(description="precision - others.")
    separation_ci: tuple[float, float] = Field(description="Newcombe 95 %; ranked by its low end.")


class CandidatesAnswer(BaseModel):
    filters: FiltersOut
    users: int = Field(description="Trials of the period that are over (the ones that decided).")
    buyers: int
    tried: int = Field(description="Rules measured (after the minimum support).")
    note: str | None
    candidates: list[CandidateOut]
    configured: CandidateOut | None


@router.get(
    "/kpis/activation-candidates",
    response_model=CandidatesAnswer,
    summary="Which early behaviour predicts paying: candidate activation rules, ranked",
    responses=_problems(401, 403, 422),
)
def get_activation_candidates(
    request: Request,
    engine: EngineDep,
    since: Since = None,
    until: Until = None,
    top: Annotated[int, Query(ge=1, le=100)] = 10,
    min_users: Annotated[int, Query(ge=1, le=100_000)] = DEFAULT_MIN_USERS,
) -> CandidatesAnswer | Response:
    """Rules "event X at least N times within D days" (N in 1, 2, 3, 5, 10; D in 1, 3, 7, 14)
    ranked by the low end of the 95 % interval of the conversion difference between the users
    who reached them and the others, with the journey's own activation rule in the ranking."""
    filters = _filters(request, since, until)
    if isinstance(filters, Response):
        return filters
    found = discover(engine, filters, min_users=min_users, top=top)
    return CandidatesAnswer(
        filters=_filters_out(filters),
        users=found.users,
        buyers=found.buyers,
        tried=found.tried,
        note=found.note,
        candidates=[CandidateOut(**c.as_dict()) for c in found.candidates],
        configured=CandidateOut(**found.configured.as_dict()) if found.configured else None,
    )

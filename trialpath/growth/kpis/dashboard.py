"""The dashboard's data beyond the KPI table: the funnel, the TTFV distribution, retention
curves per cohort, the headline numbers and the clocks the trials ran on.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, case, func, literal_column, select, true

from trialpath.core.definition import JourneyDefinition
from trialpath.growth.kpis.activation import activation_rate, retention_7d, time_to_first_value
from trialpath.growth.kpis.revenue import trial_to_paid
from trialpath.growth.kpis.sql import (
    CONVERTED,
    E,
    T,
    count_trials,
    group_column,
    milestone_durations,
    ordered,
    persona_milestones,
    population,
    scale,
)
from trialpath.growth.kpis.values import ALL, UNKNOWN_PERSONA, Filters, KpiError, KpiValue

FUNNEL_STEPS = ("signed up", "qualified", "first value", "activated", "converted")


def funnel(
    engine: Engine, filters: Filters, *, journey: JourneyDefinition | None = None
) -> dict[str, list[tuple[str, int]]]:
    """Per persona (and "all" first, "unknown" for trials never qualified): how many trials
    reached each step, each step counting only those that reached every step before it, so
    the counts never grow: signed up → qualified (persona known) → first value (persona
    milestone event) → activated → converted."""
    milestones = persona_milestones(journey)
    wanted = case(milestones, value=T.c.persona, else_=None)
    reached = (
        select(E.c.id)
        .where(
            E.c.user_id == T.c.user_id,
            E.c.name == wanted,
            E.c.counted == true(),
            E.c.occurred_at >= T.c.signup_at,
        )
        .exists()
    )
    qualified = T.c.persona.is_not(None)
    steps = [
        qualified,
        qualified & reached,
        qualified & reached & (T.c.activated == true()),
        qualified & reached & (T.c.activated == true()) & CONVERTED,
    ]
    group = group_column(engine, "persona")
    query = (
        select(
            group,
            func.count().label("s0"),
            *(
                func.sum(case((step, 1), else_=0)).label(f"s{i + 1}")
                for i, step in enumerate(steps)
            ),
        )
        .select_from(T)
        .where(*population(filters))
        .group_by(literal_column("grp"))
    )
    with engine.connect() as conn:
        rows = {
            row.grp: [int(row[i + 1] or 0) for i in range(len(FUNNEL_STEPS))]
            for row in conn.execute(query)
        }
    total = [sum(counts[i] for counts in rows.values()) for i in range(len(FUNNEL_STEPS))]
    answer = {ALL: list(zip(FUNNEL_STEPS, total, strict=True))}
    for persona in ordered(rows, "persona", journey):
        counts = rows.get(persona, [0] * len(FUNNEL_STEPS))
        answer[persona] = list(zip(FUNNEL_STEPS, counts, strict=True))
    return answer


def ttfv_hours(
    engine: Engine, filters: Filters, *, journey: JourneyDefinition | None = None
) -> dict[str, list[float]]:
    """Per persona, the hours from signup to the milestone of every user who reached it
    (sorted), for a distribution chart; the same durations as `time_to_first_value`."""
    found = milestone_durations(engine, filters, "persona", journey)
    return {
        persona: sorted(found[persona].hours) if persona in found else []
        for persona in ordered(found, "persona", journey)
        if persona != UNKNOWN_PERSONA
    }


RETENTION_DAYS = (0, 7, 14, 21, 28)


def retention_curves(
    engine: Engine, filters: Filters, weeks: int = 8, *, now: datetime | None = None
) -> dict[str, list[tuple[int, float]]]:
    """Per signup cohort (ISO week, the `weeks` most recent), the % of the cohort active on or
    after day d, for d = 0, 7, 14, 21, 28: users with an event (during the trial or after it)
    at least d journey days after their signup ("unbounded" retention, which never rises with
    d). A day appears only once every user of the cohort has lived it by `until` (or now), so
    no point is half-measured."""
    if weeks < 1:
        raise KpiError("weeks must be at least 1")
    reference = filters.until or now or datetime.now(UTC)
    group = group_column(engine, "cohort")
    last = (
        select(E.c.user_id.label("user_id"), func.max(E.c.occurred_at).label("at"))
        .group_by(E.c.user_id)
        .subquery("last_event")
    )
    query = (
        select(group, T.c.signup_at, T.c.seconds_per_day, last.c.at)
        .select_from(T.outerjoin(last, last.c.user_id == T.c.user_id))
        .where(*population(filters))
    )
    cohorts: dict[str, list[tuple[datetime, timedelta, datetime | None]]] = defaultdict(list)
    with engine.connect() as conn:
        for row in conn.execute(query):
            one_day = timedelta(days=1) / scale(row.seconds_per_day)
            cohorts[row.grp].append((row.signup_at, one_day, row.at))
    answer: dict[str, list[tuple[int, float]]] = {}
    for cohort in sorted(cohorts)[-weeks:]:
        users = cohorts[cohort]
        curve = []
        for day in RETENTION_DAYS:
            if any(signup + day * one_day > reference for signup, one_day, _ in users):
                break
            active = sum(
                1
                for signup, one_day, at in users
                if at is not None and at >= signup + day * one_day
            )
            curve.append((day, 100.0 * active / len(users)))
        answer[cohort] = curve
    return answer


def headline(engine: Engine, filters: Filters) -> dict[str, KpiValue]:
    """The five numbers on top of the dashboard: trials, activation rate, TTFV median,
    trial-to-paid and 7-day retention (no split)."""
    with engine.connect() as conn:
        trials = count_trials(conn, filters)
    return {
        "trials": KpiValue("trials", ALL, float(trials), trials, "count", {}),
        "activation_rate": activation_rate(engine, filters)[0],
        "ttfv_median": time_to_first_value(engine, filters)[0],
        "trial_to_paid": trial_to_paid(engine, filters)[0],
        "retention_7d": retention_7d(engine, filters)[0],
    }


def clocks(engine: Engine, filters: Filters) -> list[float]:
    """The clocks (real seconds per journey day) the period's trials ran on, fastest first:
    `[86400.0]` in production, a few seconds for a demo."""
    query = select(T.c.seconds_per_day).distinct().where(*population(filters))
    with engine.connect() as conn:
        return sorted(float(v) for v in conn.execute(query).scalars())

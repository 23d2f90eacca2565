"""The activation KPIs: time to first value, activation, onboarding completion, adoption,
time to proficiency and 7-day retention.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, distinct, func, literal, or_, select, true

from trialpath.core.definition import JourneyDefinition
from trialpath.growth.kpis.sql import (
    Dialect,
    E,
    T,
    current_journey,
    durations,
    key_events,
    median_values,
    milestone_durations,
    no_channel,
    rate_rows,
)
from trialpath.growth.kpis.values import Filters, KpiValue, Split
from trialpath.operations.models import UtcDateTime

ADOPTION_MIN_FEATURES = 3
RETENTION_FROM_DAY = 7
RETENTION_TO_DAY = 14


def time_to_first_value(
    engine: Engine,
    filters: Filters,
    by: Split | None = None,
    *,
    journey: JourneyDefinition | None = None,
) -> list[KpiValue]:
    """Time to first value (TTFV): hours from signup to the first counted event that is the
    user's persona milestone (journey.toml `personas.<persona>.milestone`: integration_connected,
    workflow_created, dashboard_configured), at or after signup.

    Two KPIs: `ttfv_median` and `ttfv_p90` (90th percentile, linear interpolation), over the
    users who reached it. `n` is every trial of the group; `detail["reached"]` how many reached
    their milestone (trials without a persona never do)."""
    found = milestone_durations(engine, filters, no_channel(by), journey)
    return [
        *median_values("ttfv_median", found, no_channel(by), 0.5),
        *median_values("ttfv_p90", found, no_channel(by), 0.9),
    ]


def activation_rate(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Activation rate: % of trials activated (`trials.activated`: the persona's activation
    rule met within its window, e.g. technical = an integration and 10 API calls in 7 days)."""
    return rate_rows(engine, filters, no_channel(by), "activation_rate", T.c.activated == true())


def onboarding_completion(
    engine: Engine,
    filters: Filters,
    by: Split | None = None,
    *,
    journey: JourneyDefinition | None = None,
) -> list[KpiValue]:
    """Onboarding completion: % of trials whose user did every onboarding step of their own
    persona at least once during the trial (counted events): the persona's milestone and each
    event its activation rule requires (seed 003: a technical user's steps are not an
    executive's). A trial without a persona has not completed. Shown beside activation on
    purpose: doing each step once is not reaching the rule's counts in its window, nor value."""
    journey = journey or current_journey()
    done_by_persona = [
        and_(T.c.persona == persona, *(_did(name) for name in path.steps()))
        for persona, path in journey.personas.items()
    ]
    return rate_rows(
        engine, filters, no_channel(by), "onboarding_completion", or_(*done_by_persona)
    )


def _did(name: str) -> ColumnElement[bool]:
    """The trial's user has a counted event `name`."""
    return (
        select(E.c.id)
        .where(E.c.user_id == T.c.user_id, E.c.counted == true(), E.c.name == name)
        .exists()
    )


def adoption_rate(
    engine: Engine,
    filters: Filters,
    by: Split | None = None,
    *,
    journey: JourneyDefinition | None = None,
) -> list[KpiValue]:
    """Adoption rate: % of trials whose user used at least 3 distinct key features (distinct
    names among `stall.key_events` in their counted events)."""
    used = _features_used(key_events(journey))
    return rate_rows(
        engine, filters, no_channel(by), "adoption_rate", used >= ADOPTION_MIN_FEATURES
    )


def _features_used(keys: Sequence[str]) -> ColumnElement[Any]:
    """Distinct key events the trial's user did (a correlated scalar subquery)."""
    return (
        select(func.count(distinct(E.c.name)))
        .where(E.c.user_id == T.c.user_id, E.c.counted == true(), E.c.name.in_(list(keys)))
        .scalar_subquery()
    )


def time_to_proficiency(
    engine: Engine, filters: Filters, by: Split | None = None
) -> list[KpiValue]:
    """Time to proficiency: median hours from signup to activation (`activated_at`) over the
    activated trials. `n` is every trial of the group, `detail["reached"]` the activated."""
    by = no_channel(by)
    found = durations(engine, filters, by, T.c.activated_at)
    return median_values("time_to_proficiency", found, by, 0.5)


def retention_7d(
    engine: Engine, filters: Filters, by: Split | None = None, *, now: datetime | None = None
) -> list[KpiValue]:
    """7-day retention: among trials that signed up at least 7 days before `until` (or now),
    % whose user has an event from day 7 (inclusive) to day 14 (exclusive) after signup, in
    each trial's journey days. Every event counts, those after a purchase or the trial's end
    too (stored uncounted for activation): a user who buys on day 5 and keeps using the
    product is retained. Users 7 to 14 days old have not lived the whole window yet, so a
    recent period reads a little low until its window closes."""
    by = no_channel(by)
    reference = filters.until or now or datetime.now(UTC)
    dialect = Dialect(engine)
    elapsed = dialect.seconds_between(E.c.occurred_at, T.c.signup_at)
    day = T.c.seconds_per_day
    active = (
        select(E.c.id)
        .where(
            E.c.user_id == T.c.user_id,
            elapsed >= RETENTION_FROM_DAY * day,
            elapsed < RETENTION_TO_DAY * day,
        )
        .exists()
    )
    age = dialect.seconds_between(literal(reference, UtcDateTime()), T.c.signup_at)
    old_enough = age >= RETENTION_FROM_DAY * day
    values = rate_rows(engine, filters, by, "retention_7d", active, base=old_enough)
    for value in values:
        value.detail["read_at"] = reference.isoformat()
    return values

"""The conversion and revenue KPIs: trial to paid, churn, upsell, referrals, customer
lifetime value, and what the journey adds to conversion and revenue against the global
holdout.
"""

from __future__ import annotations

import statistics
from typing import Any

from sqlalchemy import Engine, case, func, literal_column, select

from trialpath.core.definition import GLOBAL_HOLDOUT
from trialpath.growth.kpis.sql import (
    CONVERTED,
    ENDED,
    T,
    any_event,
    group_column,
    no_channel,
    ordered,
    population,
    rate_rows,
)
from trialpath.growth.kpis.values import Filters, KpiError, KpiValue, Split
from trialpath.growth.stats import mean_diff, two_proportions
from trialpath.operations.config import get_settings

UPSELL_EVENTS = ("plan_upgraded", "addon_purchased")
REFERRAL_EVENT = "referral_sent"


def trial_to_paid(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Trial-to-paid: % converted (`converted_at` set) among trials that are over: converted,
    expired or cancelled (trials still running are left out, not counted as lost)."""
    return rate_rows(engine, filters, no_channel(by), "trial_to_paid", CONVERTED, base=ENDED)


def churn_rate(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Churn rate (of trials): % of the trials that are over which ended without buying
    (stage expired or cancelled, never converted); `detail` splits expired and cancelled.
    This is 100 - trial_to_paid; paying customers' churn is outside Trialpath (see cltv)."""
    lost = ENDED & ~CONVERTED
    return rate_rows(
        engine,
        filters,
        no_channel(by),
        "churn_rate",
        lost,
        base=ENDED,
        extra={
            "expired": lost & (T.c.stage == "expired"),
            "cancelled": lost & (T.c.stage == "cancelled"),
        },
    )


def upsell_rate(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Upsell and cross-sell rate: % of converted trials whose user has a `plan_upgraded` or
    `addon_purchased` event after the conversion (`occurred_at > converted_at`)."""
    hit = any_event(UPSELL_EVENTS, after=T.c.converted_at)
    return rate_rows(engine, filters, no_channel(by), "upsell_rate", hit, base=CONVERTED)


def referral_rate(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Referral rate: % of converted trials whose user has a `referral_sent` event (at any
    time)."""
    hit = any_event([REFERRAL_EVENT])
    return rate_rows(engine, filters, no_channel(by), "referral_rate", hit, base=CONVERTED)


def cltv(
    engine: Engine,
    filters: Filters,
    by: Split | None = None,
    *,
    monthly_churn: float | None = None,
) -> list[KpiValue]:
    """Customer lifetime value (EUR): mean MRR of the converted trials that have one, times
    the expected lifetime in months, 1 / monthly churn (`monthly_churn`, by default the
    setting `TRIALPATH_CLTV_MONTHLY_CHURN`, 0.03: 33.3 months, an assumption until paying
    customers' churn is measured; `detail` names it). `n` is the converted trials with an
    MRR."""
    if monthly_churn is None:
        monthly_churn = get_settings().cltv_monthly_churn
    if not 0 < monthly_churn <= 1:
        raise KpiError(f"monthly_churn must be within (0, 1], got {monthly_churn}")
    by = no_channel(by)
    group = group_column(engine, by)
    has_mrr = CONVERTED & T.c.mrr.is_not(None)
    query = (
        select(
            group,
            func.count().label("converted"),
            func.sum(case((has_mrr, 1), else_=0)).label("n"),
            func.avg(case((has_mrr, T.c.mrr), else_=None)).label("mean_mrr"),
        )
        .select_from(T)
        .where(*population(filters), CONVERTED)
        .group_by(literal_column("grp"))
    )
    with engine.connect() as conn:
        rows = {row.grp: row for row in conn.execute(query)}
    lifetime = 1 / monthly_churn
    values = []
    for name in ordered(rows, by, None):
        row = rows.get(name)
        n = int(row.n or 0) if row else 0
        mean = float(row.mean_mrr) if row and row.mean_mrr is not None else None
        detail = {
            "mean_mrr": mean,
            "lifetime_months": lifetime,
            "monthly_churn": monthly_churn,
            "converted": int(row.converted) if row else 0,
        }
        value = mean * lifetime if mean is not None and n else None
        values.append(KpiValue("cltv", name, value, n, "EUR", detail))
    return values


def _holdout_outcomes(
    engine: Engine, filters: Filters, by: Split | None
) -> dict[str, dict[bool, list[tuple[bool, float]]]]:
    """Per group, for the trials that are over: (converted, MRR or 0) of the global holdout's
    trials (True) and of the others (False)."""
    group = group_column(engine, by)
    query = (
        select(
            group,
            (T.c.experiment_arm == GLOBAL_HOLDOUT).label("held_out"),
            CONVERTED.label("bought"),
            T.c.mrr,
        )
        .where(*population(filters))
        .where(ENDED)
    )
    found: dict[str, dict[bool, list[tuple[bool, float]]]] = {}
    with engine.connect() as conn:
        for row in conn.execute(query):
            sides = found.setdefault(row.grp, {True: [], False: []})
            mrr = float(row.mrr or 0.0) if row.bought else 0.0
            sides[bool(row.held_out)].append((bool(row.bought), mrr))
    return found


def incremental_conversion(
    engine: Engine, filters: Filters, by: Split | None = None
) -> list[KpiValue]:
    """What the journey adds to conversion (pts): trial-to-paid of the trials it ran minus that
    of the global holdout (`[holdout]`: no onboarding at all), over the trials that are over,
    with Newcombe's 95 % interval. `n` is the holdout's trials; `detail` gives both rates and
    sizes and the extra conversions per 1,000 trials. None until the holdout has ended trials."""
    by = no_channel(by)
    found = _holdout_outcomes(engine, filters, by)
    values = []
    for name in ordered(found, by, None):
        sides = found.get(name, {True: [], False: []})
        held, ran = sides[True], sides[False]
        x, n = sum(b for b, _ in held), len(held)
        tx, tn = sum(b for b, _ in ran), len(ran)
        detail: dict[str, Any] = {"holdout_trials": n, "journey_trials": tn}
        value = None
        if n and tn:
            result = two_proportions(tx, tn, x, n)
            value = 100 * result.diff
            detail |= {
                "journey_rate_pct": 100 * result.p1,
                "holdout_rate_pct": 100 * result.p2,
                "ci_low": 100 * result.ci_low,
                "ci_high": 100 * result.ci_high,
                "extra_conversions_per_1000": 1000 * result.diff,
            }
        values.append(KpiValue("incremental_conversion", name, value, n, "pts", detail))
    return values


def incremental_revenue(
    engine: Engine, filters: Filters, by: Split | None = None
) -> list[KpiValue]:
    """What the journey adds to revenue: monthly recurring revenue per 1,000 trials (those
    that are over; MRR 0 for those that did not buy) of the journey's trials minus the global
    holdout's, with Welch's 95 % interval. `n` is the holdout's trials."""
    by = no_channel(by)
    found = _holdout_outcomes(engine, filters, by)
    values = []
    for name in ordered(found, by, None):
        sides = found.get(name, {True: [], False: []})
        held = [mrr for _, mrr in sides[True]]
        ran = [mrr for _, mrr in sides[False]]
        detail: dict[str, Any] = {"holdout_trials": len(held), "journey_trials": len(ran)}
        value = None
        if held and ran:
            value = 1000 * (statistics.fmean(ran) - statistics.fmean(held))
            detail |= {
                "journey_mrr_per_trial": statistics.fmean(ran),
                "holdout_mrr_per_trial": statistics.fmean(held),
            }
            if len(held) > 1 and len(ran) > 1:
                welch = mean_diff(ran, held)
                detail |= {"ci_low": 1000 * welch.ci_low, "ci_high": 1000 * welch.ci_high}
        values.append(KpiValue("incremental_revenue", name, value, len(held), "EUR", detail))
    return values

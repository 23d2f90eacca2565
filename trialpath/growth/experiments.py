"""The experiment report: each arm's KPIs against the control's, with the difference, its
intervals (fixed and always-valid), the p-value, CUPED where it applies, and a verdict in
words. The KPIs themselves come from `trialpath.growth.kpis`; the statistics from
`trialpath.growth.stats`. Definitions: docs/kpis.md, "Experiments".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, case, func, select, true

from trialpath.core.definition import GLOBAL_HOLDOUT
from trialpath.growth.kpis import (
    CONVERTED,
    ENDED,
    NO_EXPERIMENT_ARM,
    SMALL_N,
    Filters,
    KpiValue,
    Split,
    T,
    activation_rate,
    milestone_durations,
    onboarding_completion,
    population,
    retention_7d,
    survey_scores,
    trial_to_paid,
)
from trialpath.growth.stats import (
    always_valid_diff,
    bootstrap_median_diff,
    cuped,
    mann_whitney,
    mean_diff,
    needed_per_arm,
    two_proportions,
)


@dataclass
class ArmComparison:
    """One KPI of one arm against the control: values, sizes, the difference (arm - control,
    in the KPI's unit: percentage points for rates), its 95 % interval, p-value and verdict.

    `needed_per_arm` (rates only) is what the two-proportion formula gives for the observed
    rates at 80 % power (for 5 points when the observed difference is smaller); the verdict
    never asks for fewer than 30 per arm, nor fewer than the z-test's normal approximation
    needs (5 expected successes and failures per arm)."""

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
    always_valid_low: float | None = None
    always_valid_high: float | None = None
    """Rates: the always-valid interval of `diff` (normal-mixture confidence sequence): it can
    be read on any day of the experiment, as often as wanted, and keeps its 95 %."""
    cuped_diff: float | None = None
    cuped_ci_low: float | None = None
    cuped_ci_high: float | None = None
    variance_reduction: float | None = None
    """Activation and trial-to-paid: the difference adjusted by what was known of each user
    at signup (CUPED), its interval, and the share of variance that removed (0 to 1)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


EXPERIMENT_KPIS = (
    "activation_rate",
    "trial_to_paid",
    "retention_7d",
    "onboarding_completion",
    "ttfv_median",
    "csat",
)
_BETTER: dict[str, int] = {
    "activation_rate": 1,
    "trial_to_paid": 1,
    "retention_7d": 1,
    "onboarding_completion": 0,  # completion is no goal in itself (seed 003): just reported
    "ttfv_median": -1,
    "csat": 1,
}
_RATES: dict[str, Callable[[Engine, Filters, Split | None], list[KpiValue]]] = {
    "activation_rate": activation_rate,
    "trial_to_paid": trial_to_paid,
    "retention_7d": retention_7d,
    "onboarding_completion": onboarding_completion,
}
ALPHA = 0.05
MIN_EFFECT = 0.05
"""The smallest difference of rates (5 points) worth sizing an experiment for."""


def arm_sizes(engine: Engine, filters: Filters) -> dict[str, int]:
    """Trials per experiment arm in the period."""
    query = (
        select(T.c.experiment_arm, func.count().label("n"))
        .select_from(T)
        .where(*population(filters))
        .group_by(T.c.experiment_arm)
    )
    with engine.connect() as conn:
        return {row.experiment_arm: int(row.n) for row in conn.execute(query)}


def experiment_note(sizes: Mapping[str, int], control: str = "generic") -> str | None:
    """Why there is nothing to compare, or None when there is."""
    arms = sorted(arm for arm in sizes if arm not in (NO_EXPERIMENT_ARM, GLOBAL_HOLDOUT))
    if not arms:
        return "no experiment in this period: every trial is in arm 'default'"
    if control not in arms:
        return f"the control arm {control!r} has no trials in this period (arms: {', '.join(arms)})"
    if len(arms) == 1:
        return f"only the control arm {control!r} has trials in this period"
    return None


def experiment_report(
    engine: Engine, filters: Filters, control: str = "generic"
) -> list[ArmComparison]:
    """For each arm other than the control (and `default`, trials outside the experiment) and
    each of activation_rate, trial_to_paid, retention_7d, onboarding_completion (percentage
    points, Newcombe interval, pooled z-test, sample size needed for the observed rates at
    80 % power), ttfv_median (hours, bootstrap interval of the difference of medians,
    Mann–Whitney p) and csat (mean score, bootstrap interval, Mann–Whitney p): the arm against
    the control. Empty when `experiment_note` says there is nothing to compare."""
    sizes = arm_sizes(engine, filters)
    if experiment_note(sizes, control) is not None:
        return []
    arms = sorted(arm for arm in sizes if arm not in (control, NO_EXPERIMENT_ARM, GLOBAL_HOLDOUT))
    report: list[ArmComparison] = []
    for kpi in EXPERIMENT_KPIS:
        if kpi in _RATES:
            rows = {v.group: v for v in _RATES[kpi](engine, filters, "arm")}
            compared = [_compare_rates(kpi, rows, arm, control) for arm in arms]
            if kpi in _CUPED_OUTCOMES:
                users = _cuped_users(engine, filters, kpi)
                for row in compared:
                    _add_cuped(row, users)
            report += compared
        elif kpi == "ttfv_median":
            durations = milestone_durations(engine, filters, "arm")
            samples = {arm: entry.hours for arm, entry in durations.items()}
            report += [_compare_samples(kpi, samples, arm, control, "hours") for arm in arms]
        else:
            scores = survey_scores(engine, filters, "arm", "survey_csat")[0]
            report += [_compare_samples(kpi, scores, arm, control, "score") for arm in arms]
    return report


def _compare_rates(kpi: str, rows: Mapping[str, KpiValue], arm: str, control: str) -> ArmComparison:
    method = "Newcombe hybrid score interval; pooled two-proportion z-test"
    a, c = rows.get(arm), rows.get(control)
    n, cn = (a.n if a else 0), (c.n if c else 0)
    base = _blank(kpi, arm, control, "pts", method)
    base.value, base.control_value = (a.value if a else None), (c.value if c else None)
    base.n, base.control_n = n, cn
    if not n or not cn:
        base.verdict = _no_data(arm, control, n, cn)
        return base
    assert a is not None and c is not None
    x, cx = int(a.detail["count"]), int(c.detail["count"])
    result = two_proportions(x, n, cx, cn)
    base.diff = 100 * result.diff
    base.ci_low, base.ci_high = 100 * result.ci_low, 100 * result.ci_high
    base.p_value = result.p_value
    valid = always_valid_diff(x, n, cx, cn)
    base.always_valid_low, base.always_valid_high = 100 * valid.ci_low, 100 * valid.ci_high
    base.needed_per_arm = _needed(result.p2, result.p1)
    # The z-test is a normal approximation: it needs about 5 expected successes and failures
    # per arm (4/5 against 0/3 gives p = 0.03 where Fisher's exact test gives 0.14).
    pooled = (x + cx) / (n + cn)
    approximation = math.ceil(5 / min(pooled, 1 - pooled)) if 0 < pooled < 1 else 0
    floor = max(SMALL_N, approximation)
    need = max(floor, base.needed_per_arm or 0)
    base.verdict = _verdict(base, "pts", floor=floor, need=need, estimated=True)
    return base


_CUPED_OUTCOMES: dict[str, tuple[ColumnElement[bool], ColumnElement[bool] | None]] = {
    "activation_rate": (T.c.activated == true(), None),
    "trial_to_paid": (CONVERTED, ENDED),
}
"""The rates CUPED adjusts: outcome and population as the KPI's own (`_rate_rows`)."""
COVARIATES = ("company given", "urgency this week", "urgency this month", "came from a campaign")
"""What CUPED adjusts by: what each user told at signup, before any message could differ by
arm (`docs/kpis.md`). Urgency counts only when the qualifier came with the signup."""


def _cuped_users(
    engine: Engine, filters: Filters, kpi: str
) -> dict[str, tuple[list[float], list[list[float]]]]:
    """Per arm: each user's outcome (0/1) and covariates."""
    hit, base = _CUPED_OUTCOMES[kpi]
    at_signup = T.c.persona_source == "signup"
    query = select(
        T.c.experiment_arm,
        case((hit, 1), else_=0).label("y"),
        case((func.coalesce(T.c.company, "") != "", 1), else_=0).label("company"),
        case((and_(at_signup, T.c.urgency == "this_week"), 1), else_=0).label("week"),
        case((and_(at_signup, T.c.urgency == "this_month"), 1), else_=0).label("month"),
        case((T.c.utm_campaign.is_not(None), 1), else_=0).label("campaign"),
    ).where(*population(filters))
    if base is not None:
        query = query.where(base)
    users: dict[str, tuple[list[float], list[list[float]]]] = {}
    with engine.connect() as conn:
        for row in conn.execute(query):
            ys, xs = users.setdefault(row.experiment_arm, ([], []))
            ys.append(float(row.y))
            xs.append([float(row.company), float(row.week), float(row.month), float(row.campaign)])
    return users


def _add_cuped(
    row: ArmComparison, users: Mapping[str, tuple[list[float], list[list[float]]]]
) -> None:
    a, c = users.get(row.arm), users.get(row.control)
    if a is None or c is None or len(a[0]) < 2 or len(c[0]) < 2:
        return
    adjusted = cuped(a[0], a[1], c[0], c[1])
    row.cuped_diff = 100 * adjusted.diff
    row.cuped_ci_low, row.cuped_ci_high = 100 * adjusted.ci_low, 100 * adjusted.ci_high
    row.variance_reduction = adjusted.variance_reduction


def _needed(control: float, arm: float) -> int:
    """Users per arm to detect the observed difference at 80 % power, or a difference of
    `MIN_EFFECT` when the observed one is smaller: otherwise a near-zero difference would ask
    for millions, and large arms showing no effect would never read "no clear difference"."""
    if abs(arm - control) >= MIN_EFFECT:
        return needed_per_arm(control, arm)
    up = control + MIN_EFFECT <= 1 and (arm >= control or control - MIN_EFFECT < 0)
    return needed_per_arm(control, control + MIN_EFFECT if up else control - MIN_EFFECT)


def _compare_samples(
    kpi: str, samples: Mapping[str, Sequence[float]], arm: str, control: str, unit: str
) -> ArmComparison:
    """Medians of hours (bootstrap interval) or means of scores (Welch interval), with the
    Mann–Whitney test for both: durations are skewed and scores ordinal."""
    a, c = list(samples.get(arm, [])), list(samples.get(control, []))
    median = unit == "hours"
    statistic = statistics.median if median else statistics.fmean
    method = (
        "bootstrap percentile interval of the median difference (2000 resamples)"
        if median
        else "Welch normal interval of the mean difference"
    ) + "; Mann–Whitney U test"
    base = _blank(kpi, arm, control, unit, method)
    base.value, base.control_value = (statistic(a) if a else None), (statistic(c) if c else None)
    base.n, base.control_n = len(a), len(c)
    if not a or not c:
        base.verdict = _no_data(arm, control, len(a), len(c))
        return base
    base.diff = statistic(a) - statistic(c)
    base.p_value = mann_whitney(a, c).p_value
    if median:
        boot = bootstrap_median_diff(a, c)
        base.ci_low, base.ci_high = boot.ci_low, boot.ci_high
    elif len(a) > 1 and len(c) > 1:
        welch = mean_diff(a, c)
        base.ci_low, base.ci_high = welch.ci_low, welch.ci_high
    shown = "h" if median else ""
    base.verdict = _verdict(base, shown, floor=SMALL_N, need=SMALL_N, estimated=False)
    return base


def _blank(kpi: str, arm: str, control: str, unit: str, method: str) -> ArmComparison:
    return ArmComparison(
        kpi=kpi,
        arm=arm,
        control=control,
        unit=unit,
        value=None,
        control_value=None,
        n=0,
        control_n=0,
        diff=None,
        ci_low=None,
        ci_high=None,
        p_value=None,
        needed_per_arm=None,
        verdict="",
        method=method,
    )


def _no_data(arm: str, control: str, n: int, cn: int) -> str:
    missing = [name for name, size in ((arm, n), (control, cn)) if not size]
    return f"no data for {' nor '.join(missing)}"


def _number(value: float, unit: str) -> str:
    """`+22`, `−5.2`: signed, rounded for the unit (points, hours, scores), never `−0`."""
    digits = 0 if unit == "pts" else (1 if unit == "h" else 2)
    rounded = round(value, digits) or 0.0
    return f"{rounded:+.{digits}f}".replace("-", "−")


def _signed(value: float, unit: str) -> str:
    return f"{_number(value, unit)} {unit}".rstrip()


def _verdict(row: ArmComparison, unit: str, floor: int, need: int, estimated: bool) -> str:
    """Too few while the smaller arm is under `floor`; beats (or trails) when significant at
    5 % with the interval excluding zero; too few while the smaller arm is under `need`
    (`estimated`: from the sample-size formula, "about"; else a fixed minimum, "at least");
    else no clear difference."""
    smaller = min(row.n, row.control_n)
    size = f"need about {need}" if estimated else f"need at least {need}"
    too_few = f"too few trials to conclude (n={row.n} and {row.control_n}; {size} per arm)"
    if smaller < floor:
        return too_few
    assert row.diff is not None and row.ci_low is not None and row.ci_high is not None
    assert row.p_value is not None
    interval = f"95 % CI {_number(row.ci_low, unit)} to {_number(row.ci_high, unit)}"
    if row.p_value < ALPHA and (row.ci_low > 0 or row.ci_high < 0):
        direction = _BETTER[row.kpi] * (1 if row.diff > 0 else -1)
        if direction > 0:
            word = "beats"
        elif direction < 0:
            word = "trails"
        else:
            word = "is higher than" if row.diff > 0 else "is lower than"
        return f"{row.arm} {word} {row.control} by {_signed(row.diff, unit)} ({interval})"
    if smaller < need:
        return too_few
    return (
        f"no clear difference between {row.arm} and {row.control} "
        f"({_signed(row.diff, unit)}, {interval}, p = {row.p_value:.2f})"
    )

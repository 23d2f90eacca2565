"""The statistics the experiment report needs, from maintained libraries where they have the
method, and the two that none offers written here, each checked against reference values.

From statsmodels: Wilson's interval of a proportion, Newcombe's hybrid score interval of two
(method 10 of Newcombe 1998) and the pooled two-proportion z-test, Welch's normal interval of
two means, the sample size per arm for two rates (normal approximation with the variances under
both hypotheses, Fleiss, Levin & Paik) and Cohen's arcsine effect size and power. From SciPy: the
Mann–Whitney U test and the bootstrap.

Written here:
- `always_valid_diff`: an interval of the difference of two rates that stays valid however often
  it is looked at (the normal-mixture confidence sequence of Robbins, used by the mixture
  sequential probability ratio test of Johari et al. 2017 and Howard et al. 2021);
- `cuped`: CUPED (Deng et al. 2013), the difference of two means adjusted by covariates known
  before assignment, which narrows its interval without moving its expectation.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    proportions_ztest,
    samplesize_proportions_2indep_onetail,
)
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

_NORMAL = statistics.NormalDist()


def z_quantile(p: float) -> float:
    """The standard normal quantile: `z_quantile(0.975)` is 1.959964."""
    return _NORMAL.inv_cdf(p)


def two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z (erfc keeps precision far in the tail)."""
    return math.erfc(abs(z) / math.sqrt(2))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1), numpy's linear interpolation (Hyndman and Fan type 7):
    `percentile(v, 0.5)` is the median."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 1:
        raise ValueError(f"q must be within [0, 1], got {q}")
    return float(np.percentile(np.asarray(values, dtype=float), 100 * q))


@dataclass(frozen=True)
class ProportionsDiff:
    """p1 - p2 with its confidence interval (Newcombe hybrid score) and two-sided p-value
    (pooled z-test). Proportions are fractions (0.34), not percentages."""

    p1: float
    p2: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    z: float
    confidence: float


def _check(x: int, n: int) -> None:
    if n <= 0 or not 0 <= x <= n:
        raise ValueError(f"need 0 <= x <= n and n > 0, got x={x}, n={n}")


def wilson(x: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion x/n."""
    _check(x, n)
    low, high = proportion_confint(x, n, alpha=1 - confidence, method="wilson")
    return max(0.0, float(low)), min(1.0, float(high))


def two_proportions(
    x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95
) -> ProportionsDiff:
    """Compares x1/n1 with x2/n2.

    The interval of p1 - p2 is Newcombe's hybrid score interval (built from the two Wilson
    intervals): unlike the Wald interval it stays within [-1, 1] and keeps its coverage with
    small samples and rates near 0 or 1, which trial arms often are. The p-value is the
    two-sided z-test with the pooled proportion (1.0 when the pooled rate is 0 or 1: no
    difference can show)."""
    _check(x1, n1)
    _check(x2, n2)
    low, high = confint_proportions_2indep(
        x1, n1, x2, n2, method="newcomb", compare="diff", alpha=1 - confidence
    )
    pooled = (x1 + x2) / (n1 + n2)
    if 0 < pooled < 1:
        z, p_value = (float(v) for v in proportions_ztest([x1, x2], [n1, n2]))
    else:
        z, p_value = 0.0, 1.0
    return ProportionsDiff(
        p1=x1 / n1,
        p2=x2 / n2,
        diff=x1 / n1 - x2 / n2,
        ci_low=float(low),
        ci_high=float(high),
        p_value=p_value,
        z=z,
        confidence=confidence,
    )


@dataclass(frozen=True)
class BootstrapDiff:
    """statistic(a) - statistic(b), with a percentile bootstrap interval."""

    diff: float
    ci_low: float
    ci_high: float
    reps: int
    confidence: float


def bootstrap_diff(
    a: Sequence[float],
    b: Sequence[float],
    statistic: Callable[..., float],
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    *,
    vectorized: bool = False,
) -> BootstrapDiff:
    """Resamples each group with replacement `reps` times (SciPy's `bootstrap`, percentile
    method; the seed makes the interval reproducible). `statistic(sample)` or, `vectorized`,
    `statistic(samples, axis=-1)` as numpy's reductions take it (much faster)."""
    if not a or not b:
        raise ValueError("both samples need at least one value")
    if reps < 1:
        raise ValueError("reps must be at least 1")
    if vectorized:
        stat: Callable[..., Any] = statistic
    else:

        def stat(x: np.ndarray, axis: int = -1) -> Any:
            return np.apply_along_axis(lambda row: statistic(list(row)), axis, x)

    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(stat(xa, axis=-1) - stat(xb, axis=-1))
    if len(set(a)) == 1 and len(set(b)) == 1:
        # Every resample is the sample itself (SciPy refuses a degenerate distribution).
        return BootstrapDiff(diff, diff, diff, reps, confidence)
    if len(a) == 1 or len(b) == 1:
        # A sample of one value resamples to itself: bootstrap the other one alone.
        fixed_a, fixed_b = float(stat(xa, axis=-1)), float(stat(xb, axis=-1))
        if len(b) == 1:
            data: tuple[np.ndarray, ...] = (xa,)

            def difference(x: np.ndarray, axis: int = -1) -> Any:
                return stat(x, axis=axis) - fixed_b

        else:
            data = (xb,)

            def difference(x: np.ndarray, axis: int = -1) -> Any:
                return fixed_a - stat(x, axis=axis)

    else:
        data = (xa, xb)

        def difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> Any:  # type: ignore[misc]
            return stat(x, axis=axis) - stat(y, axis=axis)

    result = scipy_stats.bootstrap(
        data,
        difference,
        n_resamples=reps,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        paired=False,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return BootstrapDiff(diff, float(interval.low), float(interval.high), reps, confidence)


def bootstrap_median_diff(
    a: Sequence[float], b: Sequence[float], reps: int = 2000, seed: int = 0
) -> BootstrapDiff:
    """median(a) - median(b) with a 95 % percentile bootstrap interval (numpy's median over
    all resamples at once: thousands of durations take milliseconds)."""
    return bootstrap_diff(a, b, np.median, reps=reps, seed=seed, vectorized=True)


@dataclass(frozen=True)
class MeanDiff:
    """mean(a) - mean(b) with Welch's normal interval."""

    diff: float
    ci_low: float
    ci_high: float
    se: float
    confidence: float


def mean_diff(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> MeanDiff:
    """Difference of two means with the interval diff ± z * sqrt(var(a)/n_a + var(b)/n_b)
    (sample variances; normal, not Student: meant for 30 values per sample or more)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("both samples need at least two values")
    compare = CompareMeans(DescrStatsW(np.asarray(a, float)), DescrStatsW(np.asarray(b, float)))
    low, high = compare.zconfint_diff(alpha=1 - confidence, usevar="unequal")
    diff = statistics.fmean(a) - statistics.fmean(b)
    return MeanDiff(
        diff=diff,
        ci_low=float(low),
        ci_high=float(high),
        se=float(compare.std_meandiff_separatevar),
        confidence=confidence,
    )


@dataclass(frozen=True)
class MannWhitney:
    """U of the first sample (pairs where a > b, ties counting one half) and the two-sided
    p-value of the normal approximation."""

    u: float
    p_value: float
    z: float


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> MannWhitney:
    """Mann–Whitney U test, two-sided, normal approximation with the tie correction and a
    continuity correction (SciPy's `mannwhitneyu`, `method="asymptotic"`). Rough below about 8
    values per sample."""
    if not a or not b:
        raise ValueError("both samples need at least one value")
    if len(set(a) | set(b)) == 1:
        return MannWhitney(u=len(a) * len(b) / 2, p_value=1.0, z=0.0)  # all tied
    result = scipy_stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic")
    u, p_value = float(result.statistic), float(result.pvalue)
    z = _NORMAL.inv_cdf(1 - p_value / 2) if p_value < 1 else 0.0
    return MannWhitney(u=u, p_value=p_value, z=math.copysign(z, u - len(a) * len(b) / 2))


def needed_per_arm(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Users per arm for a two-sided test at level `alpha` to detect p1 vs p2 with `power`
    (statsmodels' normal approximation with the variances under both hypotheses, rounded up):

        n = (z(1-alpha/2) * sqrt(2 p q) + z(power) * sqrt(p1 q1 + p2 q2))^2 / (p1 - p2)^2

    with p = (p1 + p2) / 2, q = 1 - p."""
    if p1 == p2:
        raise ValueError("p1 and p2 are equal: no sample size detects no difference")
    if not (0 <= p1 <= 1 and 0 <= p2 <= 1):
        raise ValueError("p1 and p2 are proportions within [0, 1]")
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        n = float(
            samplesize_proportions_2indep_onetail(
                p2 - p1, p1, power, ratio=1, alpha=alpha, alternative="two-sided"
            )
        )
    if not math.isfinite(n) or n > MAX_PER_ARM:
        raise ValueError(
            f"a difference of {abs(p2 - p1):.3g} is too small to detect: more than "
            f"{MAX_PER_ARM:,} users per arm"
        )
    return math.ceil(n - 1e-9)


MAX_PER_ARM = 10**9
"""Beyond this many users per arm an experiment is not a plan (and floats lose the count)."""


@dataclass(frozen=True)
class PowerPlan:
    """What an experiment on a rate needs: users per arm and in all, by two standard methods."""

    baseline: float
    target: float
    alpha: float
    power: float
    arms: int
    per_arm: int
    """Normal approximation with the variances under both hypotheses (Fleiss, Levin & Paik)."""
    cohen_h: float
    per_arm_arcsine: int
    """Cohen's arcsine method (effect size h; Cohen 1988, table 6.4.1)."""

    @property
    def total(self) -> int:
        return self.per_arm * self.arms


def plan_power(
    baseline: float,
    lift: float,
    *,
    relative: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
    arms: int = 2,
) -> PowerPlan:
    """Users per arm to detect `lift` over `baseline` (absolute points as a fraction, 0.05; or
    `relative`, 0.1 for +10 %), two-sided at level `alpha` with `power`, each arm against the
    control (no correction for several arms: say so when planning more than two)."""
    if not 0 < baseline < 1:
        raise ValueError(f"baseline must be a rate strictly between 0 and 1, got {baseline}")
    if lift == 0:
        raise ValueError("lift must not be 0: no sample size detects no difference")
    target = baseline * (1 + lift) if relative else baseline + lift
    if not 0 < target < 1:
        raise ValueError(f"baseline {baseline} with lift {lift} gives {target:.4g}, not a rate")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be within (0, 0.5), got {alpha}")
    if not 0.5 <= power < 1:
        raise ValueError(f"power must be within [0.5, 1), got {power}")
    if not 2 <= arms <= 20:
        raise ValueError(f"arms must be within [2, 20], got {arms}")
    per_arm = needed_per_arm(baseline, target, alpha, power)
    h = float(proportion_effectsize(target, baseline))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        arcsine = float(
            NormalIndPower().solve_power(effect_size=abs(h), alpha=alpha, power=power, ratio=1)
        )
    if not math.isfinite(arcsine) or arcsine > MAX_PER_ARM:
        raise ValueError(f"a lift of {lift:g} is too small to detect: more than {MAX_PER_ARM:,}")
    return PowerPlan(
        baseline=baseline,
        target=target,
        alpha=alpha,
        power=power,
        arms=arms,
        per_arm=per_arm,
        cohen_h=h,
        per_arm_arcsine=math.ceil(arcsine - 1e-9),
    )


# --- always-valid intervals --------------------------------------------------------------------


DEFAULT_MIXTURE_SD = 0.05
"""The mixing standard deviation τ of the always-valid interval of a difference of rates: the
size of difference it is tuned for (5 points). Smaller differences take longer to show; the
interval stays valid for any."""


def mixture_half_width(
    variance: float, alpha: float = 0.05, tau: float = DEFAULT_MIXTURE_SD
) -> float:
    """Half-width of the normal-mixture confidence sequence for an estimate with `variance`
    (V): sqrt(V (V + τ²) / τ² · (log((V + τ²) / V) + 2 log(1 / α))).

    It is the set of differences the mixture likelihood ratio (Robbins 1970; the mSPRT of
    Johari et al. 2017) does not reject at level α: by Ville's inequality, the chance that it
    ever excludes the true difference, at any number of looks, is at most α."""
    if variance <= 0:
        return 0.0
    tau2 = tau * tau
    return math.sqrt(
        variance
        * (variance + tau2)
        / tau2
        * (math.log((variance + tau2) / variance) - 2 * math.log(alpha))
    )


@dataclass(frozen=True)
class AlwaysValid:
    diff: float
    ci_low: float
    ci_high: float
    alpha: float
    tau: float


def always_valid_diff(
    x1: int, n1: int, x2: int, n2: int, alpha: float = 0.05, tau: float = DEFAULT_MIXTURE_SD
) -> AlwaysValid:
    """p1 - p2 with its always-valid interval: it can be read every day of an experiment, and
    stopping when it excludes 0 keeps the error rate at α (a fixed-horizon interval read daily
    does not). The variance is the plug-in p1 q1 / n1 + p2 q2 / n2, with rates kept off 0 and 1
    by half a user so a zero count does not claim certainty."""
    _check(x1, n1)
    _check(x2, n2)
    p1, p2 = x1 / n1, x2 / n2
    s1 = min(max(x1, 0.5), n1 - 0.5) / n1 if n1 > 1 else 0.5
    s2 = min(max(x2, 0.5), n2 - 0.5) / n2 if n2 > 1 else 0.5
    variance = s1 * (1 - s1) / n1 + s2 * (1 - s2) / n2
    half = mixture_half_width(variance, alpha, tau)
    diff = p1 - p2
    return AlwaysValid(diff, max(-1.0, diff - half), min(1.0, diff + half), alpha, tau)


# --- CUPED -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cuped:
    """mean(y_a) - mean(y_b) after adjusting y by covariates known before assignment."""

    diff: float
    ci_low: float
    ci_high: float
    raw_diff: float
    variance_reduction: float
    """1 - var(adjusted y) / var(y): the share of the variance the covariates explained away
    (the interval is sqrt(1 - this) times as wide)."""
    theta: tuple[float, ...]


def cuped(
    y_a: Sequence[float],
    x_a: Sequence[Sequence[float]],
    y_b: Sequence[float],
    x_b: Sequence[Sequence[float]],
    confidence: float = 0.95,
) -> Cuped:
    """CUPED: y - (x - mean(x)) θ, with θ the least-squares coefficients of y on x over both
    groups pooled (with one covariate, θ = cov(x, y) / var(x)). The covariates must not depend
    on the assignment (known before it); then the adjusted difference estimates the same
    effect with less variance. Welch normal interval of the adjusted means."""
    ya, yb = np.asarray(y_a, float), np.asarray(y_b, float)
    xa, xb = np.asarray(x_a, float), np.asarray(x_b, float)
    if len(ya) < 2 or len(yb) < 2:
        raise ValueError("both groups need at least two users")
    if xa.ndim != 2 or xb.ndim != 2 or xa.shape != (len(ya), xb.shape[1]) or len(xb) != len(yb):
        raise ValueError("x needs one row of the same covariates per user")
    y, x = np.concatenate([ya, yb]), np.concatenate([xa, xb])
    centred = x - x.mean(axis=0)
    theta, *_ = np.linalg.lstsq(centred, y - y.mean(), rcond=None)
    adjusted_a = ya - (xa - x.mean(axis=0)) @ theta
    adjusted_b = yb - (xb - x.mean(axis=0)) @ theta
    result = mean_diff(list(adjusted_a), list(adjusted_b), confidence)
    before = float(np.var(y - 0, ddof=1)) if len(y) > 1 else 0.0
    after = float(np.var(np.concatenate([adjusted_a, adjusted_b]), ddof=1))
    reduction = 1 - after / before if before > 0 else 0.0
    return Cuped(
        diff=result.diff,
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        raw_diff=float(ya.mean() - yb.mean()),
        variance_reduction=max(0.0, reduction),
        theta=tuple(float(t) for t in theta),
    )

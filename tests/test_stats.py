"""The experiment statistics against hand computations, published tables (Newcombe 1998,
Cohen 1988) and values SciPy 1.17 gave once (scipy.stats.mannwhitneyu, method="asymptotic";
numpy.percentile); the always-valid interval against its closed form and by simulating daily
looks; CUPED against a hand-computed adjustment and a simulation."""

from __future__ import annotations

import math
import random
import statistics

import numpy as np
import pytest

from trialpath.growth.stats import (
    always_valid_diff,
    bootstrap_diff,
    bootstrap_median_diff,
    cuped,
    mann_whitney,
    mean_diff,
    mixture_half_width,
    needed_per_arm,
    percentile,
    plan_power,
    two_proportions,
    wilson,
    z_quantile,
)

Z = 1.959963984540054  # z(0.975)


def test_two_proportions_34_of_100_against_12_of_100_by_hand() -> None:
    result = two_proportions(34, 100, 12, 100)
    assert result.diff == pytest.approx(0.22)
    # Pooled z-test: p = 46/200 = 0.23, SE = sqrt(0.23 * 0.77 * (1/100 + 1/100)) = 0.059515.
    se = math.sqrt(0.23 * 0.77 * 0.02)
    assert se == pytest.approx(0.059515, abs=1e-6)
    assert result.z == pytest.approx(0.22 / se) == pytest.approx(3.6966, abs=1e-4)
    assert result.p_value == pytest.approx(0.00021853592, rel=1e-6)  # 2 * norm.sf(3.6966)
    # Newcombe: from the Wilson intervals of each rate.
    l1, u1 = wilson(34, 100)
    l2, u2 = wilson(12, 100)
    centre = (0.34 + Z**2 / 200) / (1 + Z**2 / 100)
    half = Z / (1 + Z**2 / 100) * math.sqrt(0.34 * 0.66 / 100 + Z**2 / 40000)
    assert (l1, u1) == pytest.approx((centre - half, centre + half))
    assert (l1, u1) == pytest.approx((0.2546, 0.4372), abs=1e-4)
    assert result.ci_low == pytest.approx(0.22 - math.sqrt((0.34 - l1) ** 2 + (u2 - 0.12) ** 2))
    assert result.ci_high == pytest.approx(0.22 + math.sqrt((u1 - 0.34) ** 2 + (0.12 - l2) ** 2))
    assert (result.ci_low, result.ci_high) == pytest.approx((0.1043, 0.3293), abs=1e-4)
    # Wald would say 0.22 ± 1.96 * sqrt(0.34 * 0.66 / 100 + 0.12 * 0.88 / 100) = (0.1074,
    # 0.3326); the score interval sits a little closer to zero.
    wald = Z * math.sqrt(0.34 * 0.66 / 100 + 0.12 * 0.88 / 100)
    assert (0.22 - wald, 0.22 + wald) == pytest.approx((0.1074, 0.3326), abs=1e-4)
    assert result.ci_low < 0.22 - wald and result.ci_high < 0.22 + wald


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10.
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (0, 10, 0, 10, -0.2775, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0000),
        (10, 10, 0, 10, 0.6075, 1.0000),
    ],
)
def test_newcombe_interval_matches_the_published_table(
    x1: int, n1: int, x2: int, n2: int, low: float, high: float
) -> None:
    result = two_proportions(x1, n1, x2, n2)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=5e-5)


def test_two_proportions_without_any_difference_to_see() -> None:
    none = two_proportions(0, 10, 0, 10)
    assert (none.diff, none.p_value) == (0.0, 1.0)
    same = two_proportions(5, 10, 5, 10)
    assert same.p_value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n > 0"):
        two_proportions(1, 0, 1, 10)


def test_percentile_is_numpy_linear() -> None:
    values = [3, 1, 4, 1, 5, 9, 2, 6]
    # Sorted 1 1 2 3 4 5 6 9; 90 %: rank 0.9 * 7 = 6.3 -> 6 + 0.3 * (9 - 6) = 6.9.
    assert percentile(values, 0.9) == pytest.approx(6.9)
    assert percentile(values, 0.5) == statistics.median(values) == 3.5
    assert percentile([7.0], 0.9) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


def test_mann_whitney_small_example_counted_by_hand() -> None:
    a, b = [1, 2, 4, 7], [3, 5, 6, 8, 9]
    # U of a = pairs with a > b: 1 and 2 beat none, 4 beats 3, 7 beats 3, 5 and 6: 0+0+1+3.
    result = mann_whitney(a, b)
    assert result.u == 4
    assert mann_whitney(b, a).u == 4 * 5 - 4
    # mean 10, sd sqrt(4 * 5 * 10 / 12) = 4.0825; z = (|4 - 10| - 0.5) / 4.0825 = 1.3472.
    assert abs(result.z) == pytest.approx(5.5 / math.sqrt(200 / 12))
    assert result.p_value == pytest.approx(0.17790959498698244, rel=1e-9)  # SciPy


def test_mann_whitney_with_ties_matches_scipy() -> None:
    a, b = [1, 2, 2, 3, 3, 3, 5, 8], [2, 3, 4, 4, 6, 7, 9, 9, 10]
    result = mann_whitney(a, b)
    assert result.u == 15.5
    assert result.p_value == pytest.approx(0.05193759572394502, rel=1e-9)
    other = mann_whitney([19, 22, 16, 29, 24], [20, 11, 17, 12])
    assert (other.u, other.p_value) == (17.0, pytest.approx(0.11134688653314041, rel=1e-9))
    assert mann_whitney([4, 4], [4, 4, 4]).p_value == 1.0  # all tied: nothing to see


def test_bootstrap_median_difference() -> None:
    a = [float(x) for x in range(1, 11)]  # median 5.5
    b = [2.0, 3.0, 4.0, 5.0]  # median 3.5
    result = bootstrap_median_diff(a, b, reps=2000, seed=0)
    assert result.diff == 2.0
    assert result.ci_low < 2.0 < result.ci_high
    assert result == bootstrap_median_diff(a, b, reps=2000, seed=0)  # the seed fixes it
    constant = bootstrap_median_diff([5.0] * 6, [2.0] * 4)
    assert (constant.diff, constant.ci_low, constant.ci_high) == (3.0, 3.0, 3.0)
    mean = bootstrap_diff([1.0, 2.0, 3.0], [1.0], statistics.fmean, reps=50)
    assert mean.diff == 1.0
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_median_diff([], [1.0])


def test_fast_median_bootstrap_agrees_with_resampling() -> None:
    rng = random.Random(3)
    a = [rng.expovariate(1 / 10) for _ in range(300)]
    b = [rng.expovariate(1 / 14) for _ in range(200)]
    fast = bootstrap_median_diff(a, b, reps=4000, seed=1)  # numpy over every resample at once
    slow = bootstrap_diff(a, b, statistics.median, reps=4000, seed=1)  # one resample at a time
    assert fast.diff == slow.diff
    assert fast.ci_low == pytest.approx(slow.ci_low, abs=0.5)
    assert fast.ci_high == pytest.approx(slow.ci_high, abs=0.5)


def test_mean_diff_welch_by_hand() -> None:
    a, b = [4.0, 5.0, 5.0, 3.0, 4.0], [3.0, 3.0, 4.0, 2.0]
    # Means 4.2 and 3; variances 2.8 / 4 = 0.7 and 2 / 3; SE sqrt(0.7/5 + (2/3)/4) = 0.553775.
    result = mean_diff(a, b)
    assert result.diff == pytest.approx(1.2)
    assert result.se == pytest.approx(math.sqrt(0.7 / 5 + (2 / 3) / 4)) == pytest.approx(0.553775)
    se = math.sqrt(0.7 / 5 + (2 / 3) / 4)
    assert (result.ci_low, result.ci_high) == pytest.approx((1.2 - Z * se, 1.2 + Z * se))
    assert (result.ci_low, result.ci_high) == pytest.approx((0.1146, 2.2854), abs=1e-4)
    with pytest.raises(ValueError, match="at least two values"):
        mean_diff([1.0], [2.0, 3.0])


def test_needed_per_arm_for_12_against_34_percent() -> None:
    # n = (z_.975 sqrt(2 * 0.23 * 0.77) + z_.8 sqrt(0.12 * 0.88 + 0.34 * 0.66))^2 / 0.22^2
    z_power = z_quantile(0.8)
    assert z_power == pytest.approx(0.841621, abs=1e-6)
    root = Z * math.sqrt(2 * 0.23 * 0.77) + z_power * math.sqrt(0.12 * 0.88 + 0.34 * 0.66)
    assert root**2 / 0.22**2 == pytest.approx(56.25, abs=0.01)
    assert needed_per_arm(0.12, 0.34) == 57 == needed_per_arm(0.34, 0.12)
    # A smaller effect needs many more users: 12 % against 15 %.
    assert needed_per_arm(0.12, 0.15) > 1000
    with pytest.raises(ValueError, match="equal"):
        needed_per_arm(0.2, 0.2)


def test_wilson_matches_newcombes_published_single_proportion_table() -> None:
    # Newcombe (1998a), Statistics in Medicine 17:857-872, table I, method 3 (Wilson score).
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    assert wilson(0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)


@pytest.mark.parametrize(("h", "per_arm"), [(0.2, 392), (0.5, 63), (0.8, 25)])
def test_power_plan_against_cohens_table(h: float, per_arm: int) -> None:
    """Cohen (1988), Statistical Power Analysis, table 6.4.1: n per sample to detect an
    arcsine difference h with power 0.80, two-sided at 0.05 (rounded to the nearest)."""
    # Rates whose arcsine difference is h: 2 asin(sqrt(p2)) - 2 asin(sqrt(0.5)) = h.
    target = math.sin(h / 2 + math.asin(math.sqrt(0.5))) ** 2
    plan = plan_power(0.5, target - 0.5)
    assert plan.cohen_h == pytest.approx(h)
    assert plan.per_arm_arcsine in (per_arm, per_arm + 1)  # ours is rounded up
    assert (plan.per_arm_arcsine - 1 <= per_arm) and round(
        (z_quantile(0.975) + z_quantile(0.8)) ** 2 * 2 / h**2
    ) == per_arm


def test_power_plan_for_a_planned_lift() -> None:
    # 20 % -> 25 %: (1.96 sqrt(2 * 0.225 * 0.775) + 0.8416 sqrt(0.2 * 0.8 + 0.25 * 0.75))^2
    # / 0.05^2 = 1093.7, so 1094 per arm, 2188 in all.
    plan = plan_power(0.2, 0.05)
    assert (plan.target, plan.per_arm, plan.total) == (pytest.approx(0.25), 1094, 2188)
    relative = plan_power(0.2, 0.25, relative=True, arms=3)
    assert relative.target == pytest.approx(0.25) and relative.total == 3 * 1094
    for bad, message in (
        (dict(baseline=0.0, lift=0.1), "baseline"),
        (dict(baseline=0.9, lift=0.2), "not a rate"),
        (dict(baseline=0.2, lift=0.0), "lift must not be 0"),
        (dict(baseline=0.2, lift=0.1, power=0.3), "power"),
    ):
        with pytest.raises(ValueError, match=message):
            plan_power(**bad)  # type: ignore[arg-type]


def test_always_valid_interval_closed_form() -> None:
    # V = 0.2 * 0.8 / 1000 + 0.25 * 0.75 / 1000 = 0.0003475; tau^2 = 0.0025:
    # half = sqrt(V (V + tau^2) / tau^2 * (log((V + tau^2) / V) + 2 log 20))
    #      = sqrt(0.00039581 * (2.10343 + 5.99146)) = 0.05660.
    v, tau2 = 0.0003475, 0.0025
    expected = math.sqrt(v * (v + tau2) / tau2 * (math.log((v + tau2) / v) + 2 * math.log(20)))
    assert expected == pytest.approx(0.05660, abs=1e-5)
    result = always_valid_diff(250, 1000, 200, 1000)
    assert result.diff == pytest.approx(0.05)
    assert (result.ci_low, result.ci_high) == pytest.approx((0.05 - expected, 0.05 + expected))
    # Wider than the fixed-horizon interval of the same data: the price of looking any time.
    fixed = two_proportions(250, 1000, 200, 1000)
    assert result.ci_low < fixed.ci_low and result.ci_high > fixed.ci_high
    assert mixture_half_width(0.0) == 0.0


def test_daily_looks_keep_the_always_valid_error_rate_and_break_the_fixed_one() -> None:
    """A/A experiments (no true difference), 30 daily looks of 40 users per arm per day at a
    20 % rate: the share of experiments whose interval ever excludes 0. The fixed-horizon
    interval, read every day, does so far more often than 5 %; the always-valid one stays
    under it (seeded: the figures are the same on every run)."""
    rng = np.random.default_rng(11)
    runs, days, per_day, rate = 400, 30, 40, 0.2
    a = rng.binomial(per_day, rate, size=(runs, days)).cumsum(axis=1)
    b = rng.binomial(per_day, rate, size=(runs, days)).cumsum(axis=1)
    fixed_wrong = valid_wrong = 0
    for run in range(runs):
        fixed_seen = valid_seen = False
        for day in range(days):
            n = per_day * (day + 1)
            x1, x2 = int(a[run, day]), int(b[run, day])
            fixed = two_proportions(x1, n, x2, n)
            fixed_seen |= fixed.ci_low > 0 or fixed.ci_high < 0
            valid = always_valid_diff(x1, n, x2, n)
            valid_seen |= valid.ci_low > 0 or valid.ci_high < 0
        fixed_wrong += fixed_seen
        valid_wrong += valid_seen
    assert fixed_wrong / runs > 0.15  # peeking at a 95 % interval: about one in four
    assert valid_wrong / runs <= 0.05


def test_cuped_by_hand_with_one_covariate() -> None:
    # x known before assignment, y after. Pooled: mean x = 2.5, theta = cov(x, y) / var(x).
    x_a, y_a = [1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 5.0, 6.0]
    x_b, y_b = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 4.0, 4.0]
    x, y = x_a + x_b, y_a + y_b
    theta = statistics.covariance(x, y) / statistics.variance(x)
    result = cuped(y_a, [[v] for v in x_a], y_b, [[v] for v in x_b])
    assert result.theta == pytest.approx((theta,))
    # Both groups have the same x, so the adjustment leaves the difference (4 - 3) alone and
    # only removes the variance x explains.
    assert result.diff == pytest.approx(1.0) == pytest.approx(result.raw_diff)
    adjusted = [yi - theta * (xi - 2.5) for xi, yi in zip(x, y, strict=True)]
    assert result.variance_reduction == pytest.approx(
        1 - statistics.variance(adjusted) / statistics.variance(y)
    )
    plain = mean_diff(y_a, y_b)
    assert result.ci_high - result.ci_low < plain.ci_high - plain.ci_low


def test_cuped_narrows_the_interval_without_moving_the_effect() -> None:
    rng = np.random.default_rng(5)
    n = 2000
    x_a, x_b = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    effect = 0.1
    y_a = 0.5 * x_a[:, 0] - 0.3 * x_a[:, 1] + effect + rng.normal(scale=0.5, size=n)
    y_b = 0.5 * x_b[:, 0] - 0.3 * x_b[:, 1] + rng.normal(scale=0.5, size=n)
    result = cuped(list(y_a), x_a.tolist(), list(y_b), x_b.tolist())
    plain = mean_diff(list(y_a), list(y_b))
    # Variance explained: 0.34 of 0.59, so about 58 % less, and an interval 0.65 times as wide.
    assert result.variance_reduction == pytest.approx(0.34 / 0.59, abs=0.04)
    assert (result.ci_high - result.ci_low) < 0.75 * (plain.ci_high - plain.ci_low)
    assert result.ci_low < effect < result.ci_high
    with pytest.raises(ValueError, match="one row of the same covariates"):
        cuped([1.0, 2.0], [[1.0]], [1.0, 2.0], [[1.0], [2.0]])

"""The experiment statistics against hand computations, Newcombe's published table and values
SciPy 1.17 gave once (scipy.stats.mannwhitneyu, method="asymptotic"; numpy.percentile)."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections import Counter

import pytest

from trialpath.stats import (
    _resampled_median,
    bootstrap_diff,
    bootstrap_median_diff,
    mann_whitney,
    mean_diff,
    needed_per_arm,
    percentile,
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


@pytest.mark.parametrize("data", [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 5.0, 7.0, 7.0]])
def test_resampled_median_has_the_exact_bootstrap_distribution(data: list[float]) -> None:
    # Every resample with replacement, enumerated: the true distribution of its median.
    n = len(data)
    exact: Counter[float] = Counter(
        statistics.median(sample) for sample in itertools.product(data, repeat=n)
    )
    rng = random.Random(7)
    draws = 40_000
    drawn = Counter(_resampled_median(sorted(data), rng) for _ in range(draws))
    assert set(drawn) <= set(exact)
    for median, count in exact.items():
        p = count / n**n
        # Within 4.5 standard errors of the binomial proportion.
        assert drawn[median] / draws == pytest.approx(p, abs=4.5 * math.sqrt(p * (1 - p) / draws))


def test_fast_median_bootstrap_agrees_with_resampling() -> None:
    rng = random.Random(3)
    a = [rng.expovariate(1 / 10) for _ in range(300)]
    b = [rng.expovariate(1 / 14) for _ in range(200)]
    fast = bootstrap_median_diff(a, b, reps=4000, seed=1)
    slow = bootstrap_diff(a, b, statistics.median, reps=4000, seed=1)
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

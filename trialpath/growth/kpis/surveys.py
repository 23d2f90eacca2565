"""The survey KPIs: CSAT, onboarding CSAT and CES, from the scores users give in `survey_*`
events (read in Python: a stray score must not fail the query).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from sqlalchemy import Engine, select

from trialpath.growth.kpis.sql import E, T, group_column, no_channel, ordered, pct, population
from trialpath.growth.kpis.values import Filters, KpiValue, Split

SURVEY_SCALES = {"survey_csat": (1, 5), "survey_ces": (1, 7), "survey_onboarding": (1, 5)}


def survey_scores(
    engine: Engine, filters: Filters, by: Split | None, event: str
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, set[str]]]:
    """Per group: valid scores, ignored answers, users who answered. Scores are read from the
    JSON property as text and checked here: a stray value must not fail the whole query, as a
    cast in SQL would on PostgreSQL."""
    low, high = SURVEY_SCALES[event]
    group = group_column(engine, by)
    query = (
        select(group, E.c.user_id, E.c.properties["score"].as_string().label("score"))
        .select_from(T.join(E, E.c.user_id == T.c.user_id))
        .where(*population(filters), E.c.name == event)
    )
    scores: dict[str, list[float]] = defaultdict(list)
    ignored: dict[str, int] = defaultdict(int)
    users: dict[str, set[str]] = defaultdict(set)
    with engine.connect() as conn:
        for row in conn.execute(query):
            score = _score(row.score, low, high)
            if score is None:
                ignored[row.grp] += 1
            else:
                scores[row.grp].append(score)
                users[row.grp].add(row.user_id)
    return dict(scores), dict(ignored), dict(users)


def _score(raw: object, low: int, high: int) -> float | None:
    if raw is None or isinstance(raw, bool):
        return None
    try:
        score = float(str(raw))
    except ValueError:
        return None
    return score if low <= score <= high and score.is_integer() else None


def _survey_values(
    engine: Engine, filters: Filters, by: Split | None, event: str, kpi: str, good_from: int
) -> list[KpiValue]:
    by = no_channel(by)
    scores, ignored, users = survey_scores(engine, filters, by, event)
    low, high = SURVEY_SCALES[event]
    values = []
    for name in ordered([*scores, *ignored], by, None):
        answers = scores.get(name, [])
        n = len(answers)
        distribution = {str(s): sum(1 for a in answers if a == s) for s in range(low, high + 1)}
        good = sum(1 for a in answers if a >= good_from)
        detail: dict[str, Any] = {
            "users": len(users.get(name, ())),
            "ignored": ignored.get(name, 0),
            "distribution": distribution,
            f"share_{good_from}_or_more_pct": pct(good, n),
        }
        value = statistics.fmean(answers) if answers else None
        values.append(KpiValue(kpi, name, value, n, "score", detail))
    return values


def csat(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Customer satisfaction (CSAT): mean `properties.score` of `survey_csat` events, 1 (very
    unsatisfied) to 5 (very satisfied); answers outside 1..5 or not whole numbers are ignored
    (`detail["ignored"]`). `n` is the answers; `detail` adds the classic CSAT %, the share of
    4 and 5, and the distribution."""
    return _survey_values(engine, filters, by, "survey_csat", "csat", 4)


def csat_onboarding(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """CSAT of the onboarding as a whole: mean score of `survey_onboarding` events (1 to 5),
    asked of everyone at activation (or purchase) or at the trial's end (journey rules 5), so
    unlike `csat` (asked after a success call: it measures the call) it covers the users who
    never talked to anyone, and those who gave up. Same details as `csat`."""
    return _survey_values(engine, filters, by, "survey_onboarding", "csat_onboarding", 4)


def ces(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Customer effort score (CES): mean `properties.score` of `survey_ces` events, 1 (very
    hard) to 7 (very easy), so higher means less effort. `n` is the answers; `detail` adds
    the share of 5 to 7 (easy) and the distribution."""
    return _survey_values(engine, filters, by, "survey_ces", "ces", 5)

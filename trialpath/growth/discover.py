"""Which early behaviour predicts paying: candidate activation rules ranked by how well they
separate the trials that bought from the others (`trialpath kpis discover`,
`GET /v1/kpis/activation-candidates`, the dashboard's "What predicts paying").

A candidate is "event X at least N times within D journey days of signup". Over the trials of
the period that are over (converted, expired or cancelled: a running trial has not decided
yet), each candidate splits the users into those who reached it and the others, and says:

- `share`: the users who reached it;
- `precision`: of those, the share who bought (their conversion rate);
- `recall`: of the buyers, the share who had reached it;
- `others`: the conversion rate of those who did not reach it, and `lift` = precision / others;
- `separation`: precision - others, with Newcombe's 95 % interval.

Candidates are ranked by the **lower bound** of that interval: the difference in conversion the
data supports with 95 % confidence. It rewards a rule that separates well *and* concerns enough
users to be sure of it; a rule reached by a handful of buyers, with a spectacular precision and
a huge interval, does not win on luck. Rules reached by fewer than `min_users` users (or missed
by fewer) are left out. The journey's own activation rule (`trials.activated`: each persona's
rule in journey.toml) is measured the same way and placed in the ranking.

Counts use every event the product reported in the window and before the purchase (what a
buyer does once paying would "predict" paying perfectly), in journey days on the trial's own
clock (accelerated demo trials included).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, select

from trialpath.growth.kpis import ENDED, E, Filters, T, population
from trialpath.growth.stats import two_proportions, wilson

DEFAULT_COUNTS = (1, 2, 3, 5, 10)
DEFAULT_DAYS = (1, 3, 7, 14)
DEFAULT_MIN_USERS = 10
CONFIGURED = "configured activation rule"


@dataclass(frozen=True)
class Candidate:
    rule: str
    event: str | None
    """None for the journey's configured activation rule."""
    at_least: int | None
    within_days: int | None
    users: int
    reached: int
    buyers: int
    buyers_reached: int
    share: float
    precision: float
    precision_ci: tuple[float, float]
    recall: float
    recall_ci: tuple[float, float]
    others: float
    lift: float | None
    separation: float
    separation_ci: tuple[float, float]
    rank: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Discovery:
    users: int
    buyers: int
    candidates: list[Candidate]
    """Best first (the top `top` of every rule tried)."""
    tried: int
    configured: Candidate | None
    note: str | None = None


@dataclass(frozen=True)
class _User:
    bought: bool
    activated: bool
    days: dict[str, list[float]]
    """Event name → journey days after signup of each occurrence, sorted."""


def measure(
    rule: str,
    reached: Iterable[bool],
    bought: Sequence[bool],
    *,
    event: str | None = None,
    at_least: int | None = None,
    within_days: int | None = None,
) -> Candidate | None:
    """A rule's figures from who reached it and who bought; None when everyone or nobody
    reached it (it separates nothing)."""
    hits = list(reached)
    users, buyers = len(hits), sum(bought)
    reached_n = sum(hits)
    buyers_reached = sum(1 for hit, b in zip(hits, bought, strict=True) if hit and b)
    if reached_n in (0, users) or users == 0:
        return None
    others_n = users - reached_n
    others_buyers = buyers - buyers_reached
    difference = two_proportions(buyers_reached, reached_n, others_buyers, others_n)
    others = others_buyers / others_n
    precision = buyers_reached / reached_n
    return Candidate(
        rule=rule,
        event=event,
        at_least=at_least,
        within_days=within_days,
        users=users,
        reached=reached_n,
        buyers=buyers,
        buyers_reached=buyers_reached,
        share=reached_n / users,
        precision=precision,
        precision_ci=wilson(buyers_reached, reached_n),
        recall=buyers_reached / buyers if buyers else 0.0,
        recall_ci=wilson(buyers_reached, buyers) if buyers else (0.0, 0.0),
        others=others,
        lift=precision / others if others else None,
        separation=difference.diff,
        separation_ci=(difference.ci_low, difference.ci_high),
    )


def _load(engine: Engine, filters: Filters, max_days: float) -> list[_User]:
    """The trials of the period that are over, with the times of their events (one query for
    the trials, one for their events in the window)."""
    ended = [*population(filters), ENDED]
    trials_query = select(
        T.c.user_id,
        T.c.signup_at,
        T.c.seconds_per_day,
        T.c.converted_at.is_not(None).label("bought"),
        T.c.activated,
    ).where(*ended)
    events_query = (
        select(
            E.c.user_id,
            E.c.name,
            E.c.occurred_at,
            T.c.signup_at,
            T.c.seconds_per_day,
            T.c.converted_at,
        )
        .select_from(E.join(T, E.c.user_id == T.c.user_id))
        .where(and_(*ended, E.c.occurred_at >= T.c.signup_at))
    )
    users: dict[str, tuple[bool, bool]] = {}
    times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with engine.connect() as conn:
        for row in conn.execute(trials_query):
            users[row.user_id] = (bool(row.bought), bool(row.activated))
        for row in conn.execute(events_query):
            if row.converted_at is not None and row.occurred_at >= row.converted_at:
                continue  # what buyers did once they had paid predicts nothing
            day = _journey_days(row.signup_at, row.occurred_at, row.seconds_per_day)
            if day <= max_days:
                times[row.user_id][row.name].append(day)
    found = []
    for user_id, (bought, activated) in users.items():
        days = {name: sorted(values) for name, values in times.get(user_id, {}).items()}
        found.append(_User(bought, activated, days))
    return found


def _journey_days(signup: datetime, at: datetime, seconds_per_day: float | None) -> float:
    return (at - signup).total_seconds() / (seconds_per_day or 86400.0)


def _reached(user: _User, event: str, at_least: int, within: int) -> bool:
    days = user.days.get(event)
    return days is not None and bisect.bisect_right(days, within) >= at_least


def discover(
    engine: Engine,
    filters: Filters,
    *,
    counts: Sequence[int] = DEFAULT_COUNTS,
    days: Sequence[int] = DEFAULT_DAYS,
    min_users: int = DEFAULT_MIN_USERS,
    top: int = 10,
) -> Discovery:
    """Ranks every "event X at least N times within D days" of the grid; see the module."""
    if not counts or not days or min(counts) < 1 or min(days) < 1:
        raise ValueError("counts and days need at least one value each, all >= 1")
    if min_users < 1 or top < 1:
        raise ValueError("min_users and top must be at least 1")
    users = _load(engine, filters, max(days))
    bought = [u.bought for u in users]
    buyers = sum(bought)
    if not users:
        return Discovery(0, 0, [], 0, None, "no trial of this period is over yet")
    if buyers in (0, len(users)):
        note = "nobody bought" if buyers == 0 else "everybody bought"
        return Discovery(len(users), buyers, [], 0, None, f"{note}: nothing to separate")
    events = sorted({name for u in users for name in u.days})
    found: list[Candidate] = []
    for event in events:
        for within in sorted(set(days)):
            for at_least in sorted(set(counts)):
                rule = f"{event} ≥ {at_least} within {within} d"
                candidate = measure(
                    rule,
                    (_reached(u, event, at_least, within) for u in users),
                    bought,
                    event=event,
                    at_least=at_least,
                    within_days=within,
                )
                if candidate and min_users <= candidate.reached <= len(users) - min_users:
                    found.append(candidate)
    found.sort(key=lambda c: (-c.separation_ci[0], -c.separation, c.rule))
    ranked = [_with_rank(c, i + 1) for i, c in enumerate(found)]
    configured = measure(CONFIGURED, (u.activated for u in users), bought)
    if configured is not None:
        score = configured.separation_ci[0]
        place = sum(1 for c in ranked if c.separation_ci[0] > score) + 1
        configured = _with_rank(configured, place)
    return Discovery(len(users), buyers, ranked[:top], len(ranked), configured)


def _with_rank(candidate: Candidate, rank: int) -> Candidate:
    return Candidate(**{**asdict(candidate), "rank": rank})

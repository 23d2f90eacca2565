"""What the KPI queries are built from: the tables, the journey's milestones and key events,
the population and groups of trials, rates per group, and journey-time durations fetched
per trial (the only dialect-specific SQL is in `Dialect`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    FromClause,
    Integer,
    String,
    Table,
    and_,
    case,
    cast,
    func,
    literal_column,
    select,
    true,
)
from sqlmodel import SQLModel

from trialpath.core.definition import JourneyDefinition, load_definition
from trialpath.growth.kpis.values import (
    ALL,
    UNKNOWN_PERSONA,
    UNKNOWN_SOURCE,
    UNRECORDED_VERSION,
    Filters,
    KpiError,
    KpiValue,
    Split,
)
from trialpath.growth.stats import percentile
from trialpath.operations import models  # noqa: F401  (registers the tables)
from trialpath.operations.config import get_settings

TERMINAL_STAGES = ("converted", "expired", "cancelled")

_TABLES = SQLModel.metadata.tables
T: Table = _TABLES["trials"]
E: Table = _TABLES["trial_events"]
M: Table = _TABLES["messages"]
P: Table = _TABLES["preferences"]
CS: Table = _TABLES["cs_tasks"]


ANSWERED = ("signup", "qualifier")
"""Persona sources where the user answered (the rest: inferred, defaulted)."""


# --- the journey: milestones and key events --------------------------------------------------


@lru_cache(maxsize=4)
def _load(path: Path, mtime: float) -> JourneyDefinition:
    return load_definition(path)


def current_journey() -> JourneyDefinition:
    """The journey file in force (TRIALPATH_JOURNEY_FILE): its milestones and key events are
    what "first value" and "key feature" mean, for every trial, whichever version it ran."""
    path = get_settings().journey_file
    return _load(path, path.stat().st_mtime if path.exists() else 0.0)


def persona_milestones(journey: JourneyDefinition | None) -> dict[str, str]:
    journey = journey or current_journey()
    return {persona: path.milestone for persona, path in journey.personas.items()}


def key_events(journey: JourneyDefinition | None) -> tuple[str, ...]:
    return (journey or current_journey()).stall.key_events


# --- SQL building blocks ---------------------------------------------------------------------


class Dialect:
    """The only SQL that differs between SQLite and PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.name = engine.dialect.name
        if self.name not in ("sqlite", "postgresql"):
            raise KpiError(f"KPIs need SQLite or PostgreSQL, not {self.name}")

    def iso_week(self, at: ColumnElement[Any]) -> ColumnElement[Any]:
        """`2026-W48`: the ISO 8601 week of a UTC timestamp."""
        if self.name == "postgresql":
            return func.to_char(
                func.timezone(literal_column("'UTC'"), at), literal_column("'IYYY-\"W\"IW'")
            )
        # SQLite before 3.46 has no %G/%V: the ISO year and week are those of the Thursday of
        # the same Monday-to-Sunday week (the Thursday on or after the day three days before).
        thursday = func.date(at, literal_column("'-3 days'"), literal_column("'weekday 4'"))
        day_of_year = cast(func.strftime(literal_column("'%j'"), thursday), Integer)
        week = (day_of_year - 1) // 7 + 1
        return func.printf(
            literal_column("'%s-W%02d'"), func.strftime(literal_column("'%Y'"), thursday), week
        )

    def seconds_between(
        self, later: ColumnElement[Any], earlier: ColumnElement[Any]
    ) -> ColumnElement[Any]:
        if self.name == "postgresql":
            return func.extract("epoch", later) - func.extract("epoch", earlier)
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def count_trials(conn: Connection, filters: Filters) -> int:
    query = select(func.count()).select_from(T).where(*population(filters))
    return int(conn.execute(query).scalar_one())


def population(filters: Filters) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if filters.since is not None:
        clauses.append(T.c.signup_at >= filters.since)
    if filters.until is not None:
        clauses.append(T.c.signup_at < filters.until)
    return clauses


def group_column(engine: Engine, by: Split | None) -> ColumnElement[Any]:
    """The trial's group, labelled `grp` (grouped by that name: PostgreSQL would not see two
    renderings of an expression with parameters as the same expression)."""
    if by == "persona":
        expr: ColumnElement[Any] = func.coalesce(
            T.c.persona, literal_column(f"'{UNKNOWN_PERSONA}'")
        )
    elif by == "arm":
        expr = T.c.experiment_arm
    elif by == "cohort":
        expr = Dialect(engine).iso_week(T.c.signup_at)
    elif by == "source":
        expr = func.coalesce(T.c.source, literal_column(f"'{UNKNOWN_SOURCE}'"))
    elif by == "qualifier":
        expr = case(
            (T.c.persona_source.in_(ANSWERED), literal_column("'answered'")),
            (T.c.persona_source.is_not(None), T.c.persona_source),
            else_=literal_column(f"'{UNKNOWN_PERSONA}'"),
        )
    elif by == "journey":
        # The stored journey version the trial runs (`v3`); trials started before versions
        # were recorded are "unrecorded".
        expr = case(
            (
                T.c.journey_version.is_not(None),
                literal_column("'v'").op("||")(cast(T.c.journey_version, String)),
            ),
            else_=literal_column(f"'{UNRECORDED_VERSION}'"),
        )
    else:
        expr = literal_column(f"'{ALL}'")
    return expr.label("grp")


def _fixed_groups(by: Split | None, journey: JourneyDefinition | None) -> list[str]:
    """Groups shown even when empty, so that a split always has the same rows."""
    if by is None or by == "channel":
        return [ALL]
    if by == "persona":
        return list(persona_milestones(journey))
    return []


def ordered(
    groups: Iterable[str], by: Split | None, journey: JourneyDefinition | None
) -> list[str]:
    fixed = _fixed_groups(by, journey)
    rest = sorted(set(groups) - set(fixed))
    return [*fixed, *rest] or [ALL]


def no_channel(by: Split | None) -> Split | None:
    """Channel splits only message-based KPIs; the others give one row, "all"."""
    return None if by == "channel" else by


def pct(count: int, n: int) -> float | None:
    return 100.0 * count / n if n else None


def rate_rows(
    engine: Engine,
    filters: Filters,
    by: Split | None,
    kpi: str,
    hit: ColumnElement[bool],
    base: ColumnElement[bool] | None = None,
    extra: Mapping[str, ColumnElement[bool]] | None = None,
) -> list[KpiValue]:
    """% of the trials matching `base` (all by default) for which `hit` holds, per group;
    `extra` adds other counts to `detail`."""
    group = group_column(engine, by)
    extra = dict(extra or {})
    columns = [
        group,
        func.count().label("n"),
        func.sum(case((hit, 1), else_=0)).label("hits"),
        *(func.sum(case((cond, 1), else_=0)).label(name) for name, cond in extra.items()),
    ]
    query = select(*columns).select_from(T).where(*population(filters))
    if base is not None:
        query = query.where(base)
    query = query.group_by(literal_column("grp"))
    with engine.connect() as conn:
        rows = {row.grp: row for row in conn.execute(query)}
    values = []
    for name in ordered(rows, by, None):
        row = rows.get(name)
        n = int(row.n) if row else 0
        hits = int(row.hits or 0) if row else 0
        detail: dict[str, Any] = {"count": hits}
        detail.update({key: int(getattr(row, key) or 0) if row else 0 for key in extra})
        values.append(KpiValue(kpi, name, pct(hits, n), n, "%", detail))
    return values


def any_event(
    names: Sequence[str], *, after: ColumnElement[Any] | None = None
) -> ColumnElement[bool]:
    """The trial's user has an event among `names`, counted or not (after a time, if given)."""
    query = select(E.c.id).where(E.c.user_id == T.c.user_id, E.c.name.in_(list(names)))
    if after is not None:
        query = query.where(E.c.occurred_at > after)
    return query.exists()


CONVERTED: ColumnElement[bool] = T.c.converted_at.is_not(None)
ENDED: ColumnElement[bool] = (
    T.c.stage.in_(TERMINAL_STAGES) | T.c.ended_at.is_not(None) | T.c.converted_at.is_not(None)
)


# --- durations (fetched per trial, finished in Python) ---------------------------------------


def scale(seconds_per_day: float | None) -> float:
    """Journey seconds per real second of a trial's clock."""
    return 86400.0 / seconds_per_day if seconds_per_day else 1.0


@dataclass
class _Durations:
    n: int
    hours: list[float]


def durations(
    engine: Engine,
    filters: Filters,
    by: Split | None,
    reached_at: ColumnElement[Any],
    from_query: FromClause | None = None,
) -> dict[str, _Durations]:
    """Per group: the trials, and the journey hours from signup to `reached_at` of those that
    got there. Timestamps are fetched and subtracted here (date math is not portable SQL)."""
    group = group_column(engine, by)
    query = select(group, T.c.signup_at, T.c.seconds_per_day, reached_at.label("reached_at"))
    query = query.select_from(T if from_query is None else from_query).where(*population(filters))
    found: dict[str, _Durations] = defaultdict(lambda: _Durations(0, []))
    with engine.connect() as conn:
        for row in conn.execute(query):
            entry = found[row.grp]
            entry.n += 1
            if row.reached_at is not None:
                real = (row.reached_at - row.signup_at).total_seconds()
                hours = real * scale(row.seconds_per_day) / 3600
                entry.hours.append(max(hours, 0.0))
    return dict(found)


def milestone_durations(
    engine: Engine,
    filters: Filters,
    by: Split | None,
    journey: JourneyDefinition | None = None,
) -> dict[str, _Durations]:
    milestones = persona_milestones(journey)
    wanted = case(milestones, value=T.c.persona, else_=None)
    first = (
        select(T.c.user_id.label("user_id"), func.min(E.c.occurred_at).label("at"))
        .select_from(T)
        .join(
            E,
            and_(
                E.c.user_id == T.c.user_id,
                E.c.name == wanted,
                E.c.counted == true(),
                E.c.occurred_at >= T.c.signup_at,
            ),
        )
        .where(*population(filters))
        .group_by(T.c.user_id)
        .subquery("first_value")
    )
    joined = T.outerjoin(first, first.c.user_id == T.c.user_id)
    return durations(engine, filters, by, first.c.at, joined)


def median_values(
    kpi: str, found: Mapping[str, _Durations], by: Split | None, q: float
) -> list[KpiValue]:
    values = []
    for name in ordered(found, by, None):
        entry = found.get(name, _Durations(0, []))
        value = percentile(entry.hours, q) if entry.hours else None
        detail = {"reached": len(entry.hours)}
        values.append(KpiValue(kpi, name, value, entry.n, "hours", detail))
    return values

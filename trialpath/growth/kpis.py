"""The onboarding KPIs, read per persona, cohort, experiment arm or channel (the experiment
report that compares arms against the control is `trialpath.growth.experiments`).

Every KPI is one documented function `name(engine, filters, by=None) -> list[KpiValue]`, one
value per group. Each is computed in SQL, aggregated in the database, except where the
portable SQL cannot do it: medians and percentiles (no portable percentile function), and
survey scores (a JSON property that may hold text), where the database returns one row per
user or answer and Python finishes. Two expressions differ between SQLite and PostgreSQL (the
ISO week of a timestamp, seconds between two timestamps); both live in `_Dialect`.

Durations and days are journey time: each trial records its clock (`trials.seconds_per_day`,
86400 for real time), so a demo run at a few seconds a day reads in the same hours and days as
production.

Population: the trials whose signup falls within `Filters` (since inclusive, until
exclusive). Outcomes (activated, converted, events, messages) are read as they stand now,
whenever they happened: a cohort's KPIs keep moving until its trials are over. Only the 7-day
retention uses `until` (or now) as the date it is read at.

The definitions, one paragraph each, are in docs/kpis.md.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

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
    distinct,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
)
from sqlmodel import SQLModel

from trialpath.core.definition import GLOBAL_HOLDOUT, JourneyDefinition, load_definition
from trialpath.delivery.preferences import CHANNELS
from trialpath.growth.stats import (
    mean_diff,
    percentile,
    two_proportions,
)
from trialpath.operations import models  # noqa: F401  (registers the tables)
from trialpath.operations.config import get_settings
from trialpath.operations.models import UtcDateTime

Split = Literal["persona", "cohort", "arm", "channel", "source", "qualifier", "journey"]
SPLITS: tuple[Split, ...] = get_args(Split)
UNRECORDED_VERSION = "unrecorded"
Unit = Literal["hours", "%", "score", "count", "EUR", "pts"]

ALL = "all"
UNKNOWN_PERSONA = "unknown"
UNKNOWN_SOURCE = "unknown"
"""Trials recorded before their source was."""
NO_EXPERIMENT_ARM = "default"
"""The arm of every trial started while no experiment ran."""
SMALL_N = 30
"""Below this many users a value is shown as indicative only, and the experiment report
needs at least this many per arm for medians and means."""
ADOPTION_MIN_FEATURES = 3
RETENTION_FROM_DAY = 7
RETENTION_TO_DAY = 14
UPSELL_EVENTS = ("plan_upgraded", "addon_purchased")
REFERRAL_EVENT = "referral_sent"
SURVEY_SCALES = {"survey_csat": (1, 5), "survey_ces": (1, 7), "survey_onboarding": (1, 5)}
TERMINAL_STAGES = ("converted", "expired", "cancelled")

_TABLES = SQLModel.metadata.tables
T: Table = _TABLES["trials"]
E: Table = _TABLES["trial_events"]
M: Table = _TABLES["messages"]
P: Table = _TABLES["preferences"]
CS: Table = _TABLES["cs_tasks"]


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class KpiError(ValueError):
    """Bad filters or split, or a database these KPIs cannot read."""


@dataclass(frozen=True)
class Filters:
    """Which trials: signed up at or after `since` and before `until` (UTC; naive = UTC)."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is None:
                continue
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
                object.__setattr__(self, name, value)
            # Far-off bounds would overflow the date arithmetic (retention's "7 days before").
            if not EARLIEST <= value <= LATEST:
                raise KpiError(f"{name} must be between 1970 and 9000, got {value:%Y-%m-%d}")
        if self.since and self.until and self.since >= self.until:
            raise KpiError(f"since ({self.since:%Y-%m-%d %H:%M}) must be before until")

    def as_dict(self) -> dict[str, str | None]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


def parse_bound(text: str, *, end: bool = False) -> datetime:
    """A filter bound from `YYYY-MM-DD` or an ISO 8601 date-time (naive = UTC). A bare date
    given as the end (`until`) includes that whole day: it means the next midnight."""
    text = text.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        if len(text) == 10:
            start = datetime.combine(day, time(0), tzinfo=UTC)
            return start + timedelta(days=1) if end and day < date.max else start
    try:
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise KpiError(f"{text!r} is not a date (YYYY-MM-DD) nor an ISO 8601 date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def make_filters(since: str | None = None, until: str | None = None) -> Filters:
    """Filters from the text the CLI and the API receive."""
    return Filters(
        since=parse_bound(since) if since else None,
        until=parse_bound(until, end=True) if until else None,
    )


def check_split(by: str | None) -> Split | None:
    if by is None:
        return None
    for split in SPLITS:
        if by == split:
            return split
    raise KpiError(f"--by must be one of {', '.join(SPLITS)}, got {by!r}")


@dataclass
class KpiValue:
    """One KPI for one group. `n` is the denominator (users, or answers for surveys) so that
    small groups show; `value` is None when there is nothing to measure."""

    kpi: str
    group: str
    value: float | None
    n: int
    unit: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Row(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


def to_csv(rows: Sequence[Row]) -> str:
    """KPI values or arm comparisons (`growth.experiments`) as CSV with a header row; `detail`
    as JSON."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header: list[str] = []
    for row in rows:
        record = row.as_dict()
        if not header:
            header = list(record)
            writer.writerow(header)
        writer.writerow([_csv_cell(record[key]) for key in header])
    if not header:
        writer.writerow(["kpi", "group", "value", "n", "unit", "detail"])
    return out.getvalue()


def _csv_cell(value: object) -> object:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return round(value, 6)
    return "" if value is None else value


# --- the journey: milestones and key events --------------------------------------------------


@lru_cache(maxsize=4)
def _load(path: Path, mtime: float) -> JourneyDefinition:
    return load_definition(path)


def current_journey() -> JourneyDefinition:
    """The journey file in force (TRIALPATH_JOURNEY_FILE): its milestones and key events are
    what "first value" and "key feature" mean, for every trial, whichever version it ran."""
    path = get_settings().journey_file
    return _load(path, path.stat().st_mtime if path.exists() else 0.0)


def _milestones(journey: JourneyDefinition | None) -> dict[str, str]:
    journey = journey or current_journey()
    return {persona: path.milestone for persona, path in journey.personas.items()}


def _key_events(journey: JourneyDefinition | None) -> tuple[str, ...]:
    return (journey or current_journey()).stall.key_events


# --- SQL building blocks ---------------------------------------------------------------------


class _Dialect:
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


def _count_trials(conn: Connection, filters: Filters) -> int:
    query = select(func.count()).select_from(T).where(*population(filters))
    return int(conn.execute(query).scalar_one())


def population(filters: Filters) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if filters.since is not None:
        clauses.append(T.c.signup_at >= filters.since)
    if filters.until is not None:
        clauses.append(T.c.signup_at < filters.until)
    return clauses


def _group(engine: Engine, by: Split | None) -> ColumnElement[Any]:
    """The trial's group, labelled `grp` (grouped by that name: PostgreSQL would not see two
    renderings of an expression with parameters as the same expression)."""
    if by == "persona":
        expr: ColumnElement[Any] = func.coalesce(
            T.c.persona, literal_column(f"'{UNKNOWN_PERSONA}'")
        )
    elif by == "arm":
        expr = T.c.experiment_arm
    elif by == "cohort":
        expr = _Dialect(engine).iso_week(T.c.signup_at)
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
        return list(_milestones(journey))
    return []


def _ordered(
    groups: Iterable[str], by: Split | None, journey: JourneyDefinition | None
) -> list[str]:
    fixed = _fixed_groups(by, journey)
    rest = sorted(set(groups) - set(fixed))
    return [*fixed, *rest] or [ALL]


def _pct(count: int, n: int) -> float | None:
    return 100.0 * count / n if n else None


def _rate_rows(
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
    group = _group(engine, by)
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
    for name in _ordered(rows, by, None):
        row = rows.get(name)
        n = int(row.n) if row else 0
        hits = int(row.hits or 0) if row else 0
        detail: dict[str, Any] = {"count": hits}
        detail.update({key: int(getattr(row, key) or 0) if row else 0 for key in extra})
        values.append(KpiValue(kpi, name, _pct(hits, n), n, "%", detail))
    return values


def _any_event(
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


def _scale(seconds_per_day: float | None) -> float:
    """Journey seconds per real second of a trial's clock."""
    return 86400.0 / seconds_per_day if seconds_per_day else 1.0


@dataclass
class _Durations:
    n: int
    hours: list[float]


def _durations(
    engine: Engine,
    filters: Filters,
    by: Split | None,
    reached_at: ColumnElement[Any],
    from_query: FromClause | None = None,
) -> dict[str, _Durations]:
    """Per group: the trials, and the journey hours from signup to `reached_at` of those that
    got there. Timestamps are fetched and subtracted here (date math is not portable SQL)."""
    group = _group(engine, by)
    query = select(group, T.c.signup_at, T.c.seconds_per_day, reached_at.label("reached_at"))
    query = query.select_from(T if from_query is None else from_query).where(*population(filters))
    found: dict[str, _Durations] = defaultdict(lambda: _Durations(0, []))
    with engine.connect() as conn:
        for row in conn.execute(query):
            entry = found[row.grp]
            entry.n += 1
            if row.reached_at is not None:
                real = (row.reached_at - row.signup_at).total_seconds()
                hours = real * _scale(row.seconds_per_day) / 3600
                entry.hours.append(max(hours, 0.0))
    return dict(found)


def milestone_durations(
    engine: Engine,
    filters: Filters,
    by: Split | None,
    journey: JourneyDefinition | None = None,
) -> dict[str, _Durations]:
    milestones = _milestones(journey)
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
    return _durations(engine, filters, by, first.c.at, joined)


def _median_values(
    kpi: str, found: Mapping[str, _Durations], by: Split | None, q: float
) -> list[KpiValue]:
    values = []
    for name in _ordered(found, by, None):
        entry = found.get(name, _Durations(0, []))
        value = percentile(entry.hours, q) if entry.hours else None
        detail = {"reached": len(entry.hours)}
        values.append(KpiValue(kpi, name, value, entry.n, "hours", detail))
    return values


# --- the KPIs --------------------------------------------------------------------------------


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
    found = milestone_durations(engine, filters, _no_channel(by), journey)
    return [
        *_median_values("ttfv_median", found, _no_channel(by), 0.5),
        *_median_values("ttfv_p90", found, _no_channel(by), 0.9),
    ]


def activation_rate(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Activation rate: % of trials activated (`trials.activated`: the persona's activation
    rule met within its window, e.g. technical = an integration and 10 API calls in 7 days)."""
    return _rate_rows(engine, filters, _no_channel(by), "activation_rate", T.c.activated == true())


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
    return _rate_rows(
        engine, filters, _no_channel(by), "onboarding_completion", or_(*done_by_persona)
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
    used = _features_used(_key_events(journey))
    return _rate_rows(
        engine, filters, _no_channel(by), "adoption_rate", used >= ADOPTION_MIN_FEATURES
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
    by = _no_channel(by)
    found = _durations(engine, filters, by, T.c.activated_at)
    return _median_values("time_to_proficiency", found, by, 0.5)


def retention_7d(
    engine: Engine, filters: Filters, by: Split | None = None, *, now: datetime | None = None
) -> list[KpiValue]:
    """7-day retention: among trials that signed up at least 7 days before `until` (or now),
    % whose user has an event from day 7 (inclusive) to day 14 (exclusive) after signup, in
    each trial's journey days. Every event counts, those after a purchase or the trial's end
    too (stored uncounted for activation): a user who buys on day 5 and keeps using the
    product is retained. Users 7 to 14 days old have not lived the whole window yet, so a
    recent period reads a little low until its window closes."""
    by = _no_channel(by)
    reference = filters.until or now or datetime.now(UTC)
    dialect = _Dialect(engine)
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
    values = _rate_rows(engine, filters, by, "retention_7d", active, base=old_enough)
    for value in values:
        value.detail["read_at"] = reference.isoformat()
    return values


def trial_to_paid(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Trial-to-paid: % converted (`converted_at` set) among trials that are over: converted,
    expired or cancelled (trials still running are left out, not counted as lost)."""
    return _rate_rows(engine, filters, _no_channel(by), "trial_to_paid", CONVERTED, base=ENDED)


def churn_rate(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Churn rate (of trials): % of the trials that are over which ended without buying
    (stage expired or cancelled, never converted); `detail` splits expired and cancelled.
    This is 100 - trial_to_paid; paying customers' churn is outside Trialpath (see cltv)."""
    lost = ENDED & ~CONVERTED
    return _rate_rows(
        engine,
        filters,
        _no_channel(by),
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
    hit = _any_event(UPSELL_EVENTS, after=T.c.converted_at)
    return _rate_rows(engine, filters, _no_channel(by), "upsell_rate", hit, base=CONVERTED)


def referral_rate(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Referral rate: % of converted trials whose user has a `referral_sent` event (at any
    time)."""
    hit = _any_event([REFERRAL_EVENT])
    return _rate_rows(engine, filters, _no_channel(by), "referral_rate", hit, base=CONVERTED)


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
    by = _no_channel(by)
    group = _group(engine, by)
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
    for name in _ordered(rows, by, None):
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


def survey_scores(
    engine: Engine, filters: Filters, by: Split | None, event: str
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, set[str]]]:
    """Per group: valid scores, ignored answers, users who answered. Scores are read from the
    JSON property as text and checked here: a stray value must not fail the whole query, as a
    cast in SQL would on PostgreSQL."""
    low, high = SURVEY_SCALES[event]
    group = _group(engine, by)
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
    by = _no_channel(by)
    scores, ignored, users = survey_scores(engine, filters, by, event)
    low, high = SURVEY_SCALES[event]
    values = []
    for name in _ordered([*scores, *ignored], by, None):
        answers = scores.get(name, [])
        n = len(answers)
        distribution = {str(s): sum(1 for a in answers if a == s) for s in range(low, high + 1)}
        good = sum(1 for a in answers if a >= good_from)
        detail: dict[str, Any] = {
            "users": len(users.get(name, ())),
            "ignored": ignored.get(name, 0),
            "distribution": distribution,
            f"share_{good_from}_or_more_pct": _pct(good, n),
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


def messages_per_user(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Messages per user: messages sent to the users (status `sent`; not the `support`
    channel, which goes to the CS team) divided by the trials. By channel, each channel's
    sent messages divided by all the trials."""
    sent = and_(M.c.status == "sent", M.c.channel != "support")
    if by == "channel":
        return _per_channel(engine, filters, "messages_per_user", "count", M, sent)
    group = _group(engine, by)
    per_user = (
        select(M.c.user_id, func.count().label("sent"))
        .where(sent)
        .group_by(M.c.user_id)
        .subquery("sent")
    )
    query = (
        select(group, func.count().label("n"), func.sum(per_user.c.sent).label("sent"))
        .select_from(T.outerjoin(per_user, per_user.c.user_id == T.c.user_id))
        .where(*population(filters))
        .group_by(literal_column("grp"))
    )
    with engine.connect() as conn:
        rows = {row.grp: row for row in conn.execute(query)}
    values = []
    for name in _ordered(rows, by, None):
        row = rows.get(name)
        n = int(row.n) if row else 0
        total = int(row.sent or 0) if row else 0
        value = total / n if n else None
        values.append(KpiValue("messages_per_user", name, value, n, "count", {"sent": total}))
    return values


def unsubscribe_rate(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Unsubscribe rate: % of trials whose user unsubscribed from at least one channel (a
    `preferences` row with subscribed false). By channel, % unsubscribed from that channel."""
    opted_out = P.c.subscribed.is_(False)
    if by == "channel":
        return _per_channel(engine, filters, "unsubscribe_rate", "%", P, opted_out)
    hit = select(P.c.user_id).where(P.c.user_id == T.c.user_id, opted_out).exists()
    return _rate_rows(engine, filters, by, "unsubscribe_rate", hit)


ANSWERED = ("signup", "qualifier")
"""Persona sources where the user answered (the rest: inferred, defaulted)."""


def qualifier_answer_rate(
    engine: Engine, filters: Filters, by: Split | None = None
) -> list[KpiValue]:
    """Qualifier answer rate: of the trials whose persona is known, % whose user gave it
    (at signup or in the qualifier) rather than having it inferred (from the challenge or the
    events) or defaulted (nothing to go on). `detail` counts each source and gives the median
    journey hours from signup to a qualifier answer (seed 003: every question added costs some
    users; this says how many answer, and how fast)."""
    by = _no_channel(by)
    known = T.c.persona_source.is_not(None)
    values = _rate_rows(
        engine,
        filters,
        by,
        "qualifier_answer_rate",
        T.c.persona_source.in_(ANSWERED),
        base=known,
        extra={
            source: T.c.persona_source == source
            for source in ("signup", "qualifier", "inferred", "defaulted")
        },
    )
    answered = _durations(
        engine, filters, by, case((T.c.persona_source == "qualifier", T.c.persona_at))
    )
    for value in values:
        hours = answered[value.group].hours if value.group in answered else []
        value.detail["median_hours_to_answer"] = percentile(hours, 0.5) if hours else None
    return values


REACHED_OUTCOMES = ("reached_user", "call_booked")
"""Task outcomes where support got through to the user."""


def support_task_rate(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Support tasks: % of trials for which the journey opened a task for a human (stalled
    after the nudge, activity dropped after activation). `detail`: tasks opened, closed and
    still open, the count of each outcome, and the median journey hours from opened to
    closed."""
    by = _no_channel(by)
    has_task = select(CS.c.key).where(CS.c.user_id == T.c.user_id).exists()
    values = _rate_rows(engine, filters, by, "support_task_rate", has_task)
    group = _group(engine, by)
    query = (
        select(group, CS.c.done, CS.c.outcome, CS.c.created_at, CS.c.closed_at, T.c.seconds_per_day)
        .select_from(CS.join(T, T.c.user_id == CS.c.user_id))
        .where(*population(filters))
    )
    found: defaultdict[str, dict[str, Any]] = defaultdict(
        lambda: {"opened": 0, "closed": 0, "open": 0, "outcomes": defaultdict(int), "hours": []}
    )
    with engine.connect() as conn:
        for row in conn.execute(query):
            entry = found[row.grp]
            entry["opened"] += 1
            if not row.done:
                entry["open"] += 1
                continue
            entry["closed"] += 1
            entry["outcomes"][row.outcome or "unknown"] += 1
            if row.closed_at is not None:
                real = (row.closed_at - row.created_at).total_seconds()
                entry["hours"].append(max(real * _scale(row.seconds_per_day) / 3600, 0.0))
    for value in values:
        counts = found[value.group]
        hours = counts["hours"]
        value.detail.update(
            {
                "tasks_opened": counts["opened"],
                "tasks_closed": counts["closed"],
                "tasks_open": counts["open"],
                "outcomes": dict(counts["outcomes"]),
                "median_hours_to_close": percentile(hours, 0.5) if hours else None,
            }
        )
    return values


def _holdout_outcomes(
    engine: Engine, filters: Filters, by: Split | None
) -> dict[str, dict[bool, list[tuple[bool, float]]]]:
    """Per group, for the trials that are over: (converted, MRR or 0) of the global holdout's
    trials (True) and of the others (False)."""
    group = _group(engine, by)
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
    by = _no_channel(by)
    found = _holdout_outcomes(engine, filters, by)
    values = []
    for name in _ordered(found, by, None):
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
    by = _no_channel(by)
    found = _holdout_outcomes(engine, filters, by)
    values = []
    for name in _ordered(found, by, None):
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


def support_reach_rate(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Support reach: of the trials with a closed task, % where support got through to the
    user (an outcome `reached_user` or `call_booked`). `detail`: how many of those reached
    converted, and how many of the others."""
    closed = select(CS.c.key).where(CS.c.user_id == T.c.user_id, CS.c.done == true()).exists()
    reached = (
        select(CS.c.key)
        .where(CS.c.user_id == T.c.user_id, CS.c.outcome.in_(REACHED_OUTCOMES))
        .exists()
    )
    return _rate_rows(
        engine,
        filters,
        _no_channel(by),
        "support_reach_rate",
        reached,
        base=closed,
        extra={
            "converted_when_reached": and_(reached, CONVERTED),
            "converted_otherwise": and_(~reached, CONVERTED),
        },
    )


def _per_channel(
    engine: Engine,
    filters: Filters,
    kpi: str,
    unit: Unit,
    table: Table,
    condition: ColumnElement[bool],
) -> list[KpiValue]:
    """Rows of `table` matching `condition` per channel, over all the trials: messages per
    user (count) or % of users (preferences: one row per user and channel)."""
    with engine.connect() as conn:
        n = _count_trials(conn, filters)
        counted = {
            row.channel: int(row.total)
            for row in conn.execute(
                select(table.c.channel, func.count().label("total"))
                .select_from(table.join(T, T.c.user_id == table.c.user_id))
                .where(*population(filters), condition)
                .group_by(table.c.channel)
            )
        }
    values = []
    channels = [*CHANNELS, *sorted(set(counted) - set(CHANNELS))]
    for channel in channels:
        count = counted.get(channel, 0)
        if unit == "%":
            values.append(KpiValue(kpi, channel, _pct(count, n), n, unit, {"count": count}))
        else:
            values.append(
                KpiValue(kpi, channel, count / n if n else None, n, unit, {"sent": count})
            )
    return values


def _no_channel(by: Split | None) -> Split | None:
    """Channel splits only message-based KPIs; the others give one row, "all"."""
    return None if by == "channel" else by


class KpiFunction(Protocol):
    def __call__(
        self, engine: Engine, filters: Filters, by: Split | None = None, /
    ) -> list[KpiValue]: ...


KPIS: dict[str, KpiFunction] = {
    "time_to_first_value": time_to_first_value,
    "activation_rate": activation_rate,
    "onboarding_completion": onboarding_completion,
    "adoption_rate": adoption_rate,
    "time_to_proficiency": time_to_proficiency,
    "retention_7d": retention_7d,
    "trial_to_paid": trial_to_paid,
    "churn_rate": churn_rate,
    "csat": csat,
    "csat_onboarding": csat_onboarding,
    "ces": ces,
    "upsell_rate": upsell_rate,
    "referral_rate": referral_rate,
    "cltv": cltv,
    "messages_per_user": messages_per_user,
    "unsubscribe_rate": unsubscribe_rate,
    "qualifier_answer_rate": qualifier_answer_rate,
    "support_task_rate": support_task_rate,
    "support_reach_rate": support_reach_rate,
    "incremental_conversion": incremental_conversion,
    "incremental_revenue": incremental_revenue,
}
"""Every KPI function, in the order they are shown (completion right after activation)."""


def compute_kpis(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Every KPI of `KPIS`, one row per KPI and group."""
    by = check_split(by)
    return [value for function in KPIS.values() for value in function(engine, filters, by)]


# --- dashboard data --------------------------------------------------------------------------

FUNNEL_STEPS = ("signed up", "qualified", "first value", "activated", "converted")


def funnel(
    engine: Engine, filters: Filters, *, journey: JourneyDefinition | None = None
) -> dict[str, list[tuple[str, int]]]:
    """Per persona (and "all" first, "unknown" for trials never qualified): how many trials
    reached each step, each step counting only those that reached every step before it, so
    the counts never grow: signed up → qualified (persona known) → first value (persona
    milestone event) → activated → converted."""
    milestones = _milestones(journey)
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
    group = _group(engine, "persona")
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
    for persona in _ordered(rows, "persona", journey):
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
        for persona in _ordered(found, "persona", journey)
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
    group = _group(engine, "cohort")
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
            one_day = timedelta(days=1) / _scale(row.seconds_per_day)
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
        trials = _count_trials(conn, filters)
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

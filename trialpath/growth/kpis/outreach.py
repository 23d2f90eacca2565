"""The KPIs of the journey reaching out to the user: messages sent, unsubscribes, qualifier
answers, and support's tasks and whether support got through.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, and_, case, func, literal_column, select, true

from trialpath.delivery.preferences import CHANNELS
from trialpath.growth.kpis.sql import (
    ANSWERED,
    CONVERTED,
    CS,
    M,
    P,
    T,
    count_trials,
    durations,
    group_column,
    no_channel,
    ordered,
    pct,
    population,
    rate_rows,
    scale,
)
from trialpath.growth.kpis.values import Filters, KpiValue, Split, Unit
from trialpath.growth.stats import percentile


def messages_per_user(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Messages per user: messages sent to the users (status `sent`; not the `support`
    channel, which goes to the CS team) divided by the trials. By channel, each channel's
    sent messages divided by all the trials."""
    sent = and_(M.c.status == "sent", M.c.channel != "support")
    if by == "channel":
        return _per_channel(engine, filters, "messages_per_user", "count", M, sent)
    group = group_column(engine, by)
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
    for name in ordered(rows, by, None):
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
    return rate_rows(engine, filters, by, "unsubscribe_rate", hit)


def qualifier_answer_rate(
    engine: Engine, filters: Filters, by: Split | None = None
) -> list[KpiValue]:
    """Qualifier answer rate: of the trials whose persona is known, % whose user gave it
    (at signup or in the qualifier) rather than having it inferred (from the challenge or the
    events) or defaulted (nothing to go on). `detail` counts each source and gives the median
    journey hours from signup to a qualifier answer (seed 003: every question added costs some
    users; this says how many answer, and how fast)."""
    by = no_channel(by)
    known = T.c.persona_source.is_not(None)
    values = rate_rows(
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
    answered = durations(
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
    by = no_channel(by)
    has_task = select(CS.c.key).where(CS.c.user_id == T.c.user_id).exists()
    values = rate_rows(engine, filters, by, "support_task_rate", has_task)
    group = group_column(engine, by)
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
                entry["hours"].append(max(real * scale(row.seconds_per_day) / 3600, 0.0))
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
    return rate_rows(
        engine,
        filters,
        no_channel(by),
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
        n = count_trials(conn, filters)
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
            values.append(KpiValue(kpi, channel, pct(count, n), n, unit, {"count": count}))
        else:
            values.append(
                KpiValue(kpi, channel, count / n if n else None, n, unit, {"sent": count})
            )
    return values

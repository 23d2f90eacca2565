"""Agents' calendars: which success-call slots are free (pure: no I/O, no clock).

A slot is `duration` long and starts on the agent's grid: their working hours' start plus a
whole number of durations, in the agent's time zone. It is free for an agent when it lies
inside their working hours on one of their working days, overlaps none of their booked calls,
and their calls that local day are fewer than their daily capacity. A proposed call must also
lie inside the user's send window, in the user's time zone. Local times are turned into
instants with zoneinfo: a time a DST change skips is no slot; a repeated one is its first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from trialpath.core.definition import WEEKDAYS, CallAgent, Weekday

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Calendar:
    """One agent's working week and daily capacity."""

    name: str
    timezone: str
    start: time
    end: time
    days: frozenset[Weekday]
    daily_capacity: int

    @classmethod
    def of(cls, agent: CallAgent) -> Calendar:
        return cls(
            agent.name,
            agent.timezone,
            agent.hours.start,
            agent.hours.end,
            frozenset(agent.days),
            agent.daily_capacity,
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def works_on(self, day: date) -> bool:
        return WEEKDAYS[day.weekday()] in self.days


@dataclass(frozen=True)
class Booked:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Slot:
    agent: str
    start: datetime


def _instant(day: date, at: time, zone: ZoneInfo) -> datetime | None:
    """`day` `at` o'clock in `zone` as UTC; None when a DST change skips that local time."""
    local = datetime.combine(day, at, tzinfo=zone)
    instant = local.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None
    return instant


def inside_hours(zone: ZoneInfo, opens: time, closes: time, start: datetime, end: datetime) -> bool:
    """Whether [start, end) lies within one local day's `opens`-`closes` in `zone`."""
    local_start = start.astimezone(zone)
    local_end = end.astimezone(zone)
    if local_end.date() != local_start.date() or end - start >= DAY:
        return False
    return opens <= local_start.time() and local_end.time() <= closes and local_start < local_end


def working(agent: Calendar, start: datetime, end: datetime) -> bool:
    """Inside the agent's hours on one of their working days."""
    day = start.astimezone(agent.zone).date()
    return agent.works_on(day) and inside_hours(agent.zone, agent.start, agent.end, start, end)


def free(agent: Calendar, booked: Sequence[Booked], start: datetime, end: datetime) -> bool:
    """Working then, no booked call overlapping, and under the day's capacity."""
    if not working(agent, start, end):
        return False
    if any(b.start < end and start < b.end for b in booked):
        return False
    zone = agent.zone
    day = start.astimezone(zone).date()
    return sum(1 for b in booked if b.start.astimezone(zone).date() == day) < agent.daily_capacity


def agent_starts(
    agent: Calendar, earliest: datetime, latest: datetime, duration: timedelta
) -> Iterator[datetime]:
    """The agent's slot starts in [earliest, latest - duration], in order."""
    zone = agent.zone
    day = earliest.astimezone(zone).date() - DAY
    last = latest.astimezone(zone).date()
    while day <= last:
        if agent.works_on(day):
            opens = datetime.combine(day, agent.start)
            closes = datetime.combine(day, agent.end)
            local = opens
            while local + duration <= closes:
                at = _instant(day, local.time(), zone)
                if at is not None and earliest <= at and at + duration <= latest:
                    yield at
                local += duration
        day += DAY


def earliest_slot(
    agents: Sequence[tuple[Calendar, Sequence[Booked]]],
    earliest: datetime,
    latest: datetime,
    duration: timedelta,
    user_zone: ZoneInfo,
    user_opens: time,
    user_closes: time,
) -> Slot | None:
    """The earliest free slot of any agent in [earliest, latest) that also lies inside the
    user's send window; at the same time, the agent with the fewest calls that day, then the
    fewest in all, then the first listed: calls spread over the agents."""
    best: tuple[datetime, int, int, int, str] | None = None
    for order, (agent, booked) in enumerate(agents):
        for start in agent_starts(agent, earliest, latest, duration):
            end = start + duration
            if not inside_hours(user_zone, user_opens, user_closes, start, end):
                continue
            if not free(agent, booked, start, end):
                continue
            day = start.astimezone(agent.zone).date()
            that_day = sum(1 for b in booked if b.start.astimezone(agent.zone).date() == day)
            key = (start, that_day, len(booked), order, agent.name)
            if best is None or key < best:
                best = key
            break  # Later starts of this agent cannot beat its first free one.
    return Slot(best[4], best[0]) if best is not None else None


def agent_free_at(
    agents: Sequence[tuple[Calendar, Sequence[Booked]]],
    start: datetime,
    duration: timedelta,
    prefer: str | None = None,
) -> str | None:
    """An agent free for a call at `start` chosen by the user: `prefer` if free, else the one
    with the fewest calls that day (then in all, then the first listed); None if nobody is."""
    end = start + duration
    best: tuple[int, int, int, int, str] | None = None
    for order, (agent, booked) in enumerate(agents):
        if not free(agent, booked, start, end):
            continue
        day = start.astimezone(agent.zone).date()
        that_day = sum(1 for b in booked if b.start.astimezone(agent.zone).date() == day)
        key = (0 if agent.name == prefer else 1, that_day, len(booked), order, agent.name)
        if best is None or key < best:
            best = key
    return best[4] if best is not None else None

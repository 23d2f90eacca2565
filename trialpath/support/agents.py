"""Success-call agents and the slots they are booked for, in Trialpath's database.

The journey's `[call] agents` seed the `agents` table the first time it is read; from then on
the table is the source, edited through /v1/agents or `trialpath agents`. A booking takes a
slot in one transaction that first bumps the agent's row (`Agent.bookings`): two bookings for
the same agent wait for each other on PostgreSQL (the row's lock) and on SQLite (the database's
write lock), then check again what is free; the unique (agent, start) constraint is the last
guard. A booking is numbered per trial (`request`), so a retried one finds its slot again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Engine, delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from trialpath.core.definition import (
    AGENT_NAME,
    WEEKDAYS,
    CallAgent,
    DefinitionError,
    Weekday,
    check_timezone,
    load_definition,
)
from trialpath.operations.config import Settings
from trialpath.operations.models import Agent, CallSlot, utcnow
from trialpath.support.slots import Booked, Calendar, agent_free_at, earliest_slot, free

MAX_BOOKING_TRIES = 20
HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class AgentProblem(ValueError):
    """An agent's settings that cannot be taken (the message says why)."""


class Hours(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Annotated[str, Field(pattern=HHMM, description="HH:MM, the agent's time.")]
    end: Annotated[str, Field(pattern=HHMM, description="HH:MM, after start.")]

    @model_validator(mode="after")
    def _ordered(self) -> Hours:
        if self.end <= self.start:
            raise ValueError("hours.end must be after hours.start")
        return self


class AgentSettings(BaseModel):
    """What can be set on an agent (`PUT /v1/agents/{name}`, `trialpath agents set`)."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = Field(
        default="UTC", min_length=1, max_length=64, description="IANA time zone of the hours."
    )
    hours: Hours = Hours(start="09:00", end="17:00")
    days: list[Weekday] = Field(
        default=["mon", "tue", "wed", "thu", "fri"],
        min_length=1,
        max_length=7,
        json_schema_extra={"uniqueItems": True},
    )
    daily_capacity: int = Field(default=8, ge=1, le=96)
    active: bool = True

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[Weekday]) -> list[Weekday]:
        if len(set(value)) != len(value):
            raise ValueError("each weekday once")
        return sorted(value, key=WEEKDAYS.index)


class AgentPublic(AgentSettings):
    name: str
    upcoming_calls: int = 0
    """Calls booked from now on."""


def check_name(name: str) -> str:
    if not AGENT_NAME.fullmatch(name):
        raise AgentProblem(f"agent name {name!r}: 1 to 64 letters, digits, '.', '_', \"'\" or '-'")
    return name


def journey_agents(settings: Settings) -> tuple[CallAgent, ...]:
    """The journey's agents, which seed the table the first time it is read (none if the
    journey file cannot be read: the table then stays empty until an agent is set)."""
    try:
        return load_definition(settings.journey_file).call.agents
    except DefinitionError:
        return ()


def _row(agent: CallAgent) -> Agent:
    return Agent(
        name=agent.name,
        timezone=agent.timezone,
        hours_start=agent.hours.start.strftime("%H:%M"),
        hours_end=agent.hours.end.strftime("%H:%M"),
        days=",".join(agent.days),
        daily_capacity=agent.daily_capacity,
    )


def calendar(row: Agent) -> Calendar:
    return Calendar(
        name=row.name,
        timezone=row.timezone,
        start=time.fromisoformat(row.hours_start),
        end=time.fromisoformat(row.hours_end),
        days=frozenset(d for d in WEEKDAYS if d in row.days.split(",")),
        daily_capacity=row.daily_capacity,
    )


def public(row: Agent, upcoming: int = 0) -> AgentPublic:
    return AgentPublic(
        name=row.name,
        timezone=row.timezone,
        hours=Hours(start=row.hours_start, end=row.hours_end),
        days=[d for d in WEEKDAYS if d in row.days.split(",")],
        daily_capacity=row.daily_capacity,
        active=row.active,
        upcoming_calls=upcoming,
    )


def seed(engine: Engine, agents: Sequence[CallAgent]) -> None:
    """Writes the journey's agents if the table is empty (once: a concurrent seed wins)."""
    with Session(engine) as session:
        if session.exec(select(Agent).limit(1)).first() is not None:
            return
        for agent in agents:
            session.add(_row(agent))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()


def list_agents(
    engine: Engine, agents: Sequence[CallAgent], now: datetime | None = None
) -> list[AgentPublic]:
    seed(engine, agents)
    now = now or utcnow()
    with Session(engine) as session:
        rows = session.exec(select(Agent).order_by(col(Agent.name))).all()
        upcoming = session.exec(select(CallSlot).where(col(CallSlot.start_at) >= now)).all()
    counts: dict[str, int] = {}
    for slot in upcoming:
        counts[slot.agent] = counts.get(slot.agent, 0) + 1
    return [public(row, counts.get(row.name, 0)) for row in rows]


def set_agent(
    engine: Engine, name: str, settings: AgentSettings, agents: Sequence[CallAgent]
) -> tuple[AgentPublic, bool]:
    """Creates or replaces an agent's settings; True if it was created."""
    check_name(name)
    seed(engine, agents)
    with Session(engine) as session:
        row = session.get(Agent, name)
        created = row is None
        if row is None:
            row = Agent(
                name=name,
                timezone=settings.timezone,
                hours_start=settings.hours.start,
                hours_end=settings.hours.end,
                days=",".join(settings.days),
                daily_capacity=settings.daily_capacity,
            )
        row.timezone = settings.timezone
        row.hours_start = settings.hours.start
        row.hours_end = settings.hours.end
        row.days = ",".join(settings.days)
        row.daily_capacity = settings.daily_capacity
        row.active = settings.active
        row.updated_at = utcnow()
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            # Created by a concurrent request meanwhile: this one replaces its settings.
            session.rollback()
            return set_agent(engine, name, settings, agents)
        session.refresh(row)
        return public(row), created


def remove_agent(engine: Engine, name: str, agents: Sequence[CallAgent]) -> AgentPublic | None:
    """Deactivates an agent: offered no new calls; calls already booked keep them. None if
    there is no such agent."""
    seed(engine, agents)
    with Session(engine) as session:
        row = session.get(Agent, name)
        if row is None:
            return None
        row.active = False
        row.updated_at = utcnow()
        session.add(row)
        session.commit()
        session.refresh(row)
        return public(row)


# --- Booking ---------------------------------------------------------------------------------


class SlotRequest(BaseModel):
    """A trial asking the agents' calendars for its success call (times are journey times).

    `at` None: the earliest free slot in [earliest, latest) inside the user's send window.
    `at` set: an agent free at that time, `prefer` first (a time the user chose)."""

    workflow_id: str
    request: int = Field(ge=1)
    agents: list[CallAgent]
    """The journey's agents: they seed the calendar the first time."""
    duration_minutes: int = Field(gt=0)
    user_timezone: str = "UTC"
    user_opens: time = time(0, 0)
    user_closes: time = time(23, 59)
    earliest: datetime | None = None
    latest: datetime | None = None
    at: datetime | None = None
    prefer: str | None = None


class SlotOffer(BaseModel):
    agent: str | None
    """None: no agent is free (then `at` is None too, unless the user chose the time)."""
    at: datetime | None


def _busy(session: Session, workflow_id: str, since: datetime, until: datetime) -> list[CallSlot]:
    """Other trials' calls in [since, until) (a trial's own earlier call is about to move)."""
    return list(
        session.exec(
            select(CallSlot).where(
                col(CallSlot.start_at) >= since,
                col(CallSlot.start_at) < until,
                col(CallSlot.workflow_id) != workflow_id,
            )
        ).all()
    )


def offer_slot(engine: Engine, request: SlotRequest) -> SlotOffer:
    """Books the slot the request asks for and releases the trial's other calls, or answers
    that none is free (a user's chosen time then releases them too: the call moved anyway).
    The same request answers the same, however often it is retried."""
    seed(engine, request.agents)
    duration = timedelta(minutes=request.duration_minutes)
    if request.at is not None:
        since, until = request.at, request.at + duration
    else:
        assert request.earliest is not None and request.latest is not None
        since, until = request.earliest, request.latest
    # Whole local days around the window, for the daily capacity in any time zone.
    since, until = since - timedelta(days=2), until + timedelta(days=2)
    for _ in range(MAX_BOOKING_TRIES):
        found = _booked(engine, request)
        if found is not None:
            return found
        with Session(engine) as session:
            rows = session.exec(
                select(Agent).where(col(Agent.active)).order_by(col(Agent.name))
            ).all()
            busy = _busy(session, request.workflow_id, since, until)
            agents = [(calendar(r), _booked_of(busy, r.name)) for r in _in_order(rows, request)]
            agent, start = _choose(agents, request, duration)
            if agent is None or start is None:
                if request.at is not None:
                    _release_others(session, request.workflow_id, request.request)
                    session.commit()
                    return SlotOffer(agent=None, at=request.at)
                return SlotOffer(agent=None, at=None)
            # Take the agent's lock, then look again: a booking committed meanwhile counts.
            session.execute(
                update(Agent)
                .where(col(Agent.name) == agent)
                .values(bookings=col(Agent.bookings) + 1)
            )
            again = _busy(session, request.workflow_id, since, until)
            row = next(r for r in rows if r.name == agent)
            if not free(calendar(row), _booked_of(again, agent), start, start + duration):
                session.rollback()
                continue
            session.add(
                CallSlot(
                    agent=agent,
                    start_at=start,
                    end_at=start + duration,
                    workflow_id=request.workflow_id,
                    request=request.request,
                )
            )
            _release_others(session, request.workflow_id, request.request)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()  # Taken by another trial, or by this request's own retry.
                continue
            return SlotOffer(agent=agent, at=start)
    raise RuntimeError(
        f"could not book a call slot after {MAX_BOOKING_TRIES} tries (agents busy booking)"
    )


def _in_order(rows: Sequence[Agent], request: SlotRequest) -> list[Agent]:
    """The journey's order first (ties go to the first listed), then the others by name."""
    listed = [a.name for a in request.agents]
    return sorted(rows, key=lambda r: listed.index(r.name) if r.name in listed else len(listed))


def _booked_of(slots: Sequence[CallSlot], agent: str) -> list[Booked]:
    return [Booked(s.start_at, s.end_at) for s in slots if s.agent == agent]


def _choose(
    agents: list[tuple[Calendar, list[Booked]]], request: SlotRequest, duration: timedelta
) -> tuple[str | None, datetime | None]:
    if request.at is not None:
        return agent_free_at(agents, request.at, duration, request.prefer), request.at
    assert request.earliest is not None and request.latest is not None
    slot = earliest_slot(
        agents,
        request.earliest,
        request.latest,
        duration,
        ZoneInfo(request.user_timezone),
        request.user_opens,
        request.user_closes,
    )
    return (slot.agent, slot.start) if slot is not None else (None, None)


def _booked(engine: Engine, request: SlotRequest) -> SlotOffer | None:
    with Session(engine) as session:
        slot = session.exec(
            select(CallSlot).where(
                col(CallSlot.workflow_id) == request.workflow_id,
                col(CallSlot.request) == request.request,
            )
        ).first()
    return SlotOffer(agent=slot.agent, at=slot.start_at) if slot is not None else None


def _release_others(session: Session, workflow_id: str, request: int) -> None:
    session.execute(
        delete(CallSlot).where(
            col(CallSlot.workflow_id) == workflow_id, col(CallSlot.request) != request
        )
    )


def release_slots(engine: Engine, workflow_id: str, after: datetime) -> int:
    """Frees the trial's calls starting after `after` (it converted or was cancelled)."""
    with Session(engine) as session:
        result = session.execute(
            delete(CallSlot).where(
                col(CallSlot.workflow_id) == workflow_id, col(CallSlot.start_at) > after
            )
        )
        session.commit()
        return int(getattr(result, "rowcount", 0) or 0)


def booked_slots(engine: Engine, since: datetime | None = None) -> list[CallSlot]:
    """Calls booked from `since` (all without), by agent then time."""
    with Session(engine) as session:
        query = select(CallSlot).order_by(col(CallSlot.agent), col(CallSlot.start_at))
        if since is not None:
            query = query.where(col(CallSlot.start_at) >= since)
        return list(session.exec(query).all())

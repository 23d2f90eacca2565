"""Success calls in the agents' calendars, end to end on the time-skipping server (rules 4).

The journey is the shipped one (who is offered a call included) without its experiment and
surveys, with three agents who work every day (so the test does not depend on the weekday it
runs on): Camille in Paris, Samir in London, Julia in New York, 09:00-17:00 their time, four
calls a day each. Users sign up at 08:00 UTC in time zone UTC (send window 09:00-18:00).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.driver import DAY, TrialDriver, align
from trialpath.core.contract import TrialStatus
from trialpath.core.definition import load_definition
from trialpath.delivery.preferences import BookingTokens, signing_secret
from trialpath.operations.config import PACKAGE_DIR, Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import CallSlot, CsTask, Message
from trialpath.support.agents import list_agents, remove_agent
from trialpath.support.slots import Calendar, working

pytestmark = pytest.mark.database_agnostic

EVERY_DAY = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'
AGENTS = (
    "agents = [\n"
    + "".join(
        f'  {{ name = "{name}", timezone = "{tz}", hours = {{ start = "09:00", end = "17:00" }}, '
        f"days = {EVERY_DAY}, daily_capacity = 4 }},\n"
        for name, tz in (
            ("Camille", "Europe/Paris"),
            ("Samir", "Europe/London"),
            ("Julia", "America/New_York"),
        )
    )
    + "]\n"
)
BOOKING_URL = "https://book.acme.test/call"


@pytest.fixture(scope="module")
def calendar_journey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = (PACKAGE_DIR / "journey.toml").read_text()
    head, found, _ = text.partition("\n[surveys]")
    assert found
    head, replaced = re.subn(r"(?m)^agents = \[\n(?:  \{.*\},\n)+\]\n", AGENTS, head)
    assert replaced == 1
    path = tmp_path_factory.mktemp("calendar-journey") / "journey.toml"
    path.write_text(head + "\n")
    return path


@pytest.fixture
def settings(tmp_path: Path, database_url: str, calendar_journey: Path) -> Iterator[Settings]:
    return Settings(
        data_dir=tmp_path / "data",
        task_queue=f"tq-{uuid.uuid4()}",
        database_url=database_url,
        journey_file=calendar_journey,
        booking_url=BOOKING_URL,
    )


async def until(trials: list[TrialDriver], ready: str) -> list[TrialStatus]:
    """The trials' statuses once each shows `ready` (a call state), asking every 0.1 s."""
    for _ in range(300):
        statuses = [await t.status() for t in trials]
        if all(s.call.state == ready for s in statuses):
            return statuses
        await asyncio.sleep(0.1)
    raise AssertionError(f"not every trial's call is {ready}: {[s.call for s in statuses]}")


def slots(settings: Settings) -> list[CallSlot]:
    with Session(make_engine(settings.effective_database_url)) as session:
        return list(session.exec(select(CallSlot)).all())


def messages(settings: Settings, user_id: str) -> dict[str, Message]:
    with Session(make_engine(settings.effective_database_url)) as session:
        found = session.exec(select(Message).where(Message.user_id == user_id)).all()
        return {m.step: m for m in found}


@pytest.mark.takes(seconds=20)
async def test_ten_same_day_signups_get_calls_spread_over_three_agents(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    await align(env)
    trials = [
        TrialDriver(env, settings, f"slot-{i}", role="business", urgency="this_week")
        for i in range(10)
    ]
    for trial in trials:
        await trial.start()
    statuses = await until(trials, "scheduled")
    await trials[0].at_day(0.1)

    definition = load_definition(settings.journey_file)
    calendars = {a.name: Calendar.of(a) for a in definition.call.agents}
    booked = slots(settings)
    assert len(booked) == 10
    # Never double-booked: no two calls of an agent overlap.
    for name in calendars:
        mine = sorted((s for s in booked if s.agent == name), key=lambda s: s.start_at)
        for first, second in itertools.pairwise(mine):
            assert first.end_at <= second.start_at, f"{name} double-booked"
    # Each inside its agent's hours and the user's send window, on the urgency's day (day 2)
    # from 10:00.
    earliest = trials[0].signup_at.replace(hour=10, minute=0, second=0, microsecond=0) + 2 * DAY
    latest = earliest.replace(hour=0) + DAY
    utc = ZoneInfo("UTC")
    for slot in booked:
        assert working(calendars[slot.agent], slot.start_at, slot.end_at), slot
        local_start, local_end = slot.start_at.astimezone(utc), slot.end_at.astimezone(utc)
        assert local_start.hour >= 9 and (local_end.hour, local_end.minute) <= (18, 0), slot
        assert earliest <= slot.start_at and slot.end_at <= latest, slot
    per_agent = sorted(sum(1 for s in booked if s.agent == name) for name in calendars)
    assert per_agent == [2, 4, 4]
    # Each trial's call is its slot, and its invitation went out.
    by_trial = {s.workflow_id: s for s in booked}
    for trial, status in zip(trials, statuses, strict=True):
        slot = by_trial[f"trial-{trial.user_id}"]
        assert (status.call.agent, status.call.at) == (slot.agent, slot.start_at)
        assert {"call_invite.1/email", "call_invite.1/in_app"} <= set(
            messages(settings, trial.user_id)
        )
    # The agents' calendar shows them.
    engine = make_engine(settings.effective_database_url)
    upcoming = {a.name: a.upcoming_calls for a in list_agents(engine, definition.call.agents)}
    assert sum(upcoming.values()) == 10


@pytest.mark.takes(seconds=15)
async def test_an_evaluating_user_gets_the_self_serve_link_then_books_and_gets_an_agent(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, "self-serve-1", role="technical", urgency="evaluating")
    await trial.start()
    await trial.at_day(0.1)
    status = await trial.status()
    assert (status.call.state, status.call.agent) == ("none", None)
    assert slots(settings) == []
    sent = messages(settings, trial.user_id)
    assert {"call_self_serve/email", "call_self_serve/in_app"} <= set(sent)
    assert not any(step.startswith(("call_invite", "call_unassigned")) for step in sent)
    # The booking link: the configured page, the user's id and a token signed for them.
    html = sent["call_self_serve/email"].html
    link = re.search(
        rf"{re.escape(BOOKING_URL)}\?user_id=self-serve-1(?:&amp;|&)token=([\w.-]+)", html
    )
    assert link is not None, html
    assert BookingTokens(signing_secret(settings)).read(link.group(1)) == "self-serve-1"

    # The user books day 2 at 15:00 UTC: everyone works then (16:00 in Paris, 10:00 in New
    # York), nobody has a call: the first listed.
    await trial.signal("call_booked", {"at": trial.iso(2 + 7 / 24)})
    for _ in range(100):
        status = await trial.status()
        if status.call.agent is not None:
            break
        await asyncio.sleep(0.1)
    assert (status.call.state, status.call.agent) == ("booked", "Camille")
    assert [(s.agent, s.start_at) for s in slots(settings)] == [(status.call.agent, status.call.at)]
    await trial.at_day(0.2)
    sent = messages(settings, trial.user_id)
    assert "call_booked.1/email" in sent
    assert status.call.agent in sent["call_booked.1/email"].text


@pytest.mark.takes(seconds=15)
async def test_no_free_agent_sends_the_link_and_tells_support(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    # Every agent removed in the database (the calendar's source once it exists).
    engine = make_engine(settings.effective_database_url)
    definition = load_definition(settings.journey_file)
    for agent in definition.call.agents:
        remove_agent(engine, agent.name, definition.call.agents)
    await align(env)
    trial = TrialDriver(env, settings, "no-slot-1", role="business", urgency="this_week")
    await trial.start()
    await trial.at_day(0.1)
    status = await trial.status()
    assert status.call.state == "none"
    sent = messages(settings, trial.user_id)
    assert {"call_self_serve/email", "call_self_serve/in_app", "call_unassigned.1/support"} <= set(
        sent
    )
    assert "call unassigned" in sent["call_unassigned.1/support"].subject.lower()
    with Session(engine) as session:
        tasks = session.exec(select(CsTask).where(CsTask.user_id == trial.user_id)).all()
    assert [t.reason for t in tasks] == ["call unassigned"]
    assert slots(settings) == []


@pytest.mark.takes(seconds=15)
async def test_a_rescheduled_call_moves_its_slot_and_a_cancellation_frees_it(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, "move-1", role="business", urgency="this_week")
    await trial.start()
    (status,) = await until([trial], "scheduled")
    first = status.call
    assert first.agent is not None and first.at is not None
    assert [(s.agent, s.start_at) for s in slots(settings)] == [(first.agent, first.at)]

    # Moved by the user to day 3 at 15:00 UTC: the agent works then and keeps the call.
    await trial.at_day(0.1)
    await trial.signal("call_rescheduled", {"at": trial.iso(3 + 7 / 24)})
    for _ in range(100):
        status = await trial.status()
        if status.call.at != first.at and [s.start_at for s in slots(settings)] == [status.call.at]:
            break
        await asyncio.sleep(0.1)
    assert (status.call.state, status.call.agent) == ("scheduled", first.agent)
    assert [(s.agent, s.start_at) for s in slots(settings)] == [(first.agent, status.call.at)]
    await trial.at_day(0.2)
    sent = messages(settings, trial.user_id)
    assert "call_rescheduled.2/email" in sent

    # Cancelled before the call: the agent's slot is free again.
    await trial.signal("cancel", {"reason": "changed our mind"})
    result = await trial.result()
    assert result.stage == "cancelled"
    assert slots(settings) == []

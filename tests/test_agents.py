"""Agents' calendars in the database (`trialpath.support.agents`, the `offer_call_slot` activity)
and their routes (/v1/agents): seeding from the journey, editing, booking under concurrency and
retries (never double-booked), releasing; bad input answered with a problem."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.testing import ActivityEnvironment

from activities.calls import CallActivities, ReleaseSlotsInput
from trialpath.core.definition import CallAgent
from trialpath.operations.config import Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Agent, AuditEntry, CallSlot
from trialpath.support.agents import (
    AgentSettings,
    Hours,
    SlotRequest,
    booked_slots,
    list_agents,
    offer_slot,
    remove_agent,
    set_agent,
)

MON = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
AGENTS = [
    CallAgent(name="Camille", timezone="Europe/Paris", daily_capacity=4),
    CallAgent(name="Samir", timezone="Europe/London", daily_capacity=4),
    CallAgent(name="Julia", timezone="America/New_York", daily_capacity=4),
]


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return make_engine(settings.effective_database_url)


def propose(workflow: str, request: int = 1, **fields: Any) -> SlotRequest:
    values: dict[str, Any] = dict(
        workflow_id=workflow,
        request=request,
        agents=AGENTS,
        duration_minutes=30,
        user_timezone="UTC",
        user_opens=time(9),
        user_closes=time(18),
        earliest=MON.replace(hour=10),
        latest=MON + timedelta(days=1),
    )
    values.update(fields)
    return SlotRequest(**values)


def no_overlaps(slots: list[CallSlot]) -> None:
    by_agent: dict[str, list[CallSlot]] = {}
    for slot in slots:
        by_agent.setdefault(slot.agent, []).append(slot)
    for agent, calls in by_agent.items():
        calls.sort(key=lambda s: s.start_at)
        for first, second in itertools.pairwise(calls):
            assert first.end_at <= second.start_at, f"{agent} double-booked"


def test_the_journeys_agents_seed_the_table_once(engine: Engine) -> None:
    agents = list_agents(engine, AGENTS, now=MON)
    assert [(a.name, a.timezone, a.daily_capacity) for a in agents] == [
        ("Camille", "Europe/Paris", 4),
        ("Julia", "America/New_York", 4),
        ("Samir", "Europe/London", 4),
    ]
    # The database is the source from then on: a journey naming others changes nothing.
    assert len(list_agents(engine, [CallAgent(name="Zoe")], now=MON)) == 3


def test_set_and_remove_an_agent(engine: Engine) -> None:
    wanted = AgentSettings(
        timezone="Asia/Tokyo", hours=Hours(start="08:00", end="12:00"), days=["tue", "mon"]
    )
    agent, created = set_agent(engine, "Zoe", wanted, AGENTS)
    assert created and agent.days == ["mon", "tue"] and agent.hours.start == "08:00"
    _, created = set_agent(engine, "Zoe", wanted.model_copy(update={"daily_capacity": 2}), AGENTS)
    assert not created
    removed = remove_agent(engine, "Zoe", AGENTS)
    assert removed is not None and not removed.active
    assert remove_agent(engine, "Nobody", AGENTS) is None
    by_name = {a.name: a for a in list_agents(engine, AGENTS)}
    assert by_name["Zoe"].daily_capacity == 2 and not by_name["Zoe"].active


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"timezone": "Mars/Olympus"}, "not an IANA time zone"),
        ({"hours": {"start": "17:00", "end": "09:00"}}, "hours.end must be after hours.start"),
        ({"hours": {"start": "9am", "end": "17:00"}}, "should match pattern"),
        ({"days": ["mon", "mon"]}, "each weekday once"),
        ({"days": []}, "at least 1"),
        ({"daily_capacity": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_agent_settings_are_refused(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        AgentSettings.model_validate(fields)


def test_a_retried_request_gets_the_same_slot_and_one_row(engine: Engine) -> None:
    acts = CallActivities(engine)
    first = ActivityEnvironment().run(acts.offer_call_slot, propose("trial-a"))
    again = ActivityEnvironment().run(acts.offer_call_slot, propose("trial-a"))
    assert first == again and first.agent == "Camille" and first.at == MON.replace(hour=10)
    with Session(engine) as session:
        assert len(session.exec(select(CallSlot)).all()) == 1


def test_concurrent_bookings_never_double_book(engine: Engine) -> None:
    """Twenty trials ask at once for the same window: each gets its own slot, spread over the
    three agents (four calls a day each: the last eight find nothing that day)."""

    def book(i: int) -> tuple[str | None, datetime | None]:
        offer = offer_slot(engine, propose(f"trial-{i}"))
        return offer.agent, offer.at

    with ThreadPoolExecutor(10) as pool:
        got = list(pool.map(book, range(20)))
    booked = [g for g in got if g[0] is not None]
    assert len(booked) == 12 and len(set(booked)) == 12
    assert sorted(agent for agent, _ in booked if agent) == sorted(
        ["Camille", "Samir", "Julia"] * 4
    )
    slots = booked_slots(engine)
    assert len(slots) == 12
    no_overlaps(slots)
    for slot in slots:
        # Inside the user's window (09:00-18:00 UTC) and from the window's start.
        assert MON.replace(hour=10) <= slot.start_at and slot.end_at <= MON.replace(hour=18)


def test_a_time_the_user_chose_keeps_the_agent_if_free_and_frees_the_old_slot(
    engine: Engine,
) -> None:
    first = offer_slot(engine, propose("trial-a"))
    assert first.agent == "Camille"
    # Another trial takes Samir at 15:00.
    at = MON.replace(hour=15)
    other = offer_slot(
        engine, propose("trial-b", at=at, prefer="Samir", earliest=None, latest=None)
    )
    assert other.agent == "Samir"
    # trial-a moves to 15:00: Camille is free then and keeps the call.
    moved = offer_slot(
        engine, propose("trial-a", 2, at=at, prefer="Camille", earliest=None, latest=None)
    )
    assert (moved.agent, moved.at) == ("Camille", at)
    mine = [s for s in booked_slots(engine) if s.workflow_id == "trial-a"]
    assert [(s.agent, s.start_at, s.request) for s in mine] == [("Camille", at, 2)]
    # A third trial at 15:00 asking for Samir (busy) gets the one still free then: Julia
    # (10:00 in New York); a fourth finds nobody, and keeps the time it chose.
    third = offer_slot(
        engine, propose("trial-c", at=at, prefer="Samir", earliest=None, latest=None)
    )
    assert third.agent == "Julia"
    fourth = offer_slot(engine, propose("trial-d", at=at, earliest=None, latest=None))
    assert (fourth.agent, fourth.at) == (None, at)


def test_a_removed_agent_gets_no_new_calls(engine: Engine) -> None:
    list_agents(engine, AGENTS)
    remove_agent(engine, "Camille", AGENTS)
    offer = offer_slot(engine, propose("trial-a"))
    assert offer.agent == "Samir"


def test_releasing_frees_the_calls_still_to_come(engine: Engine) -> None:
    acts = CallActivities(engine)
    offer = offer_slot(engine, propose("trial-a"))
    assert offer.at is not None
    before = ReleaseSlotsInput(workflow_id="trial-a", after=offer.at)
    assert ActivityEnvironment().run(acts.release_call_slots, before) == 0
    after = ReleaseSlotsInput(workflow_id="trial-a", after=offer.at - timedelta(hours=1))
    assert ActivityEnvironment().run(acts.release_call_slots, after) == 1
    assert booked_slots(engine) == []
    # Free again for another trial.
    assert offer_slot(engine, propose("trial-b")).at == offer.at


def test_no_agent_configured_is_a_non_retryable_error(engine: Engine) -> None:
    from temporalio.exceptions import ApplicationError

    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(
            CallActivities(engine).offer_call_slot, propose("trial-a", agents=[])
        )
    assert raised.value.non_retryable


# --- /v1/agents ------------------------------------------------------------------------------


async def test_agents_routes(api: Any, settings: Settings) -> None:
    listed = await api.get("/v1/agents")
    assert listed.status_code == 200
    assert [a["name"] for a in listed.json()] == ["Camille", "Julia", "Samir"]

    body = {
        "timezone": "Asia/Tokyo",
        "hours": {"start": "08:00", "end": "12:00"},
        "days": ["mon", "tue"],
        "daily_capacity": 3,
    }
    created = await api.put("/v1/agents/Zoe", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["timezone"] == "Asia/Tokyo" and created.json()["active"]
    replaced = await api.put("/v1/agents/Zoe", json={**body, "daily_capacity": 5})
    assert replaced.status_code == 200 and replaced.json()["daily_capacity"] == 5

    removed = await api.delete("/v1/agents/Zoe")
    assert removed.status_code == 200 and removed.json()["active"] is False
    missing = await api.delete("/v1/agents/Nobody")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert "Nobody" in missing.json()["detail"]

    bad = await api.put("/v1/agents/Zoe", json={**body, "timezone": "Mars/Olympus"})
    assert bad.status_code == 422 and "IANA" in bad.json()["detail"]
    bad = await api.put("/v1/agents/Zoe", json={**body, "hours": {"start": "18:00", "end": "9"}})
    assert bad.status_code == 422
    bad = await api.put("/v1/agents/no%20spaces", json=body)
    assert bad.status_code == 422

    engine = make_engine(settings.effective_database_url)
    with Session(engine) as session:
        zoe = session.get(Agent, "Zoe")
        assert zoe is not None and zoe.daily_capacity == 5 and not zoe.active
        audited = session.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()
    assert [(e.action, e.status) for e in audited] == [
        ("agent.set", 201),
        ("agent.set", 200),
        ("agent.remove", 200),
        ("agent.remove", 404),
        ("agent.set", 422),
        ("agent.set", 422),
        ("agent.set", 422),
    ]

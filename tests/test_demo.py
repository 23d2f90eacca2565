"""The demo's own truth: each scripted user's expectation is checked against what the trial
reports at the end (a ✓, or an ✗ saying what differed), its actions go on the trial's journey
clock, and the synthetic population holds its signups back when the service falls behind.
No services: statuses are built as the workflow reports them."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from rich.console import Console

from trialpath.core.contract import CallStatus, SentStatus, TrialStatus
from trialpath.core.definition import JourneyDefinition, load_definition
from trialpath.core.journey import assign_arm
from trialpath.entry.demo import (
    Action,
    AfterCall,
    Expected,
    Played,
    ScriptedUser,
    Tracked,
    batches,
    calls_table,
    check,
    differences,
    message_of,
    play,
    results_table,
    scripted_users,
    settled,
    signup_body,
    trial_clock,
)
from trialpath.growth.population import Throttle, population, worker_lag
from trialpath.operations.config import PACKAGE_DIR
from trialpath.operations.models import CallSlot

SPD = 4.0
SIGNUP = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def journey() -> JourneyDefinition:
    return load_definition(PACKAGE_DIR / "journey.toml")


def real(day: float) -> datetime:
    """The wall-clock time of a journey day after SIGNUP, on the demo's clock."""
    return SIGNUP + timedelta(seconds=day * SPD)


def sent(user_id: str, *steps: str) -> list[SentStatus]:
    return [
        SentStatus(
            key=f"trial-{user_id}:{step}",
            channel=step.rsplit("/", 1)[1],
            template="",
            at=real(1),
            day=1,
        )
        for step in steps
    ]


def status(user_id: str, **changes: Any) -> TrialStatus:
    """A finished trial as the workflow reports it: a 14-day trial in Europe/Paris, whose
    end (midnight after 2026-12-18, Paris) is 14 days 13.5 hours after SIGNUP."""
    fields: dict[str, Any] = {
        "user_id": user_id,
        "persona": "technical",
        "stage": "converted",
        "activated": True,
        "activated_at": real(1.0),
        "trial_ends_at": real(14 + 13.5 / 24),
        "next_wakeup": real(8),
        "call": CallStatus(state="scheduled", at=real(2.02), agent="Camille"),
        "sent": sent(user_id, "welcome/email", "activated/email", "welcome_paid/email"),
        "events_seen": {"integration_connected": 1, "api_call": 10},
        "ends_on": datetime(2026, 12, 18).date(),
    }
    return TrialStatus(**(fields | changes))


CONVERTS = Expected(
    "converted",
    "technical",
    activated_by=2.0,
    sent=("activated", "welcome_paid"),
    not_sent=("trial_ending_3",),
)


def diff(expected: Expected, st: TrialStatus, journey: JourneyDefinition, **kw: Any) -> list[str]:
    options: dict[str, Any] = {
        "signup_at": SIGNUP,
        "timezone": "Europe/Paris",
        "seconds_per_day": SPD,
        "definition": journey,
        "arm": "personalized",
    }
    return differences(expected, st, **(options | kw))


def test_a_trial_that_ended_as_scripted_has_no_difference(journey: JourneyDefinition) -> None:
    assert diff(CONVERTS, status("u1"), journey) == []


def test_each_way_a_trial_deviates_is_named(journey: JourneyDefinition) -> None:
    deviating = status(
        "u1",
        stage="expired",
        persona="business",
        activated=False,
        activated_at=None,
        sent=sent("u1", "welcome/email", "trial_ending_3/email", "trial_ending_3/in_app"),
    )
    assert diff(CONVERTS, deviating, journey) == [
        "stage expired, expected converted",
        "persona business, expected technical",
        "not activated, expected by day 2",
        "no activated sent",
        "no welcome_paid sent",
        "trial_ending_3 sent",
    ]
    late = status("u1", activated_at=real(10.8))
    assert diff(CONVERTS, late, journey) == ["activated on day 10.8, expected by day 2"]
    never = Expected("expired", "technical", sent=("trial_ending_0",))
    activated = status("u1", stage="expired", sent=sent("u1", "trial_ending_0/email"))
    assert diff(never, activated, journey) == ["activated on day 1.0, expected never"]


def test_channels_and_the_trial_length_are_checked(journey: JourneyDefinition) -> None:
    unsubscribed = Expected(
        "converted",
        "technical",
        activated_by=2.0,
        sent=("activated/in_app",),
        not_sent=("activated/email",),
        trial_days=17,
    )
    found = diff(unsubscribed, status("u1"), journey)
    assert found == [
        "no activated/in_app sent",
        "activated/email sent",
        "a 14-day trial, expected 17",
    ]
    extended = status(
        "u1",
        sent=sent("u1", "activated/in_app"),
        ends_on=datetime(2026, 12, 21).date(),
        trial_ends_at=real(17 + 13.5 / 24),
    )
    assert diff(unsubscribed, extended, journey) == []


def test_the_holdout_is_not_expected_to_get_marketing(journey: JourneyDefinition) -> None:
    only_transactional = status("u1", sent=sent("u1", "welcome_paid/email"))
    assert diff(CONVERTS, only_transactional, journey) == ["no activated sent"]
    assert diff(CONVERTS, only_transactional, journey, arm="holdout") == []
    stalled = Expected("expired", "technical", sent=("stall_nudge", "support_alert"))
    quiet = status("u1", stage="expired", activated=False, activated_at=None, sent=[])
    assert diff(stalled, quiet, journey, arm="holdout") == []
    assert diff(stalled, quiet, journey) == ["no stall_nudge sent", "no support_alert sent"]


def test_a_refused_or_late_command_is_a_difference_whatever_the_outcome(
    journey: JourneyDefinition,
) -> None:
    """A command more than a journey day late did not play as scripted; an event that carried
    its scripted moment counts when it happened, however late it was sent."""
    t = SIGNUP.timestamp()
    played = [
        Played("day 0.8: api_call ×10", due=t + 3.2, sent=t + 3.3, answered=t + 3.6),
        Played("day 1: login", due=t + 4, sent=t + 44, answered=t + 45, dated=True),
        Played("day 2: login", due=t + 8, sent=t + 48, answered=t + 49),
        Played("day 3: unsubscribe", due=t + 12, sent=t + 15.9, answered=t + 16),
        Played("day 5: conversion", due=t + 20, sent=t + 60, answered=t + 61),
        Played("day 8: cancel", due=t + 32, sent=t + 32, answered=t + 33, problem="409 ended"),
    ]
    assert diff(CONVERTS, status("u1"), journey, played=played) == [
        "day 2: login: sent 10.0 days late",
        "day 5: conversion: sent 10.0 days late",
        "day 8: cancel: 409 ended",
    ]


def test_the_verdict_shows_in_the_results_table(journey: JourneyDefinition) -> None:
    user = next(u for u in scripted_users() if u.key == "tech-convert")
    ok = Tracked(user, "demo-tech-convert", False, SIGNUP, status("demo-tech-convert"))
    wrong = Tracked(user, "demo2-tech-convert", False, SIGNUP, status("demo2-tech-convert"))
    wrong.status = status("demo2-tech-convert", stage="expired")
    for item in (ok, wrong):
        item.verdict = check(item, SPD, journey)
    assert ok.verdict == [] and wrong.verdict == ["stage expired, expected converted"]
    console = Console(record=True, width=250)
    console.print(results_table([ok, wrong], SPD, "Demo results", journey))
    rows = {line.split()[1]: line for line in console.export_text().splitlines() if "│" in line}
    assert rows["demo-tech-convert"].rstrip(" │").endswith("✓")
    assert "✗ stage expired, expected converted" in rows["demo2-tech-convert"]


def test_every_sample_user_has_an_expectation_its_script_can_meet(
    journey: JourneyDefinition,
) -> None:
    users = scripted_users()
    assert len(users) == 12 and all(u.expect is not None for u in users)
    for user in users:
        assert user.expect is not None
        for spec in (*user.expect.sent, *user.expect.not_sent):
            journey.message(spec.partition("/")[0])  # a message the journey knows
        if user.expect.activated_by is not None:
            days = [w for w, a, _ in user.script if a == "event" and isinstance(w, float)]
            assert all(d <= user.expect.activated_by for d in days), user.key


def test_message_names_come_from_sent_keys() -> None:
    assert message_of("trial-u:drip.drip_webhooks/email") == ("drip_webhooks", "email")
    assert message_of("trial-u:stall_nudge.1/in_app") == ("stall_nudge", "in_app")
    assert message_of("trial-u:trial_ending_3/sms") == ("trial_ending_3", "sms")
    assert message_of("trial-a:b:call_invite.2/email") == ("call_invite", "email")
    follow_up = "trial-u:drip.drip_roi_calculator.unless_read/email"
    assert message_of(follow_up) == ("drip_roi_calculator", "email")


def test_events_at_one_moment_go_in_one_request() -> None:
    after = AfterCall(0.3)
    script: list[Action] = [
        (0.5, "event", {"name": "login"}),
        (0.8, "event", {"name": "integration_connected"}),
        (0.8, "event", {"name": "api_call"}),
        (0.8, "call", {"action": "completed"}),
        (after, "event", {"name": "api_call"}),
        (after, "event", {"name": "api_call"}),
    ]
    assert [(w, a, len(p) if a == "event" else p) for w, a, p in batches(script)] == [
        (0.5, "event", 1),
        (0.8, "event", 2),
        (0.8, "call", {"action": "completed"}),
        (after, "event", 2),
    ]


def test_a_trial_tells_its_clock() -> None:
    assert trial_clock(status("u1"), SIGNUP, "Europe/Paris") == pytest.approx(SPD)
    slower = status("u1", trial_ends_at=SIGNUP + (real(14 + 13.5 / 24) - SIGNUP) * 2)
    assert trial_clock(slower, SIGNUP, "Europe/Paris") == pytest.approx(2 * SPD)
    assert trial_clock(status("u1", ends_on=None), SIGNUP, "Europe/Paris") is None


def test_a_trial_is_settled_once_its_workflow_caught_up() -> None:
    user = ScriptedUser("k", "K", "", "technical", "this_week", [])
    item = Tracked(user, "u1", False, SIGNUP, status("u1"), script_done=True)
    item.events_sent.update({"api_call": 11})
    now, wall = time.monotonic(), real(7.5).timestamp()
    item.changed_at = now
    assert not settled(item, SPD, now, wall)  # one api_call not seen yet
    item.status = status("u1", events_seen={"api_call": 11})
    assert settled(item, SPD, now, wall)  # waiting for its next step, on day 8
    assert not settled(item, SPD, now, real(8.5).timestamp())  # day 8 came: not run yet
    item.status = status("u1", events_seen={"api_call": 11}, next_wakeup=None)
    assert not settled(item, SPD, now, wall)  # busy with a step...
    assert settled(item, SPD, now + SPD, wall)  # ...or quiet for a journey day: ended
    item.script_done = False
    assert not settled(item, SPD, now + SPD, wall)


class FakeApi:
    """The API as the demo sees it: records each request and when it came."""

    def __init__(self, call_at: datetime) -> None:
        self.call_at = call_at
        self.requests: list[tuple[float, str, str, Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self.requests.append(
            (
                time.time(),
                request.method,
                request.url.path,
                httpx.Response(200, content=body).json() if body else None,
            )
        )
        if request.method == "GET":
            st = status(
                "u1",
                stage="onboarding",
                call=CallStatus(state="scheduled", at=self.call_at, agent="A"),
            )
            return httpx.Response(200, json=st.model_dump(mode="json"))
        return httpx.Response(202, json={})


async def test_actions_after_the_call_follow_the_call_the_trial_scheduled() -> None:
    signup = datetime.now(UTC)
    api = FakeApi(call_at=signup + timedelta(seconds=0.6))
    user = ScriptedUser(
        "k",
        "K",
        "",
        "technical",
        "this_week",
        [
            (0.05, "event", {"name": "login"}),
            (AfterCall(0.1), "call", {"action": "completed"}),
            (AfterCall(0.1), "event", {"name": "api_call"}),
        ],
    )
    item = Tracked(user, "u1", False, signup)
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(api.handler), base_url="http://api"
    ) as client:
        await asyncio.wait_for(play(client, item, 1.0, dated=True), 10)
    posts = [r for r in api.requests if r[1] != "GET"]
    assert [p[2] for p in posts] == [
        "/v1/trials/u1/events",
        "/v1/trials/u1/call",
        "/v1/trials/u1/events",
    ]
    # On the trial's clock: 0.05 day after signup, then 0.1 day after the call it scheduled.
    assert posts[0][0] - signup.timestamp() == pytest.approx(0.05, abs=0.05)
    assert posts[1][0] - api.call_at.timestamp() == pytest.approx(0.1, abs=0.05)
    # Dated events carry their scripted moment.
    assert (
        posts[0][3][0]["occurred_at"]
        == datetime.fromtimestamp(signup.timestamp() + 0.05, UTC).isoformat()
    )
    assert [p.problem for p in item.played] == [None, None, None] and item.script_done


def test_the_population_holds_back_while_the_service_falls_behind() -> None:
    throttle = Throttle(concurrency=2, seconds_per_day=SPD)
    now = time.time()
    assert throttle.keeping_up(now)
    throttle.played(Played("x", due=now - 2.0, sent=now - 1.6, answered=now))
    assert throttle.keeping_up(now)  # sent 0.1 journey day after its moment, slow answer
    throttle.played(Played("y", due=now - 3, sent=now - 0.1, answered=now))
    assert not throttle.keeping_up(now)  # waited 0.7 journey day for its turn
    assert throttle.keeping_up(now + SPD + 0.1)  # a journey day later, forgotten
    throttle.lagging(1.5)
    assert not throttle.keeping_up(now + SPD + 0.1)  # the worker runs timers late
    throttle.lagging(0.2)
    assert throttle.keeping_up(now + SPD + 0.1) and throttle.worst_lag == 1.5
    throttle.waiting = 3
    assert not throttle.keeping_up(now + SPD + 0.1)  # more waiting than can go at once


async def test_the_worker_lag_is_read_on_the_trials_timers() -> None:
    due = datetime.now(UTC) - timedelta(seconds=2)

    def handler(request: httpx.Request) -> httpx.Response:
        st = status("u1", stage="onboarding", next_wakeup=due)
        return httpx.Response(200, json=st.model_dump(mode="json"))

    user = ScriptedUser("k", "K", "", "technical", "this_week", [])
    item = Tracked(user, "u1", False, SIGNUP)
    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        lag = await worker_lag(client, [item])
    assert 2.0 <= lag < 2.5  # its timer came due 2 s ago and it still sleeps on it


def test_the_population_is_the_same_for_the_same_arguments(journey: JourneyDefinition) -> None:
    first, second = population(journey, 50, "p"), population(journey, 50, "p")
    assert first == second
    arms = {assign_arm(journey, u.key) for u in first}
    assert arms <= {"personalized", "generic", "holdout", "global_holdout"}
    assert {"personalized", "generic", "holdout"} <= arms
    for user in first:
        # Whatever the user answered goes with the signup: the urgency sets the call's day.
        answers = signup_body(user, user.key)["qualification"]
        assert answers["urgency"] == user.urgency and answers["role"] == user.persona
        calls = [w for w, a, _ in user.script if a == "call"]
        for day in calls:
            assert isinstance(day, float)
            # After the day the call is on (10:00 local, within half a day of signup's time).
            assert day >= journey.call.day_by_urgency[user.urgency] + 0.5  # type: ignore[index]


def test_the_calls_table_shows_each_agents_booked_slots() -> None:
    monday = datetime(2026, 1, 5, 9, tzinfo=UTC)

    def slot(agent: str, hours: float, user: str) -> CallSlot:
        start = monday + timedelta(hours=hours)
        return CallSlot(
            agent=agent,
            start_at=start,
            end_at=start + timedelta(minutes=30),
            workflow_id=f"trial-demo-{user}",
            request=1,
        )

    slots = [slot("Samir", 1.5, "b"), slot("Camille", 0, "a"), slot("Samir", 1, "c")]
    console = Console(width=200, record=True)
    console.print(calls_table(slots))
    rows = {line.split()[1]: line for line in console.export_text().splitlines() if "│" in line}
    assert "Camille" in rows and "Samir" in rows
    # Paris time, each agent's calls in order.
    assert "Mon 10:00 demo-a" in rows["Camille"]
    assert rows["Samir"].index("Mon 11:00 demo-c") < rows["Samir"].index("Mon 11:30 demo-b")
    assert rows["Samir"].split("│")[2].strip() == "2"

"""Pure unit tests of the journey rules (`trialpath.core.journey`): no Temporal, no I/O, no clock.

Unless a test says otherwise, the trial signs up on Monday 2026-01-05 at 08:00 UTC, in time
zone UTC, with the default journey (send window 09:00-18:00, one marketing message per local
day, 14-day trial, so `ends_on` is day 14 and the trial ends at day 15 00:00). `t(day, h, m)` is
that Monday 00:00 UTC plus `day` days and `h:m`, so signup is `t(0, 8)` and trial day N starts
at `t(N, 8)`.

`simulate` plays the part of the workflow: it calls `next_step` in a loop, performs sends
(`mark_done` with every channel delivered), agent assignments (`assign_agent` with "Camille")
and calendar requests (`free_calendar`: "Camille", or the agent asked for, is free at the first
time asked), and on `Wait` jumps to the wake-up time or to the next scheduled signal, whichever
comes first, exactly as the workflow wakes on a timer or a signal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from trialpath.core import calls, journey
from trialpath.core.contract import Qualification, TrialProfile, Unsubscribe
from trialpath.core.definition import JourneyDefinition, MessageSpec, load_definition
from trialpath.core.journey import (
    MAX_REMEMBERED_EVENT_IDS,
    AssignAgent,
    Delivered,
    Finish,
    JourneyClock,
    OfferCall,
    ReleaseCall,
    Send,
    TrialState,
    Wait,
)
from trialpath.operations.config import PACKAGE_DIR

SHIPPED = load_definition(PACKAGE_DIR / "journey.toml")
DEFN = SHIPPED.model_copy(
    update={
        "experiment": None,
        "call": SHIPPED.call.model_copy(update={"offer_to": None}),
    }
)
"""Everyone on their persona's path (arm `default`) and offered a call; the experiment and
who is offered a call have tests of their own."""
D0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, far from any DST change in the zones used


def t(day: float, hour: int = 0, minute: int = 0) -> datetime:
    return D0 + timedelta(days=day, hours=hour, minutes=minute)


SIGNUP = t(0, 8)

GOALS: dict[str, list[tuple[str, int]]] = {
    "technical": [("integration_connected", 1), ("api_call", 10)],
    "business": [("workflow_created", 1), ("teammate_invited", 1)],
    "executive": [("dashboard_configured", 1), ("report_shared", 1)],
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def profile(
    *,
    role: str | None = None,
    challenge: str | None = None,
    urgency: str | None = None,
    timezone: str = "UTC",
    phone: str | None = None,
    company: str = "",
    trial_days: int | None = None,
) -> TrialProfile:
    qualification = None
    if role or challenge or urgency:
        qualification = Qualification.model_validate(
            {"role": role, "challenge": challenge, "urgency": urgency}
        )
    return TrialProfile(
        user_id="u1",
        name="Ada Lovelace",
        email="ada@example.com",
        phone=phone,
        timezone=timezone,
        company=company,
        trial_days=trial_days,
        qualification=qualification,
    )


def begin(
    defn: JourneyDefinition = DEFN,
    signup: datetime = SIGNUP,
    rules: int = journey.RULES,
    **kwargs: Any,
) -> TrialState:
    """A trial at signup, deciding by today's rules unless `rules` says otherwise (trials
    started before a fix keep the rules they started with)."""
    return journey.start(defn, profile(**kwargs), signup, rules)


def with_activation(defn: JourneyDefinition, persona: str, within_days: float) -> JourneyDefinition:
    path = defn.personas[persona]  # type: ignore[index]
    activation = path.activation.model_copy(update={"within_days": within_days})
    personas: dict[str, Any] = dict(defn.personas)
    personas[persona] = path.model_copy(update={"activation": activation})
    return defn.model_copy(update={"personas": personas})


def with_stall(defn: JourneyDefinition, **update: Any) -> JourneyDefinition:
    return defn.model_copy(update={"stall": defn.stall.model_copy(update=update)})


Signal = tuple[datetime, Callable[[datetime], Any]]


@dataclass
class Run:
    sends: list[tuple[datetime, str, tuple[str, ...]]]
    finish: str | None
    now: datetime

    def log(self, since: datetime | None = None) -> list[tuple[datetime, str]]:
        return [(at, occ) for at, occ, _ in self.sends if since is None or at >= since]

    def at_of(self, occurrence: str) -> datetime:
        found = [at for at, occ, _ in self.sends if occ == occurrence]
        assert len(found) == 1, (occurrence, found)
        return found[0]

    def channels(self, occurrence: str) -> tuple[str, ...]:
        return next(ch for _, occ, ch in self.sends if occ == occurrence)

    def occurrences(self) -> list[str]:
        return [occ for _, occ, _ in self.sends]


def simulate(
    defn: JourneyDefinition,
    state: TrialState,
    start: datetime,
    until: datetime,
    signals: Iterable[Signal] = (),
) -> Run:
    """Runs the journey from `start` until it finishes or its next wake-up is after `until`;
    each signal is applied at its time (the workflow wakes up for it)."""
    pending = sorted(signals, key=lambda s: s[0])
    sends: list[tuple[datetime, str, tuple[str, ...]]] = []
    now = start
    for _ in range(5000):
        while pending and pending[0][0] <= now:
            pending.pop(0)[1](now)
        step = journey.next_step(defn, state, now)
        if isinstance(step, Send):
            sends.append((now, step.occurrence, step.channels))
            delivered = [Delivered(c, f"k:{step.occurrence}/{c}", "t") for c in step.channels]
            journey.mark_done(defn, state, step, delivered, now)
        elif isinstance(step, AssignAgent):
            journey.assign_agent(defn, state, "Camille", now)
        elif isinstance(step, OfferCall | ReleaseCall):
            free_calendar(defn, state, step, now)
        elif isinstance(step, Finish):
            return Run(sends, step.stage, now)
        else:
            wake = step.until
            if pending and (wake is None or pending[0][0] < wake):
                wake = pending[0][0]
            if wake is None or wake > until:
                return Run(sends, None, now)
            assert wake > now, f"Wait({wake}) at {now} would spin"
            now = wake
    raise AssertionError("the journey did not settle")


def free_calendar(
    defn: JourneyDefinition, state: TrialState, step: OfferCall | ReleaseCall, now: datetime
) -> None:
    """A calendar where the agent asked for (else "Camille") is free at the first time asked."""
    if isinstance(step, ReleaseCall):
        journey.apply_call_released(state)
        return
    at = step.at or step.earliest
    journey.apply_call_offer(defn, state, step, step.prefer or "Camille", at, now)


def event(
    state: TrialState, name: str, at: datetime, defn: JourneyDefinition = DEFN
) -> Callable[[datetime], Any]:
    """A signal applying product event `name` that occurred at `at` (when it is delivered)."""
    return lambda now: journey.apply_event(defn, state, name, at, None, now)


def settle_signup(defn: JourneyDefinition, state: TrialState) -> Run:
    """Plays signup (welcome, agent, call invitation) and stops at the first wait."""
    return simulate(defn, state, SIGNUP, SIGNUP)


# --- JourneyClock ----------------------------------------------------------------------------


def test_clock_two_seconds_per_day_maps_one_real_second_to_half_a_journey_day() -> None:
    clock = JourneyClock(origin=SIGNUP, seconds_per_day=2.0)
    # scale = 86400 / 2 = 43200 journey seconds per real second, i.e. 12 hours.
    assert clock.scale == 43200.0
    assert clock.journey(SIGNUP + timedelta(seconds=1)) == SIGNUP + timedelta(hours=12)
    assert clock.journey(SIGNUP + timedelta(seconds=3)) == SIGNUP + timedelta(days=1, hours=12)
    # 14 journey days = 28 real seconds.
    assert clock.real(SIGNUP + timedelta(days=14)) == SIGNUP + timedelta(seconds=28)
    assert clock.real_duration(timedelta(days=1)) == timedelta(seconds=2)
    # Both clocks meet at the origin.
    assert clock.journey(SIGNUP) == SIGNUP
    assert clock.real(SIGNUP) == SIGNUP


@pytest.mark.parametrize("seconds_per_day", [86400.0, 2.0, 5.0, 0.5])
@pytest.mark.parametrize("offset", [timedelta(0), timedelta(seconds=7), timedelta(hours=-3)])
def test_clock_round_trip(seconds_per_day: float, offset: timedelta) -> None:
    clock = JourneyClock(origin=SIGNUP, seconds_per_day=seconds_per_day)
    instant = SIGNUP + offset
    # real → journey → real is exact (journey time has more resolution than needed).
    assert clock.real(clock.journey(instant)) == instant
    # journey → real → journey is exact up to one real microsecond (datetime resolution),
    # which is `scale` journey microseconds (43200 µs = 43.2 ms at 2 s per day).
    back = clock.journey(clock.real(instant))
    assert abs(back - instant) <= timedelta(microseconds=clock.scale)


def test_clock_default_is_wall_clock() -> None:
    clock = JourneyClock(origin=SIGNUP)
    assert clock.scale == 1.0
    assert clock.journey(t(3, 17)) == t(3, 17)
    assert clock.real_duration(timedelta(hours=5)) == timedelta(hours=5)


# --- Start and time helpers ------------------------------------------------------------------


def test_start_sets_dates_and_deadline() -> None:
    state = begin(role="technical", phone="+33600000000", company="Acme Corp")
    assert state.ends_on == date(2026, 1, 19)  # 2026-01-05 + 14 days
    assert state.qualify_deadline == t(0, 9)  # signup + qualifier_timeout_hours (1 h)
    assert state.has_phone is True
    assert state.company == "Acme Corp"
    assert journey.trial_ends_at(state) == utc(2026, 1, 20)  # local midnight after ends_on
    # trial_day counts local calendar days since signup (signup day is day 0).
    assert journey.trial_day(state, t(3, 7, 59)) == 3
    assert journey.trial_day(state, t(2, 23, 59)) == 2
    assert journey.trial_day(state, t(0, 7)) == 0  # never negative
    # days_left counts local dates: Jan 19 - Jan 13 = 6.
    assert journey.days_left(state, t(8, 23)) == 6
    assert journey.days_left(state, t(14, 23)) == 0
    assert journey.days_left(state, t(20)) == 0


@pytest.mark.parametrize(
    ("tz", "signup", "ends_on", "ends_at"),
    [
        # 20:00 UTC = Jan 6 05:00 JST: local day Jan 6 → ends_on Jan 20, ends Jan 21 00:00 JST.
        ("Asia/Tokyo", utc(2026, 1, 5, 20), date(2026, 1, 20), utc(2026, 1, 20, 15)),
        # Jan 6 03:00 UTC = Jan 5 22:00 EST → ends_on Jan 19, ends Jan 20 00:00 EST (05:00 UTC).
        ("America/New_York", utc(2026, 1, 6, 3), date(2026, 1, 19), utc(2026, 1, 20, 5)),
        # Paris, across the spring change (29 March): ends Apr 4 00:00 CEST = Apr 3 22:00 UTC.
        ("Europe/Paris", utc(2026, 3, 20, 10), date(2026, 4, 3), utc(2026, 4, 3, 22)),
        # Paris, across the autumn change (25 October): ends Oct 30 00:00 CET = Oct 29 23:00 UTC.
        ("Europe/Paris", utc(2026, 10, 15, 10), date(2026, 10, 29), utc(2026, 10, 29, 23)),
    ],
)
def test_trial_ends_at_local_midnight_after_ends_on(
    tz: str, signup: datetime, ends_on: date, ends_at: datetime
) -> None:
    state = begin(signup=signup, role="business", timezone=tz)
    assert state.ends_on == ends_on
    assert journey.trial_ends_at(state) == ends_at


@pytest.mark.parametrize(
    ("day", "midnight"),
    [
        (date(2026, 3, 29), utc(2026, 3, 28, 23)),  # still CET (+1) at midnight
        (date(2026, 3, 30), utc(2026, 3, 29, 22)),  # CEST (+2)
        (date(2026, 10, 25), utc(2026, 10, 24, 22)),  # still CEST at midnight
        (date(2026, 10, 26), utc(2026, 10, 25, 23)),  # CET
    ],
)
def test_local_midnight_across_paris_dst(day: date, midnight: datetime) -> None:
    state = begin(signup=utc(2026, 3, 1, 10), role="business", timezone="Europe/Paris")
    assert journey.local_midnight(state, day) == midnight


# --- Persona ---------------------------------------------------------------------------------


def test_role_at_signup_sets_persona_immediately() -> None:
    state = begin(role="executive", urgency="this_week")
    assert state.persona == "executive"
    assert state.persona_source == "signup"
    assert state.persona_at == SIGNUP
    assert state.urgency == "this_week"
    assert journey.stage_of(DEFN, state, SIGNUP) == "onboarding"
    # No waiting for the qualifier: the next step already asks the agents' calendars for a
    # call on day 2 from 10:00, within three days.
    assert journey.next_step(DEFN, state, SIGNUP) == OfferCall(
        1, "propose", 0, earliest=t(2, 10), latest=t(5)
    )


def test_no_answers_wait_until_the_qualify_deadline_then_infer() -> None:
    state = begin()
    assert state.persona is None
    # Deadline = signup 08:00 + 1 h.
    assert journey.next_step(DEFN, state, SIGNUP) == Wait(t(0, 9))
    assert journey.next_step(DEFN, state, t(0, 8, 59)) == Wait(t(0, 9))
    assert journey.stage_of(DEFN, state, t(0, 8, 59)) == "qualifying"
    assert state.persona is None
    step = journey.next_step(DEFN, state, t(0, 9))
    assert isinstance(step, OfferCall)
    # Nothing to go on: the default persona, recorded as such (rules 4).
    assert (state.persona, state.persona_source, state.persona_at) == (
        "business",
        "defaulted",
        t(0, 9),
    )
    run = simulate(DEFN, state, t(0, 9), t(0, 9))
    # Welcome is due at the persona time; the invitation follows the assignment.
    assert run.log() == [(t(0, 9), "welcome"), (t(0, 9), "call_invite.1")]
    # No urgency answered: `evaluating` → call on day 7 at 10:00.
    assert state.call.at == t(7, 10)


@pytest.mark.parametrize(
    ("challenge", "events", "expected"),
    [
        # The challenge wins whenever it was answered.
        ("integrations", {}, "technical"),
        ("team_coordination", {"api_call": 3}, "business"),
        ("strategic_oversight", {"api_call": 5, "workflow_created": 2}, "executive"),
        # Otherwise votes of persona-typed events: technical 2 vs executive 1.
        (None, {"api_call": 2, "dashboard_configured": 1}, "technical"),
        # technical 1+1 = 2, executive 1+1 = 2, business 3 → business.
        (
            None,
            {
                "api_call": 1,
                "integration_connected": 1,
                "report_shared": 1,
                "dashboard_configured": 1,
                "teammate_invited": 3,
            },
            "business",
        ),
        # Ties go to the alphabetically first persona (business < executive < technical).
        (None, {"report_shared": 1, "workflow_created": 1}, "business"),
        (None, {"api_call": 1, "report_shared": 1}, "executive"),
        (None, {"api_call": 2, "report_shared": 1, "dashboard_configured": 1}, "executive"),
        # Events with no persona (login, data_source_connected) do not vote: default persona.
        (None, {"login": 4, "data_source_connected": 2}, "business"),
        (None, {}, "business"),
    ],
)
def test_inferred_persona(challenge: str | None, events: dict[str, int], expected: str) -> None:
    state = begin(challenge=challenge)
    assert state.persona is None  # a challenge alone does not set the persona
    for name, count in events.items():
        for _ in range(count):
            journey.apply_event(DEFN, state, name, t(0, 8, 30), None, t(0, 8, 30))
    assert journey.infer_persona(DEFN, state) == expected
    journey.next_step(DEFN, state, t(0, 9))
    assert state.persona == expected
    # Nothing to go on (no challenge, no persona-typed event): the default, said so (rules 4).
    guessed = challenge is not None or any(e in DEFN.inference.events for e in events)
    assert state.persona_source == ("inferred" if guessed else "defaulted")


def test_inference_tie_does_not_depend_on_arrival_order() -> None:
    first, second = begin(), begin()
    for name in ("api_call", "dashboard_configured"):
        journey.apply_event(DEFN, first, name, t(0, 8, 10), None, t(0, 8, 10))
    for name in ("dashboard_configured", "api_call"):
        journey.apply_event(DEFN, second, name, t(0, 8, 10), None, t(0, 8, 10))
    assert journey.infer_persona(DEFN, first) == journey.infer_persona(DEFN, second) == "executive"


def test_inference_uses_events_seen_before_signup() -> None:
    state = begin()
    outcome = journey.apply_event(DEFN, state, "api_call", t(0, 7), None, t(0, 8, 5))
    assert outcome.counted is False
    assert journey.infer_persona(DEFN, state) == "technical"


def test_inference_falls_back_to_the_configured_default_persona() -> None:
    defn = DEFN.model_copy(update={"default_persona": "executive"})
    state = begin(defn)
    journey.next_step(defn, state, t(0, 9))
    assert state.persona == "executive"


def test_apply_qualification_switches_persona_later() -> None:
    state = begin()
    simulate(DEFN, state, SIGNUP, t(0, 9))
    assert (state.persona, state.persona_source) == ("business", "defaulted")
    persona = journey.apply_qualification(
        DEFN, state, "technical", "integrations", "this_week", t(0, 10)
    )
    assert persona == "technical"
    assert (state.persona, state.persona_source) == ("technical", "qualifier")
    assert (state.role, state.challenge, state.urgency) == (
        "technical",
        "integrations",
        "this_week",
    )
    # The persona time stays the first one (welcome and stall anchor do not move).
    assert state.persona_at == t(0, 9)
    # The call already proposed (day 7, evaluating) is not moved by the later urgency.
    assert state.call.at == t(7, 10)


def test_qualification_to_a_persona_whose_goal_is_met_activates_at_once() -> None:
    state = begin(role="business")
    journey.apply_event(DEFN, state, "dashboard_configured", t(0, 10), None, t(0, 10))
    journey.apply_event(DEFN, state, "report_shared", t(0, 11), None, t(0, 11))
    assert state.activated_at is None
    journey.apply_qualification(
        DEFN, state, "executive", "strategic_oversight", "this_week", t(0, 12)
    )
    # Activated when the executive goal was reached (the report at 11:00), even though the
    # persona only changed at 12:00: time to first value measures what the user did.
    assert state.activated_at == t(0, 11)
    # The executive milestone (dashboard_configured) was already seen: milestone queued now.
    assert [(q.occurrence, q.due) for q in state.queued] == [("milestone", t(0, 12))]


def test_milestone_seen_while_qualifying_is_sent_after_inference() -> None:
    state = begin()
    journey.apply_event(DEFN, state, "dashboard_configured", t(0, 8, 20), None, t(0, 8, 20))
    assert state.milestone_at is None  # no persona yet
    run = simulate(DEFN, state, SIGNUP, t(0, 9))
    assert state.persona == "executive"
    assert state.milestone_at == t(0, 9)
    # welcome (priority 0) before the queued milestone and invitation, in due order.
    assert run.log() == [
        (t(0, 9), "welcome"),
        (t(0, 9), "milestone"),
        (t(0, 9), "call_invite.1"),
    ]
    assert run.channels("milestone") == ("in_app",)


# --- Events and activation -------------------------------------------------------------------


def goal_events(persona: str) -> list[str]:
    return [name for name, count in GOALS[persona] for _ in range(count)]


@pytest.mark.parametrize("persona", list(GOALS))
def test_activation_when_every_count_is_reached_within_the_window(persona: str) -> None:
    state = begin(role=persona)
    names = goal_events(persona)
    outcomes = []
    for i, name in enumerate(names):
        at = t(1, 10, i)  # one event a minute from day 1 10:00
        outcomes.append(journey.apply_event(DEFN, state, name, at, f"e{i}", at))
    last = t(1, 10, len(names) - 1)  # technical: 11 events → 10:10; others: 2 → 10:01
    assert state.activated_at == last
    assert [o.activated_now for o in outcomes] == [False] * (len(names) - 1) + [True]
    assert all(o.accepted and o.counted for o in outcomes)
    assert journey.activation_progress(DEFN, state) == 100
    assert journey.stage_of(DEFN, state, last) == "activated"


@pytest.mark.parametrize(
    ("persona", "progress"),
    [
        ("technical", 90),  # 1 integration + 9 api_calls of (1 + 10): floor(100 * 10 / 11)
        ("business", 50),  # 1 of 2
        ("executive", 50),
    ],
)
def test_one_event_short_is_not_activated(persona: str, progress: int) -> None:
    state = begin(role=persona)
    for i, name in enumerate(goal_events(persona)[:-1]):
        journey.apply_event(DEFN, state, name, t(1, 10, i), None, t(1, 10, i))
    assert state.activated_at is None
    assert journey.activation_progress(DEFN, state) == progress
    assert journey.stage_of(DEFN, state, t(2)) == "onboarding"


@pytest.mark.parametrize(
    ("occurred", "activated"),
    [
        (SIGNUP + timedelta(days=7) - timedelta(minutes=1), True),  # trial day 6
        (SIGNUP + timedelta(days=7), False),  # trial day 7: outside within_days = 7
        (t(10, 12), False),
    ],
)
def test_events_after_day_7_do_not_count(occurred: datetime, activated: bool) -> None:
    state = begin(role="business")
    journey.apply_event(DEFN, state, "workflow_created", t(1, 10), None, t(1, 10))
    outcome = journey.apply_event(DEFN, state, "teammate_invited", occurred, None, occurred)
    # Still inside the trial, so accepted and recorded, but it only activates inside 7 days.
    assert (outcome.accepted, outcome.counted) == (True, True)
    assert outcome.activated_now is activated
    assert (state.activated_at == occurred) is activated
    assert journey.activation_progress(DEFN, state) == (100 if activated else 50)


def test_events_before_signup_are_seen_but_never_count() -> None:
    state = begin(role="business")
    before = SIGNUP - timedelta(minutes=1)
    outcome = journey.apply_event(DEFN, state, "workflow_created", before, "e1", t(0, 9))
    assert outcome == journey.EventOutcome(accepted=True, counted=False)
    assert state.events_seen == {"workflow_created": 1}
    assert state.counted == {}
    assert state.earliest == {}
    assert state.last_key_event_at is None
    assert state.milestone_at is None
    # The other half of the goal inside the trial: still 1 of 2 counted.
    journey.apply_event(DEFN, state, "teammate_invited", t(0, 10), "e2", t(0, 10))
    assert state.activated_at is None
    assert journey.activation_progress(DEFN, state) == 50


def test_duplicate_event_ids_are_ignored() -> None:
    state = begin(role="business")
    first = journey.apply_event(DEFN, state, "workflow_created", t(0, 10), "evt-1", t(0, 10))
    again = journey.apply_event(DEFN, state, "workflow_created", t(0, 10), "evt-1", t(0, 10))
    other = journey.apply_event(DEFN, state, "teammate_invited", t(0, 11), "evt-1", t(0, 11))
    assert first.accepted and first.counted
    assert again == other == journey.EventOutcome(accepted=False, counted=False)
    assert state.events_seen == {"workflow_created": 1}
    assert state.counted == {"workflow_created": 1}
    assert state.earliest == {"workflow_created": [t(0, 10)]}
    assert state.activated_at is None
    # Without an id there is no de-duplication.
    journey.apply_event(DEFN, state, "login", t(0, 12), None, t(0, 12))
    journey.apply_event(DEFN, state, "login", t(0, 12), None, t(0, 12))
    assert state.events_seen["login"] == 2


def test_remembered_event_ids_are_bounded() -> None:
    state = begin(role="business")
    for i in range(MAX_REMEMBERED_EVENT_IDS + 1):
        journey.apply_event(DEFN, state, "login", t(0, 10), f"id-{i}", t(0, 10))
    assert MAX_REMEMBERED_EVENT_IDS == 1000
    assert len(state.seen_event_ids) == 1000
    # The oldest id was forgotten (accepted again), the newest is still remembered.
    assert state.seen_event_ids[0] == "id-1"
    assert state.seen_event_ids[-1] == "id-1000"
    assert (
        journey.apply_event(DEFN, state, "login", t(0, 10), "id-1000", t(0, 10)).accepted is False
    )
    assert journey.apply_event(DEFN, state, "login", t(0, 10), "id-0", t(0, 10)).accepted is True
    assert state.events_seen["login"] == 1002


def test_future_occurred_at_is_clamped_to_now() -> None:
    state = begin(role="business")
    journey.apply_event(DEFN, state, "workflow_created", t(5), None, t(1, 10))
    # Counted at now (day 1, 10:00), not on day 5.
    assert state.counted == {"workflow_created": 1}
    assert state.earliest == {"workflow_created": [t(1, 10)]}
    assert state.last_key_event_at == t(1, 10)
    assert state.milestone_at == t(1, 10)
    # On day 9 it would be outside the 7 days; clamped to now it activates now.
    outcome = journey.apply_event(DEFN, state, "teammate_invited", t(9), None, t(1, 11))
    assert outcome.activated_now
    assert state.activated_at == t(1, 11)


def test_older_key_event_does_not_move_the_last_key_event_back() -> None:
    state = begin(role="business")
    journey.apply_event(DEFN, state, "data_source_connected", t(2, 10), None, t(2, 10))
    journey.apply_event(
        DEFN, state, "data_source_connected", t(1, 10), None, t(2, 11)
    )  # arrives late
    journey.apply_event(DEFN, state, "page_viewed", t(3, 10), None, t(3, 10))  # not a key event
    assert state.last_key_event_at == t(2, 10)


@pytest.mark.parametrize(
    ("persona", "events", "progress"),
    [
        ("technical", {}, 0),
        ("technical", {"integration_connected": 1}, 9),  # floor(100 * 1 / 11)
        ("technical", {"integration_connected": 1, "api_call": 5}, 54),  # floor(100 * 6 / 11)
        ("technical", {"api_call": 15}, 90),  # capped at 10: floor(100 * 10 / 11)
        ("technical", {"integration_connected": 3, "api_call": 9}, 90),  # 1 + 9 of 11
        ("business", {"workflow_created": 3}, 50),  # capped at 1 of 2
        ("executive", {"report_shared": 1, "login": 7}, 50),  # login is not required
        ("executive", {"report_shared": 1, "dashboard_configured": 1}, 100),  # activated
    ],
)
def test_activation_progress(persona: str, events: dict[str, int], progress: int) -> None:
    state = begin(role=persona)
    for name, count in events.items():
        for _ in range(count):
            journey.apply_event(DEFN, state, name, t(1, 10), None, t(1, 10))
    assert journey.activation_progress(DEFN, state) == progress


def test_activation_progress_without_persona_is_zero() -> None:
    state = begin()
    journey.apply_event(DEFN, state, "workflow_created", t(0, 8, 10), None, t(0, 8, 10))
    assert journey.activation_progress(DEFN, state) == 0


# --- Milestone -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "milestone", "other"),
    [
        ("technical", "integration_connected", "workflow_created"),
        ("business", "workflow_created", "dashboard_configured"),
        ("executive", "dashboard_configured", "integration_connected"),
    ],
)
def test_milestone_is_enqueued_once(persona: str, milestone: str, other: str) -> None:
    state = begin(role=persona)
    settle_signup(DEFN, state)
    journey.apply_event(DEFN, state, other, t(0, 19), None, t(0, 19))
    assert state.milestone_at is None  # another persona's milestone does not count
    journey.apply_event(DEFN, state, milestone, t(0, 20), None, t(0, 20))
    journey.apply_event(DEFN, state, milestone, t(0, 21), None, t(0, 21))
    assert state.milestone_at == t(0, 20)
    assert [(q.occurrence, q.message, q.due) for q in state.queued] == [
        ("milestone", "milestone", t(0, 20))
    ]
    # Transactional and immediate: sent at once, outside the window, in-app only.
    step = journey.next_step(DEFN, state, t(0, 21))
    assert step == Send("milestone", "milestone", "transactional", ("in_app",), {})
    journey.mark_done(DEFN, state, step, [Delivered("in_app", "k", "t")], t(0, 21))
    journey.apply_event(DEFN, state, milestone, t(0, 22), None, t(0, 22))
    assert state.queued == []
    assert state.done["milestone"] == "sent"


# --- Send window and daily cap ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("due", "expected"),
    [
        (t(1, 7), t(1, 9)),  # before the window: window opening
        (t(1, 9), t(1, 9)),
        (t(1, 12, 30), t(1, 12, 30)),  # inside: as is
        (t(1, 17, 59), t(1, 17, 59)),
        (t(1, 18), t(2, 9)),  # the window end is exclusive: next day's opening
        (t(1, 23), t(2, 9)),
    ],
)
def test_next_send_time_window(due: datetime, expected: datetime) -> None:
    state = begin(role="business")
    assert journey.next_send_time(DEFN, state, due, due) == expected


def test_next_send_time_never_before_now() -> None:
    state = begin(role="business")
    assert journey.next_send_time(DEFN, state, t(1, 7), t(1, 10)) == t(1, 10)
    assert journey.next_send_time(DEFN, state, t(1, 7), t(1, 19)) == t(2, 9)


def test_next_send_time_cap() -> None:
    state = begin(role="business")
    state.marketing_days["2026-01-06"] = 1  # day 1 already had its marketing message
    assert journey.next_send_time(DEFN, state, t(1, 7), t(1, 7)) == t(2, 9)
    assert journey.next_send_time(DEFN, state, t(1, 12), t(1, 12)) == t(2, 9)
    state.marketing_days["2026-01-07"] = 1
    assert journey.next_send_time(DEFN, state, t(1, 7), t(1, 7)) == t(3, 9)
    # With a cap of 2, one message on day 1 leaves room for another.
    two = DEFN.model_copy(update={"max_marketing_per_day": 2})
    assert journey.next_send_time(two, state, t(1, 12), t(1, 12)) == t(1, 12)


@pytest.mark.parametrize(
    ("tz", "due", "expected"),
    [
        # Jan 6 00:00 UTC = Jan 5 19:00 EST (after the window) → Jan 6 09:00 EST = 14:00 UTC.
        ("America/New_York", utc(2026, 1, 6, 0), utc(2026, 1, 6, 14)),
        # Jan 6 12:00 UTC = 07:00 EST → 09:00 EST = 14:00 UTC.
        ("America/New_York", utc(2026, 1, 6, 12), utc(2026, 1, 6, 14)),
        # Summer: Jul 1 00:00 UTC = Jun 30 20:00 EDT → Jul 1 09:00 EDT = 13:00 UTC.
        ("America/New_York", utc(2026, 7, 1, 0), utc(2026, 7, 1, 13)),
        # Jan 5 23:00 UTC = Jan 6 08:00 JST → 09:00 JST = Jan 6 00:00 UTC.
        ("Asia/Tokyo", utc(2026, 1, 5, 23), utc(2026, 1, 6, 0)),
        # Jan 6 10:00 UTC = 19:00 JST → Jan 7 09:00 JST = Jan 7 00:00 UTC.
        ("Asia/Tokyo", utc(2026, 1, 6, 10), utc(2026, 1, 7, 0)),
    ],
)
def test_next_send_time_in_the_user_time_zone(tz: str, due: datetime, expected: datetime) -> None:
    state = begin(signup=utc(2026, 1, 1, 12), role="business", timezone=tz)
    assert journey.next_send_time(DEFN, state, due, due) == expected


@pytest.mark.parametrize(
    ("due", "expected"),
    [
        (utc(2026, 3, 28, 0), utc(2026, 3, 28, 8)),  # Saturday, CET (+1)
        (utc(2026, 3, 29, 0), utc(2026, 3, 29, 7)),  # Sunday 29 March, CEST (+2) from 02:00
        (utc(2026, 3, 30, 0), utc(2026, 3, 30, 7)),
        (utc(2026, 3, 28, 18, 30), utc(2026, 3, 29, 7)),  # Sat 19:30 CET → Sun 09:00 CEST
        (utc(2026, 10, 24, 0), utc(2026, 10, 24, 7)),  # Saturday, CEST
        (utc(2026, 10, 25, 0), utc(2026, 10, 25, 8)),  # Sunday 25 October, CET from 03:00
        (utc(2026, 10, 24, 17), utc(2026, 10, 25, 8)),  # Sat 19:00 CEST → Sun 09:00 CET
    ],
)
def test_next_send_time_across_paris_dst(due: datetime, expected: datetime) -> None:
    state = begin(signup=utc(2026, 3, 1, 10), role="business", timezone="Europe/Paris")
    assert journey.next_send_time(DEFN, state, due, due) == expected


@pytest.mark.parametrize(
    ("signup", "expected"),
    [
        # Friday 27 March 09:00 CET. Drip day 1 (Sat 28, CET) at 09:00 = 08:00 UTC; drip day 2
        # (Sun 29, CEST) at 09:00 = 07:00 UTC, before the nudge (due signup + 2 days = 08:00
        # UTC), which then finds the day capped and goes Monday 09:00 CEST = 07:00 UTC.
        (
            utc(2026, 3, 27, 8),
            [
                (utc(2026, 3, 28, 8), "drip.drip_api_quickstart"),
                (utc(2026, 3, 29, 7), "drip.drip_connect_integration"),
                (utc(2026, 3, 30, 7), "stall_nudge.1"),
            ],
        ),
        # Friday 23 October 10:00 CEST. Drip day 1 (Sat 24, CEST) at 07:00 UTC; on Sunday 25
        # (CET) 09:00 = 08:00 UTC the nudge (due 08:00 UTC) and drip day 2 are both ready: the
        # nudge wins, the drip goes on Monday 09:00 CET = 08:00 UTC.
        (
            utc(2026, 10, 23, 8),
            [
                (utc(2026, 10, 24, 7), "drip.drip_api_quickstart"),
                (utc(2026, 10, 25, 8), "stall_nudge.1"),
                (utc(2026, 10, 26, 8), "drip.drip_connect_integration"),
            ],
        ),
    ],
)
def test_marketing_at_nine_local_across_paris_dst(
    signup: datetime, expected: list[tuple[datetime, str]]
) -> None:
    state = begin(signup=signup, role="technical", urgency="this_month", timezone="Europe/Paris")
    run = simulate(DEFN, state, signup, signup + timedelta(days=3, hours=12))
    marketing = [(at, occ) for at, occ in run.log() if occ.startswith(("drip.", "stall_nudge"))]
    assert marketing == expected


# --- Drip ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "occurred",
    [
        SIGNUP - timedelta(hours=1),  # before signup: not counted, but seen
        t(0, 10),
    ],
)
def test_drip_skip_if_event_seen(occurred: datetime) -> None:
    state = begin(role="technical", urgency="this_month")
    settle_signup(DEFN, state)
    journey.apply_event(DEFN, state, "api_call", occurred, None, t(0, 10))
    run = simulate(DEFN, state, t(0, 10), t(1, 23))
    assert state.done["drip.drip_api_quickstart"] == "skipped"
    assert "drip.drip_api_quickstart" not in run.occurrences()
    assert [s for s in state.sent if s.occurrence == "drip.drip_api_quickstart"] == []


def test_drip_step_without_skip_if_event_is_sent_on_its_day() -> None:
    state = begin(role="technical", urgency="this_month")
    run = simulate(DEFN, state, SIGNUP, t(1, 23))
    # Drip day 1: due 00:00 local, sent at the window opening, on email and in-app.
    assert run.at_of("drip.drip_api_quickstart") == t(1, 9)
    assert run.channels("drip.drip_api_quickstart") == ("email", "in_app")
    assert state.marketing_days == {"2026-01-05": 1, "2026-01-06": 1}  # welcome, drip


def test_next_drip_step_keeps_its_day_after_a_skipped_step() -> None:
    state = begin(role="technical", urgency="this_month")
    settle_signup(DEFN, state)
    # An API call on day 0 at 20:00: drip day 1 (api quickstart) is skipped; the stall anchor
    # moves to 20:00, so the nudge is due day 2 20:00 → day 3 09:00.
    run = simulate(DEFN, state, SIGNUP, t(5), [(t(0, 20), event(state, "api_call", t(0, 20)))])
    assert state.done["drip.drip_api_quickstart"] == "skipped"
    # Drip day 2 (connect integration) should go at day 2 09:00, the nudge day 3 09:00.
    assert run.at_of("drip.drip_connect_integration") == t(2, 9)
    assert run.at_of("stall_nudge.1") == t(3, 9)


def test_drip_step_not_sent_within_three_days_is_skipped_as_stale() -> None:
    state = begin(role="technical", urgency="this_month")
    settle_signup(DEFN, state)
    # The workflow only wakes on day 3 at 12:00. Ready then: the nudge (due day 2 08:00,
    # priority 2), drip day 1 (due day 1 00:00, stale day 4 00:00, priority 3) and the
    # day-before call reminder (call day 4 10:00 → due day 3 10:00, transactional).
    run = simulate(DEFN, state, t(3, 12), t(4, 8))
    assert run.log() == [(t(3, 12), "stall_nudge.1"), (t(3, 12), "call_reminder_day.1")]
    # The cap moved the drip to day 4 09:00, after its stale time: skipped at day 4 00:00.
    assert state.done["drip.drip_api_quickstart"] == "skipped"
    assert run.now == t(4)


def test_drip_stale_boundary() -> None:
    state = begin(role="business", urgency="this_month")
    settle_signup(DEFN, state)
    state.marketing_days.update({"2026-01-06": 1, "2026-01-07": 1, "2026-01-08": 1})
    # Drip day 1 is due 2026-01-06 00:00 and stale 3 days later (2026-01-09 00:00); every day
    # up to then is capped, so there is nothing to send: wait for the stale time.
    journey.next_step(DEFN, state, t(3, 23, 59))
    assert "drip.drip_first_workflow" not in state.done
    journey.next_step(DEFN, state, t(4))
    assert state.done["drip.drip_first_workflow"] == "skipped"


def test_drip_stops_once_converting() -> None:
    state = begin(role="business", urgency="this_month")
    run = simulate(DEFN, state, SIGNUP, t(20))
    drips = [(at, occ) for at, occ in run.log() if occ.startswith("drip.")]
    # Days 1, 2 (pushed to day 3 by the nudge), 4, 7 and 10; nothing from day 11 (T-3).
    assert drips == [
        (t(1, 9), "drip.drip_first_workflow"),
        (t(3, 9), "drip.drip_invite_team"),
        (t(4, 9), "drip.drip_automate"),
        (t(7, 9), "drip.drip_optimise_workflows"),
        (t(10, 9), "drip.drip_team_collaboration"),
    ]


def test_marketing_priorities() -> None:
    assert (
        journey.PRIORITY_END_OF_TRIAL
        < journey.PRIORITY_ACTIVATED
        < journey.PRIORITY_NUDGE
        < journey.PRIORITY_DRIP
    )


def test_activated_message_beats_the_drip_of_the_same_day() -> None:
    state = begin(role="business", urgency="this_month")
    both = [
        (t(3, 20), event(state, "workflow_created", t(3, 20))),
        (t(3, 20), event(state, "teammate_invited", t(3, 20))),
    ]
    run = simulate(DEFN, state, SIGNUP, t(7, 12), both)
    assert state.activated_at == t(3, 20)
    # Day 4 09:00: `activated` (due day 3 20:00) and drip day 4 are both ready; activated goes
    # first, the drip the next day (before its stale time, day 7 00:00).
    marketing = [
        (at, occ)
        for at, occ in run.log(since=t(3, 12))
        if occ in ("activated", "drip.drip_automate", "drip.drip_optimise_workflows")
    ]
    assert marketing == [
        (t(4, 9), "activated"),
        (t(5, 9), "drip.drip_automate"),
        (t(7, 9), "drip.drip_optimise_workflows"),
    ]
    assert run.at_of("milestone") == t(3, 20)  # transactional: outside the window


def test_end_of_trial_beats_the_activated_message() -> None:
    defn = with_activation(DEFN, "business", 14)
    state = begin(defn, role="business", urgency="this_month")
    both = [
        (t(10, 20), event(state, "workflow_created", t(10, 20), defn)),
        (t(10, 20), event(state, "teammate_invited", t(10, 20), defn)),
    ]
    run = simulate(defn, state, SIGNUP, t(14, 12), both)
    assert state.activated_at == t(10, 20)
    # Day 11 09:00: T-3 (due day 11 00:00, priority 0) and activated (priority 1).
    assert [(at, occ) for at, occ in run.log(since=t(10, 12)) if occ != "milestone"] == [
        (t(10, 21), "survey_ces"),  # an hour after the first-value milestone
        (t(11, 9), "trial_ending_3"),
        (t(11, 20), "survey_onboarding"),  # a day after activation (rules 5), transactional
        (t(12, 9), "activated"),
        (t(13, 9), "trial_ending_1"),
        (t(14, 9), "trial_ending_0"),
    ]


def test_cap_of_two_sends_nudge_and_drip_the_same_day() -> None:
    defn = DEFN.model_copy(update={"max_marketing_per_day": 2})
    state = begin(defn, role="business", urgency="this_month")
    run = simulate(defn, state, SIGNUP, t(2, 23))
    # Day 1: drip day 1 at 09:00 (welcome was on day 0). Day 2 09:00: nudge then drip.
    assert run.log(since=t(1)) == [
        (t(1, 9), "drip.drip_first_workflow"),
        (t(2, 9), "stall_nudge.1"),
        (t(2, 9), "drip.drip_invite_team"),
    ]


# --- Channels --------------------------------------------------------------------------------


def test_sms_needs_a_phone_number_or_uses_the_fallback() -> None:
    without, with_phone = begin(role="business"), begin(role="business", phone="+15550100")
    hour = DEFN.messages["call_reminder_hour"]  # sms + in_app, fallback email
    ending = DEFN.messages["trial_ending_0"]  # email + in_app + sms, no fallback
    assert journey.channels_for(DEFN, without, hour) == ("email", "in_app")
    assert journey.channels_for(DEFN, with_phone, hour) == ("sms", "in_app")
    assert journey.channels_for(DEFN, without, ending) == ("email", "in_app")
    assert journey.channels_for(DEFN, with_phone, ending) == ("email", "in_app", "sms")


def test_fallback_does_not_duplicate_a_channel() -> None:
    state = begin(role="business")
    spec = MessageSpec(channels=("email", "sms"), category="transactional", fallback="email")
    assert journey.channels_for(DEFN, state, spec) == ("email",)


def test_marketing_skips_unsubscribed_channels_transactional_does_not() -> None:
    state = begin(role="business", phone="+15550100")
    assert journey.apply_unsubscribe(state, Unsubscribe(channel="email")) is True
    assert journey.apply_unsubscribe(state, Unsubscribe(channel="email")) is False
    assert state.unsubscribed == ["email"]
    assert journey.channels_for(DEFN, state, DEFN.messages["trial_ending_0"]) == ("in_app", "sms")
    assert journey.channels_for(DEFN, state, DEFN.messages["winback_3"]) == ()
    assert journey.channels_for(DEFN, state, DEFN.messages["call_reminder_day"]) == (
        "email",
        "in_app",
    )
    # A drip step is marketing on its own channels.
    drip = DEFN.message("drip_automate")
    assert (drip.category, drip.channels) == ("marketing", ("email", "in_app"))
    assert journey.channels_for(DEFN, state, drip) == ("in_app",)


def test_marketing_fallback_to_an_unsubscribed_channel_is_dropped() -> None:
    state = begin(role="business")
    journey.apply_unsubscribe(state, Unsubscribe(channel="email"))
    spec = MessageSpec(channels=("sms",), category="marketing", fallback="email")
    assert journey.channels_for(DEFN, state, spec) == ()


def test_unsubscribe_all() -> None:
    state = begin(role="business", phone="+15550100")
    journey.apply_unsubscribe(state, Unsubscribe(channel="sms"))
    assert journey.apply_unsubscribe(state, Unsubscribe(channel="all")) is True
    assert state.unsubscribed == ["sms", "email", "in_app"]
    assert journey.apply_unsubscribe(state, Unsubscribe(channel="all")) is False
    assert journey.channels_for(DEFN, state, DEFN.messages["welcome"]) == ()
    assert journey.channels_for(DEFN, state, DEFN.messages["support_alert"]) == ("support",)
    assert journey.channels_for(DEFN, state, DEFN.messages["call_reminder_hour"]) == (
        "sms",
        "in_app",
    )
    # In the journey: the welcome has no channel left and is skipped; the invitation still goes.
    run = settle_signup(DEFN, state)
    assert run.log() == [(SIGNUP, "call_invite.1")]
    assert state.done["welcome"] == "skipped"
    assert state.marketing_days == {}


# --- Stall -----------------------------------------------------------------------------------


def stall_log(run: Run) -> list[tuple[datetime, str]]:
    return [(at, occ) for at, occ in run.log() if occ.startswith(("stall_nudge", "support_alert"))]


@pytest.mark.parametrize(
    ("events", "defn", "expected"),
    [
        # No key event: anchor = persona time 08:00 → nudge day 2 08:00 → window 09:00;
        # the alert 1 day after the nudge was sent.
        ([], DEFN, [(t(2, 9), "stall_nudge.1"), (t(3, 9), "support_alert.1")]),
        # Progress day 1 10:00 → nudge day 3 10:00 (inside the window), alert day 4 10:00.
        ([t(1, 10)], DEFN, [(t(3, 10), "stall_nudge.1"), (t(4, 10), "support_alert.1")]),
        # Login day 1 20:00 → due day 3 20:00, after the window → day 4 09:00 (it beats the
        # day-4 drip for the cap), alert day 5 09:00.
        ([t(1, 20)], DEFN, [(t(4, 9), "stall_nudge.1"), (t(5, 9), "support_alert.1")]),
        # Stall after 3 days: progress day 1 10:00 → nudge due day 4 10:00, but the day-4 drip
        # took that day's cap at 09:00, so the nudge goes day 5 09:00; alert day 6 09:00.
        (
            [t(1, 10)],
            with_stall(DEFN, days=3.0),
            [(t(5, 9), "stall_nudge.1"), (t(6, 9), "support_alert.1")],
        ),
        # Alert after half a day: nudge day 2 09:00 → alert day 2 21:00 (immediate, no window).
        (
            [],
            with_stall(DEFN, alert_after_days=0.5),
            [(t(2, 9), "stall_nudge.1"), (t(2, 21), "support_alert.1")],
        ),
    ],
)
def test_stall_nudge_and_alert_times(
    events: list[datetime], defn: JourneyDefinition, expected: list[tuple[datetime, str]]
) -> None:
    state = begin(defn, role="business", urgency="this_month")
    signals = [(at, event(state, "data_source_connected", at, defn)) for at in events]
    run = simulate(defn, state, SIGNUP, t(8), signals)
    assert stall_log(run) == expected


def test_stall_anchor_is_the_persona_time_when_later() -> None:
    defn = with_stall(DEFN.model_copy(update={"qualifier_timeout_hours": 12.0}), days=3.0)
    state = begin(defn)
    # A data source connected while qualifying (day 0 10:00); the persona is inferred at
    # 20:00, the later anchor: nudge due day 3 20:00, after the window → day 4 09:00, where it
    # beats the day-4 drip; alert day 5 09:00. (Anchored on that event it would have gone on
    # day 3 at 10:00.)
    run = simulate(
        defn,
        state,
        SIGNUP,
        t(6),
        [(t(0, 10), event(state, "data_source_connected", t(0, 10), defn))],
    )
    assert state.persona_at == t(0, 20)
    assert state.last_key_event_at == t(0, 10)
    assert stall_log(run) == [(t(4, 9), "stall_nudge.1"), (t(5, 9), "support_alert.1")]


@pytest.mark.parametrize(
    ("max_nudges", "expected"),
    [
        # Nudge 1 day 2 09:00. Progress at day 2 20:00 starts a new episode before the alert
        # (due day 3 09:00), which is dropped. Nudge 2 due day 4 20:00 → day 5 09:00, its alert
        # day 6 09:00 (numbered by alerts sent: support_alert.1). Progress at day 6 12:00
        # starts a third episode: no nudge left.
        (2, [(t(2, 9), "stall_nudge.1"), (t(5, 9), "stall_nudge.2"), (t(6, 9), "support_alert.1")]),
        (1, [(t(2, 9), "stall_nudge.1")]),
        (0, []),
    ],
)
def test_key_event_resets_the_stall_episode_and_nudges_are_capped(
    max_nudges: int, expected: list[tuple[datetime, str]]
) -> None:
    defn = with_stall(DEFN, max_nudges=max_nudges)
    state = begin(defn, role="business", urgency="this_month")
    progress = [
        (at, event(state, "data_source_connected", at, defn)) for at in (t(2, 20), t(6, 12))
    ]
    run = simulate(defn, state, SIGNUP, t(14), progress)
    assert stall_log(run) == expected
    assert state.nudges == min(max_nudges, 2)


def test_no_stall_messages_once_activated() -> None:
    state = begin(role="business", urgency="this_month")
    goal = [(t(1, 10), event(state, name, t(1, 10))) for name in goal_events("business")]
    run = simulate(DEFN, state, SIGNUP, t(14), goal)
    assert stall_log(run) == []
    assert run.at_of("activated") == t(2, 9)  # day 1's cap was taken by the drip at 09:00


@pytest.mark.parametrize(
    ("company", "urgency", "cs_task"),
    [
        ("", "this_month", False),
        ("", None, False),  # default urgency: evaluating
        ("Acme Corp", "this_month", True),
        ("", "this_week", True),
        ("Acme Corp", "this_week", True),
    ],
)
def test_alert_context(company: str, urgency: str | None, cs_task: bool) -> None:
    state = begin(role="executive", urgency=urgency, company=company)
    settle_signup(DEFN, state)
    run = simulate(DEFN, state, SIGNUP, t(3, 9))
    assert stall_log(run)[-1] == (t(3, 9), "support_alert.1")
    context = journey.alert_context(DEFN, state, t(3, 9))
    assert context == {
        "reason": "no key action since the stall nudge",
        "kind": "stalled",
        "user_id": "u1",
        "persona": "executive",
        "urgency": urgency or "evaluating",
        "days_stalled": 3,  # floor((day 3 09:00 - day 0 08:00) / 1 day)
        "cs_task": cs_task,
        "agent": "Camille",
    }


def test_support_alert_send_carries_the_context() -> None:
    state = begin(role="technical", urgency="this_week")
    simulate(DEFN, state, SIGNUP, t(3, 8))
    step = journey.next_step(DEFN, state, t(3, 9))
    assert isinstance(step, Send)
    assert (step.occurrence, step.category, step.channels) == (
        "support_alert.1",
        "transactional",
        ("support",),
    )
    assert step.extra["cs_task"] is True
    assert step.extra["days_stalled"] == 3


@pytest.mark.parametrize(
    ("tz", "signup", "alert_at", "moved_to"),
    [
        # Call day 7 10:00 (evaluating); alert day 3 09:00 → tomorrow 10:00 = day 4 10:00.
        ("UTC", SIGNUP, t(3, 9), t(4, 10)),
        # Signup 08:00 EST (13:00 UTC): nudge Jan 7 09:00 EST, alert Jan 8 09:00 EST
        # (14:00 UTC); the call moves from Jan 12 10:00 EST to Jan 9 10:00 EST = 15:00 UTC.
        ("America/New_York", utc(2026, 1, 5, 13), utc(2026, 1, 8, 14), utc(2026, 1, 9, 15)),
    ],
)
def test_support_alert_brings_the_call_forward_to_tomorrow(
    tz: str, signup: datetime, alert_at: datetime, moved_to: datetime
) -> None:
    state = begin(signup=signup, role="technical", urgency="evaluating", timezone=tz)
    run = simulate(DEFN, state, signup, moved_to)
    assert run.at_of("support_alert.1") == alert_at
    assert state.call.at == moved_to
    assert (state.call.version, state.call.state, state.call.since) == (2, "scheduled", alert_at)
    assert run.at_of("call_rescheduled.2") == alert_at
    # Reminders of version 2: the day before (after the alert, so not skipped), the hour before.
    assert run.at_of("call_reminder_day.2") == moved_to - timedelta(days=1)
    assert run.at_of("call_reminder_hour.2") == moved_to - timedelta(hours=1)
    assert "call_reminder_day.1" not in run.occurrences()


def test_support_alert_leaves_a_call_already_due_by_tomorrow() -> None:
    state = begin(role="technical", urgency="this_month")  # call day 4 10:00 = tomorrow 10:00
    run = simulate(DEFN, state, SIGNUP, t(5))
    assert run.at_of("support_alert.1") == t(3, 9)
    assert (state.call.at, state.call.version) == (t(4, 10), 1)
    assert not [occ for occ in run.occurrences() if occ.startswith("call_rescheduled")]


@pytest.mark.parametrize("how", ["booked", "rescheduled"])
def test_support_alert_never_moves_a_time_the_user_chose(how: str) -> None:
    state = begin(role="technical", urgency="this_month")

    def choose(now: datetime) -> None:
        if how == "booked":
            assert journey.apply_call_booked(state, t(6, 15), None, now)
        else:
            assert journey.apply_call_rescheduled(state, t(6, 15), now)

    run = simulate(DEFN, state, SIGNUP, t(5), [(t(1, 12), choose)])
    assert run.at_of("support_alert.1") == t(3, 9)
    assert state.call.at == t(6, 15)
    assert state.call.version == 2
    assert state.call.state == ("booked" if how == "booked" else "scheduled")
    assert run.at_of(f"call_{how}.2") == t(1, 12)


# --- Success call ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("urgency", "call_at"),
    [
        ("this_week", t(2, 10)),
        ("this_month", t(4, 10)),
        ("evaluating", t(7, 10)),
        (None, t(7, 10)),  # default urgency: evaluating
    ],
)
def test_call_time_by_urgency(urgency: str | None, call_at: datetime) -> None:
    state = begin(role="business", urgency=urgency)
    assert journey.call_time(DEFN, state) == call_at
    run = settle_signup(DEFN, state)
    assert (state.call.state, state.call.agent, state.call.at) == ("scheduled", "Camille", call_at)
    assert (state.call.version, state.call.since, state.call.chosen_by_user) == (1, SIGNUP, False)
    assert run.log() == [(SIGNUP, "welcome"), (SIGNUP, "call_invite.1")]


@pytest.mark.parametrize(
    ("urgency", "call_at"),
    [
        ("this_week", t(2, 10)),  # day 2 is inside a 3-day trial
        ("this_month", t(3, 10)),  # day 4 → the last trial day (day 3)
        ("evaluating", t(3, 10)),  # day 7 → day 3
    ],
)
def test_call_never_after_the_last_trial_day(urgency: str, call_at: datetime) -> None:
    state = begin(role="business", urgency=urgency, trial_days=3)
    assert state.ends_on == date(2026, 1, 8)
    assert journey.call_time(DEFN, state) == call_at


def test_call_time_in_the_user_time_zone() -> None:
    # Signup 10:00 EST on Jan 5 → this_month: Jan 9 10:00 EST = 15:00 UTC.
    state = begin(
        signup=utc(2026, 1, 5, 15),
        role="business",
        urgency="this_month",
        timezone="America/New_York",
    )
    assert journey.call_time(DEFN, state) == utc(2026, 1, 9, 15)


def test_call_at_least_two_hours_after_assignment() -> None:
    call = DEFN.call.model_copy(
        update={"day_by_urgency": {**DEFN.call.day_by_urgency, "this_week": 0}}
    )
    defn = DEFN.model_copy(update={"call": call})
    state = begin(defn, signup=t(0, 9, 30), role="business", urgency="this_week")
    # Day 0 10:00 is only 30 minutes away: the call is set for now + 2 h.
    journey.assign_agent(defn, state, "Samir", t(0, 9, 30))
    assert (state.call.at, state.call.agent) == (t(0, 11, 30), "Samir")


@pytest.mark.parametrize(
    ("phone", "hour_channels"), [(None, ("email", "in_app")), ("+15550100", ("sms", "in_app"))]
)
def test_call_reminders(phone: str | None, hour_channels: tuple[str, ...]) -> None:
    state = begin(role="business", urgency="this_month", phone=phone)
    run = simulate(DEFN, state, SIGNUP, t(5))
    # Call day 4 10:00: day-before reminder day 3 10:00, hour-before day 4 09:00.
    assert run.at_of("call_reminder_day.1") == t(3, 10)
    assert run.at_of("call_reminder_hour.1") == t(4, 9)
    assert run.channels("call_reminder_hour.1") == hour_channels


def test_reminder_due_before_the_version_was_set_is_skipped() -> None:
    state = begin(role="business", urgency="this_month")
    # Booked on day 4 12:00 for day 5 02:00: the day-before reminder (day 4 02:00) is past.
    book = [(t(4, 12), lambda now: journey.apply_call_booked(state, t(5, 2), "Julia", now))]
    run = simulate(DEFN, state, SIGNUP, t(6), book)
    call_messages = [(at, occ) for at, occ in run.log(since=t(4, 11)) if occ.startswith("call_")]
    assert call_messages == [(t(4, 12), "call_booked.2"), (t(5, 1), "call_reminder_hour.2")]
    assert "call_reminder_day.2" not in state.done
    assert run.channels("call_booked.2") == ("email",)
    assert (state.call.agent, state.call.version) == ("Julia", 2)


def test_trial_day_is_local_calendar_days() -> None:
    """A signup at 23:00 in Paris is on day 1 after local midnight, an hour later; trials
    started with rules 1 counted 24-hour periods."""
    state = begin(role="technical", timezone="Europe/Paris", signup=t(0, 22))
    assert journey.trial_day(state, t(0, 22, 59)) == 0
    assert journey.trial_day(state, t(0, 23)) == 1
    old = begin(role="technical", timezone="Europe/Paris", signup=t(0, 22), rules=1)
    assert journey.trial_day(old, t(0, 23)) == 0
    assert journey.trial_day(old, t(1, 22)) == 1


def test_reminders_stop_when_the_call_is_completed() -> None:
    """Rules 1 (trials started before the time checks) accepted a completion before the call;
    the reminders then stopped."""
    state = begin(role="business", urgency="this_month", rules=1)
    done = [(t(3, 12), lambda now: journey.apply_call_completed(state, "good call", now))]
    run = simulate(DEFN, state, SIGNUP, t(5), done)
    assert run.at_of("call_reminder_day.1") == t(3, 10)
    assert run.at_of("call_followup") == t(3, 12)
    assert run.channels("call_followup") == ("email",)
    assert "call_reminder_hour.1" not in run.occurrences()
    assert (state.call.state, state.call.notes) == ("completed", "good call")


def scheduled() -> TrialState:
    state = begin(role="business", urgency="this_month")
    settle_signup(DEFN, state)
    assert state.call.state == "scheduled"
    return state


def queued(state: TrialState) -> list[str]:
    return [q.occurrence for q in state.queued]


def test_call_booked_then_rescheduled() -> None:
    state = scheduled()
    assert journey.apply_call_booked(state, t(5, 14), None, t(1, 12)) is True
    assert (state.call.state, state.call.at, state.call.agent) == ("booked", t(5, 14), "Camille")
    assert (state.call.version, state.call.since, state.call.chosen_by_user) == (2, t(1, 12), True)
    assert queued(state) == ["call_booked.2"]
    assert journey.apply_call_rescheduled(state, t(6, 15), t(1, 13)) is True
    assert (state.call.state, state.call.at, state.call.version) == ("booked", t(6, 15), 3)
    assert queued(state) == ["call_booked.2", "call_rescheduled.3"]


def test_call_rescheduled_from_scheduled_stays_scheduled_but_user_chosen() -> None:
    state = scheduled()
    assert journey.apply_call_rescheduled(state, t(6, 15), t(1, 12)) is True
    assert (state.call.state, state.call.chosen_by_user, state.call.version) == (
        "scheduled",
        True,
        2,
    )


def test_call_rescheduled_needs_a_call() -> None:
    state = begin(role="business")
    assert state.call.state == "none"
    assert journey.apply_call_rescheduled(state, t(3), t(0, 8, 30)) is False
    assert state.call.version == 0
    assert state.queued == []


def test_call_completed_is_final() -> None:
    state = scheduled()
    assert journey.apply_call_completed(state, "notes", t(4, 11)) is True
    assert queued(state) == ["call_followup"]
    assert journey.apply_call_completed(state, "again", t(4, 12)) is False
    assert journey.apply_call_booked(state, t(6, 10), None, t(4, 12)) is False
    assert journey.apply_call_no_show(state, t(4, 12)) is False
    assert journey.apply_call_rescheduled(state, t(6, 10), t(4, 12)) is False
    assert (state.call.state, state.call.notes, state.call.version) == ("completed", "notes", 1)
    assert queued(state) == ["call_followup"]


def test_no_show_offers_one_rebook_only() -> None:
    state = scheduled()
    assert journey.apply_call_no_show(state, t(4, 11)) is True
    assert (state.call.state, state.call.rebook_offered) == ("no_show", True)
    assert queued(state) == ["call_rebook"]
    assert journey.apply_call_no_show(state, t(4, 12)) is False  # already a no-show
    # Rebooked, missed again: no second offer.
    assert journey.apply_call_booked(state, t(5, 10), "Julia", t(4, 13)) is True
    assert state.call.state == "booked"
    assert journey.apply_call_no_show(state, t(5, 11)) is True
    assert state.call.state == "no_show"
    assert queued(state) == ["call_rebook", "call_booked.2"]


def test_rescheduling_after_a_no_show_books_the_call() -> None:
    state = scheduled()
    journey.apply_call_no_show(state, t(4, 11))
    assert journey.apply_call_rescheduled(state, t(6, 10), t(4, 12)) is True
    assert (state.call.state, state.call.at, state.call.version) == ("booked", t(6, 10), 2)


def test_call_signals_after_cancellation_are_refused() -> None:
    state = scheduled()
    journey.apply_cancel(state, None, t(2))
    assert journey.apply_call_booked(state, t(5), None, t(2, 1)) is False
    assert journey.apply_call_rescheduled(state, t(5), t(2, 1)) is False
    assert journey.apply_call_completed(state, None, t(2, 1)) is False
    assert journey.apply_call_no_show(state, t(2, 1)) is False
    assert state.call.state == "scheduled"
    assert state.queued == []


def test_call_signals_after_conversion_are_refused() -> None:
    state = scheduled()
    journey.apply_conversion(state, "team", 99.0, t(3))
    assert journey.apply_call_booked(state, t(5), None, t(3, 1)) is False
    assert journey.apply_call_completed(state, "after paying", t(3, 1)) is False
    assert queued(state) == ["welcome_paid"]


# --- End of trial ----------------------------------------------------------------------------


END_MESSAGES = ("trial_ending", "winback", "trial_extended", "welcome_paid")


def end_log(run: Run, since: datetime | None = None) -> list[tuple[datetime, str]]:
    return [(at, occ) for at, occ in run.log(since) if occ.startswith(END_MESSAGES)]


def test_end_of_trial_in_tokyo() -> None:
    # Signup Jan 5 09:00 JST (00:00 UTC) → ends_on Jan 19, trial ends Jan 20 00:00 JST
    # (Jan 19 15:00 UTC). T-3/T-1/T-0 are due at local midnight of Jan 16/18/19 and sent at
    # 09:00 JST = 00:00 UTC; win-back 3 and 10 days after ends_on: Jan 22 and Jan 29.
    signup = utc(2026, 1, 5)
    state = begin(signup=signup, role="business", urgency="this_month", timezone="Asia/Tokyo")
    run = simulate(DEFN, state, signup, utc(2026, 3, 1))
    assert journey.trial_ends_at(state) == utc(2026, 1, 19, 15)
    assert end_log(run) == [
        (utc(2026, 1, 16), "trial_ending_3"),
        (utc(2026, 1, 18), "trial_ending_1"),
        (utc(2026, 1, 19), "trial_ending_0"),
        (utc(2026, 1, 22), "winback_3"),
        (utc(2026, 1, 29), "winback_10"),
    ]
    assert run.channels("winback_3") == ("email",)
    assert (run.finish, run.now) == ("expired", utc(2026, 1, 29))


def test_expired_trial_waits_for_win_back_then_finishes() -> None:
    state = begin(role="business", urgency="this_month")
    simulate(DEFN, state, SIGNUP, t(17, 9))
    assert journey.stage_of(DEFN, state, t(17, 9)) == "expired"
    assert state.done["winback_3"] == "sent"
    assert journey.next_step(DEFN, state, t(17, 9)) == Wait(t(24, 9))
    assert journey.next_step(DEFN, state, t(20)) == Wait(t(24, 9))
    step = journey.next_step(DEFN, state, t(24, 9))
    assert isinstance(step, Send)
    assert step.occurrence == "winback_10"
    journey.mark_done(DEFN, state, step, [Delivered("email", "k", "t")], t(24, 9))
    assert journey.next_step(DEFN, state, t(24, 9)) == Finish("expired")


def test_extension_before_any_end_of_trial_message() -> None:
    state = begin(role="business", urgency="this_month")
    extend = [(t(9, 12), lambda now: journey.apply_extension(state, 3, now))]
    run = simulate(DEFN, state, SIGNUP, t(40), extend)
    # ends_on day 14 + 3 = day 17: T-3 day 14, T-1 day 16, T-0 day 17, win-back days 20, 27.
    assert state.ends_on == date(2026, 1, 22)
    assert (state.extended_days, state.extensions) == (3, 1)
    assert end_log(run) == [
        (t(9, 12), "trial_extended.1"),
        (t(14, 9), "trial_ending_3"),
        (t(16, 9), "trial_ending_1"),
        (t(17, 9), "trial_ending_0"),
        (t(20, 9), "winback_3"),
        (t(27, 9), "winback_10"),
    ]
    assert run.finish == "expired"


def test_extension_does_not_repeat_sent_messages() -> None:
    state = begin(role="business", urgency="this_month")
    extend = [(t(12, 12), lambda now: journey.apply_extension(state, 2, now))]
    run = simulate(DEFN, state, SIGNUP, t(40), extend)
    # T-3 went on day 11; new ends_on day 16: T-3 would be day 13 but is not repeated.
    assert end_log(run) == [
        (t(11, 9), "trial_ending_3"),
        (t(12, 12), "trial_extended.1"),
        (t(15, 9), "trial_ending_1"),
        (t(16, 9), "trial_ending_0"),
        (t(19, 9), "winback_3"),
        (t(26, 9), "winback_10"),
    ]


def test_extension_moves_the_stage_back() -> None:
    state = begin(role="business", urgency="this_month")
    simulate(DEFN, state, SIGNUP, t(12, 12))
    assert journey.stage_of(DEFN, state, t(12, 12)) == "converting"
    journey.apply_extension(state, 2, t(12, 12))
    # ends_on day 16 → converting from day 13 00:00.
    assert journey.stage_of(DEFN, state, t(12, 12)) == "onboarding"
    assert journey.stage_of(DEFN, state, t(13)) == "converting"
    assert journey.trial_ends_at(state) == t(17)


def test_extension_of_an_expired_trial_reopens_it_from_today() -> None:
    state = begin(role="business", urgency="this_month")
    extend = [(t(16, 12), lambda now: journey.apply_extension(state, 5, now))]
    run = simulate(DEFN, state, SIGNUP, t(40), extend)
    # Extended on day 16 (expired since day 15 00:00): ends_on = day 16 + 5 = day 21.
    assert state.ends_on == date(2026, 1, 26)
    # The pending winback_3 (day 17) moves to day 24; T-3/T-1/T-0 are not sent again.
    assert end_log(run, since=t(15)) == [
        (t(16, 12), "trial_extended.1"),
        (t(24, 9), "winback_3"),
        (t(31, 9), "winback_10"),
    ]
    assert [occ for occ in run.occurrences() if occ.startswith("trial_ending")] == [
        "trial_ending_3",
        "trial_ending_1",
        "trial_ending_0",
    ]
    assert (run.finish, run.now) == ("expired", t(31, 9))


def test_extension_stage_after_expiry() -> None:
    state = begin(role="business", urgency="this_month")
    simulate(DEFN, state, SIGNUP, t(16, 12))
    assert journey.stage_of(DEFN, state, t(16, 12)) == "expired"
    assert journey.apply_extension(state, 5, t(16, 12)) is True
    assert journey.stage_of(DEFN, state, t(16, 12)) == "onboarding"
    assert journey.trial_ends_at(state) == t(22)


def test_conversion_sends_welcome_paid_then_finishes() -> None:
    state = begin(role="business", urgency="this_month")

    def book_then_convert(now: datetime) -> None:
        journey.apply_call_booked(state, t(6, 10), None, now)
        assert journey.apply_conversion(state, "team", 99.0, now) is True

    run = simulate(DEFN, state, SIGNUP, t(40), [(t(5, 12), book_then_convert)])
    # The pending call_booked.2 was dropped: welcome_paid, on email and in-app, the onboarding
    # CSAT a day later (rules 5: the purchase ends the onboarding of a user who never
    # activated), then the referral ask three days after buying, and the journey ends.
    assert run.log(since=t(5)) == [
        (t(5, 12), "welcome_paid"),
        (t(6, 12), "survey_onboarding"),
        (t(8, 12), "referral_ask"),
    ]
    assert run.channels("welcome_paid") == ("email", "in_app")
    assert (run.finish, run.now) == ("converted", t(8, 12))
    assert state.converted is not None
    assert (state.converted.plan, state.converted.mrr) == ("team", 99.0)
    assert journey.stage_of(DEFN, state, t(30)) == "converted"
    assert journey.apply_conversion(state, "pro", 199.0, t(6)) is False
    assert journey.apply_cancel(state, "too late", t(6)) is False
    assert journey.apply_extension(state, 7, t(6)) is False


def test_cancel_finishes_at_once_and_sends_nothing() -> None:
    state = begin(role="business", urgency="this_month")

    def no_show_then_cancel(now: datetime) -> None:
        journey.apply_call_no_show(state, now)  # queues call_rebook
        assert journey.apply_cancel(state, "chose another tool", now) is True

    run = simulate(DEFN, state, SIGNUP, t(40), [(t(4, 12), no_show_then_cancel)])
    assert run.log(since=t(4, 11)) == []
    assert (run.finish, run.now) == ("cancelled", t(4, 12))
    assert state.queued == []
    assert state.cancelled is not None
    assert state.cancelled.reason == "chose another tool"
    assert journey.next_step(DEFN, state, t(10)) == Finish("cancelled")
    assert journey.apply_event(DEFN, state, "login", t(5), None, t(5)).counted is False
    assert journey.apply_cancel(state, None, t(5)) is False
    assert journey.apply_conversion(state, "team", None, t(5)) is False


def stage_state(stage: str) -> tuple[TrialState, datetime]:
    state = begin() if stage == "qualifying" else begin(role="business")
    now = t(1)
    if stage == "activated":
        for name in goal_events("business"):
            journey.apply_event(DEFN, state, name, t(1, 10), None, t(1, 10))
        now = t(2)
    elif stage == "converting":
        now = t(11)  # T-3: local midnight of ends_on - 3 days
    elif stage == "expired":
        now = t(15)  # local midnight after ends_on
    elif stage == "converted":
        journey.apply_conversion(state, "team", None, t(3))
        now = t(30)
    elif stage == "cancelled":
        journey.apply_cancel(state, None, t(3))
        now = t(30)
    elif stage == "qualifying":
        now = t(0, 8, 30)
    return state, now


@pytest.mark.parametrize(
    "stage",
    ["qualifying", "onboarding", "activated", "converting", "converted", "expired", "cancelled"],
)
def test_stage_of(stage: str) -> None:
    state, now = stage_state(stage)
    assert journey.stage_of(DEFN, state, now) == stage


@pytest.mark.parametrize(
    ("now", "stage"),
    [
        (t(10, 23, 59), "onboarding"),
        (t(11), "converting"),
        (t(14, 23, 59), "converting"),
        (t(15), "expired"),
    ],
)
def test_stage_boundaries(now: datetime, stage: str) -> None:
    state = begin(role="business")
    assert journey.stage_of(DEFN, state, now) == stage


def test_converting_beats_activated_and_terminal_beats_qualifying() -> None:
    state, _ = stage_state("activated")
    assert journey.stage_of(DEFN, state, t(12)) == "converting"
    waiting = begin()
    journey.apply_conversion(waiting, "team", None, t(0, 8, 10))
    assert journey.stage_of(DEFN, waiting, t(0, 8, 10)) == "converted"


# --- summary ---------------------------------------------------------------------------------


def test_summary_mentions_stage_persona_and_call() -> None:
    state = begin(role="technical", urgency="this_month")
    settle_signup(DEFN, state)
    journey.apply_event(DEFN, state, "integration_connected", t(1, 10), None, t(1, 10))
    text = journey.summary(DEFN, state, t(1, 11))
    assert text == (
        "Trial of user u1, day 1, stage **onboarding**. "
        "Persona technical (signup): Technical: API docs and integrations. "
        "Activation progress 9%. "
        "Success call scheduled with Camille on 2026-01-09 10:00 (UTC). "
        "Trial ends 2026-01-19; 4 messages sent."
    )


def test_summary_while_qualifying_and_after_activation() -> None:
    state = begin(timezone="America/New_York", signup=utc(2026, 1, 5, 13))
    assert "stage **qualifying**" in journey.summary(DEFN, state, utc(2026, 1, 5, 13, 30))
    assert "Waiting for the qualifier answers." in journey.summary(
        DEFN, state, utc(2026, 1, 5, 13, 30)
    )
    simulate(DEFN, state, utc(2026, 1, 5, 13), utc(2026, 1, 5, 14))
    for name in goal_events("business"):
        journey.apply_event(DEFN, state, name, utc(2026, 1, 6, 15), None, utc(2026, 1, 6, 15))
    journey.apply_unsubscribe(state, Unsubscribe(channel="sms"))
    text = journey.summary(DEFN, state, utc(2026, 1, 6, 16))
    assert "stage **activated**" in text
    assert "Persona business (defaulted)" in text
    assert "Activated on day 1." in text
    # Evaluating (default) → day 7, 10:00 New York time.
    assert "Success call scheduled with Camille on 2026-01-12 10:00 (America/New_York)." in text
    assert "Unsubscribed from sms." in text


# --- Fixed edge cases (each once a bug) ------------------------------------------------------


def test_event_after_expiry_is_not_counted() -> None:
    state = begin(role="technical", urgency="this_month")
    simulate(DEFN, state, SIGNUP, t(15, 12))
    outcome = journey.apply_event(DEFN, state, "integration_connected", t(15, 12), None, t(15, 12))
    assert outcome.counted is False


def test_no_milestone_message_after_expiry() -> None:
    state = begin(role="technical", urgency="this_month")
    late = [(t(15, 12), event(state, "integration_connected", t(15, 12)))]
    run = simulate(DEFN, state, SIGNUP, t(40), late)
    assert "milestone" not in run.occurrences()


def test_welcome_paid_is_not_held_by_the_qualifier() -> None:
    state = begin()
    journey.apply_conversion(state, "team", 49.0, t(0, 8, 10))
    step = journey.next_step(DEFN, state, t(0, 8, 10))
    assert isinstance(step, Send)
    assert step.message == "welcome_paid"


def test_fractional_within_days_is_honoured() -> None:
    defn = with_activation(DEFN, "business", 1.5)
    state = begin(defn, role="business")
    journey.apply_event(defn, state, "workflow_created", t(0, 9), None, t(0, 9))
    late = SIGNUP + timedelta(hours=41)  # after 1.5 days (36 h)
    journey.apply_event(defn, state, "teammate_invited", late, None, late)
    assert state.activated_at is None


def test_activated_at_is_when_the_rule_became_true() -> None:
    state = begin(role="business")
    journey.apply_event(DEFN, state, "workflow_created", t(1, 9), None, t(1, 9))
    # An invitation made on day 0 at 09:00, delivered late on day 1 at 10:00.
    journey.apply_event(DEFN, state, "teammate_invited", t(0, 9), None, t(1, 10))
    assert state.activated_at == t(1, 9)


# --- Broken templates ------------------------------------------------------------------------


def first_send(defn: JourneyDefinition, state: TrialState) -> journey.Step:
    step = journey.next_step(defn, state, SIGNUP)
    while isinstance(step, OfferCall):
        free_calendar(defn, state, step, SIGNUP)
        step = journey.next_step(defn, state, SIGNUP)
    return step


def test_a_step_with_a_broken_template_is_held_and_retried_on_that_channel_only() -> None:
    state = begin(role="technical")
    step = first_send(DEFN, state)
    assert isinstance(step, Send) and step.message == "welcome"
    assert step.channels == ("email", "in_app")
    journey.mark_done(DEFN, state, step, [Delivered("in_app", "k1", "t")], SIGNUP, ["email"])
    assert "welcome" not in state.done
    held = state.held["welcome"]
    assert held.channels == ["email"] and held.attempts == 1 and held.counted
    assert held.retry_at == SIGNUP + timedelta(hours=DEFN.template_retry_hours)
    assert sum(state.marketing_days.values()) == 1

    # Other steps go on meanwhile; the held one waits for its retry time.
    later = SIGNUP + timedelta(minutes=1)
    while True:
        step = journey.next_step(DEFN, state, later)
        if not isinstance(step, Send | OfferCall):
            break
        assert not (isinstance(step, Send) and step.message == "welcome")
        if isinstance(step, OfferCall):
            free_calendar(DEFN, state, step, later)
        else:
            channels = [Delivered(c, f"k-{c}", "t") for c in step.channels]
            journey.mark_done(DEFN, state, step, channels, later)
    assert isinstance(step, journey.Wait) and step.until is not None
    assert step.until <= held.retry_at

    retry = journey.next_step(DEFN, state, held.retry_at)
    assert retry == Send("welcome", "welcome", "marketing", ("email",), {})
    journey.mark_done(DEFN, state, retry, [Delivered("email", "k2", "t")], held.retry_at)
    assert state.done["welcome"] == "sent" and "welcome" not in state.held
    assert sum(state.marketing_days.values()) == 1  # one message, counted once
    assert [s.channel for s in state.sent if s.occurrence == "welcome"] == ["in_app", "email"]


def test_a_template_still_broken_after_the_retries_is_given_up() -> None:
    defn = DEFN.model_copy(update={"template_retry_max": 1})
    state = begin(defn, role="technical")
    step = first_send(defn, state)
    assert isinstance(step, Send) and step.message == "welcome"
    journey.mark_done(defn, state, step, [], SIGNUP, ["email", "in_app"])
    retry_at = state.held["welcome"].retry_at
    retry = journey.next_step(defn, state, retry_at)
    assert isinstance(retry, Send) and retry.channels == ("email", "in_app")
    journey.mark_done(defn, state, retry, [], retry_at, ["email", "in_app"])
    assert state.done["welcome"] == "skipped" and state.held == {}
    assert state.marketing_days == {}


# --- Experiment arms and surveys -------------------------------------------------------------


def in_arm(arm: str) -> TrialState:
    """A trial whose user id hashes to `arm` in the shipped experiment."""
    for i in range(1000):
        user_id = f"exp-{i}"
        if journey.assign_arm(SHIPPED, user_id) == arm:
            person = profile(role="technical").model_copy(update={"user_id": user_id})
            return journey.start(SHIPPED, person, SIGNUP)
    raise AssertionError(f"no user id in arm {arm}")


def test_arms_are_stable_and_follow_the_weights() -> None:
    assert SHIPPED.experiment is not None and SHIPPED.holdout is not None
    weights = SHIPPED.experiment.arms
    held = SHIPPED.holdout.share
    ids = [f"user-{i}" for i in range(20000)]
    arms = [journey.assign_arm(SHIPPED, u) for u in ids]
    assert arms == [journey.assign_arm(SHIPPED, u) for u in ids]  # deterministic
    # The global holdout first (5 %), then the experiment's weights over the others.
    assert abs(arms.count("global_holdout") / len(arms) - held) < 0.006
    for arm, weight in weights.items():
        share = arms.count(arm) / len(arms)
        assert abs(share - (1 - held) * weight / sum(weights.values())) < 0.015, (arm, share)
    # Trials on rules 4 replay as they started: no global holdout for them.
    assert "global_holdout" not in {journey.assign_arm(SHIPPED, u, rules=4) for u in ids[:2000]}
    assert journey.assign_arm(DEFN, "user-1") == "default"  # no experiment declared
    renamed = SHIPPED.experiment.model_copy(update={"name": "another-test"})
    other = SHIPPED.model_copy(update={"experiment": renamed})
    moved = sum(journey.assign_arm(other, u) != a for u, a in zip(ids[:2000], arms, strict=False))
    assert moved > 500  # a new experiment reshuffles users


def test_holdout_gets_only_transactional_messages() -> None:
    state = in_arm("holdout")
    run = simulate(SHIPPED, state, SIGNUP, t(25))
    occurrences = run.occurrences()
    # Not offered a call with an agent (`[call] offer_to`): the self-serve link, which is
    # transactional, so sent.
    assert "call_self_serve" in occurrences
    assert not any(occ.startswith("call_invite") for occ in occurrences)
    categories = {
        SHIPPED.message(occ.split(".")[0].removeprefix("drip.")).category for occ in occurrences
    }
    assert categories == {"transactional"}
    assert all(done == "skipped" for occ, done in state.done.items() if occ.startswith("drip."))


def test_generic_arm_follows_one_path_for_everyone() -> None:
    assert SHIPPED.experiment is not None
    state = in_arm("generic")
    assert state.persona == "technical"
    assert journey.path_persona(SHIPPED, state) == SHIPPED.experiment.generic_persona
    run = simulate(SHIPPED, state, SIGNUP, t(12))
    drips = [occ.removeprefix("drip.") for occ in run.occurrences() if occ.startswith("drip.")]
    generic = [s.message for s in SHIPPED.personas[SHIPPED.experiment.generic_persona].drip]
    assert drips and drips == generic[: len(drips)]
    personalized = in_arm("personalized")
    assert journey.path_persona(SHIPPED, personalized) == "technical"


def test_csat_follows_the_call_and_old_definitions_ask_nothing() -> None:
    state = begin(role="business", urgency="this_week")
    run = simulate(
        DEFN,
        state,
        SIGNUP,
        t(5),
        [(t(2, 11), lambda now: journey.apply_call_completed(state, None, now))],
    )
    assert run.at_of("survey_csat") == t(2, 13)  # two hours after the call
    assert run.channels("survey_csat") == ("email", "in_app")
    old = DEFN.model_copy(update={"surveys": None})
    state = begin(old, role="business", urgency="this_week")
    run = simulate(
        old,
        state,
        SIGNUP,
        t(5),
        [(t(2, 11), lambda now: journey.apply_call_completed(state, None, now))],
    )
    assert "survey_csat" not in run.occurrences()


# --- Rules 2: fixes found by driving the rules through simulated time --------------------------


def step_at(defn: JourneyDefinition, state: TrialState, now: datetime) -> Send:
    """The send the rules ask for at `now` (fails if they ask for something else)."""
    step = journey.next_step(defn, state, now)
    assert isinstance(step, Send), step
    return step


def deliver(step: Send, *channels: str) -> list[Delivered]:
    return [Delivered(c, f"k:{step.occurrence}/{c}", "t") for c in channels]  # type: ignore[arg-type]


def stalled_until_the_nudge() -> tuple[TrialState, Send]:
    """A business user with no key action; the nudge is decided on day 2 at 09:00."""
    state = begin(role="business", urgency="this_month")
    simulate(DEFN, state, SIGNUP, t(2, 8, 59))
    step = step_at(DEFN, state, t(2, 9))
    assert step.occurrence == "stall_nudge.1"
    return state, step


def test_a_broken_nudge_is_retried_and_the_alert_follows_its_delivery() -> None:
    state, step = stalled_until_the_nudge()
    journey.mark_done(DEFN, state, step, [], t(2, 9), broken=step.channels)
    assert state.held["stall_nudge.1"].retry_at == t(2, 10)
    assert state.nudges == 0 and state.nudge_done_at is None  # nothing reached the user yet
    run = simulate(DEFN, state, t(2, 9), t(8))
    nudged = run.at_of("stall_nudge.1")
    assert nudged > t(2, 9)
    # The alert comes a day after the nudge that reached the user, and says so truly.
    assert run.at_of("support_alert.1") == nudged + timedelta(days=1)
    assert state.nudge_delivered


def test_a_broken_support_alert_is_retried() -> None:
    state, nudge = stalled_until_the_nudge()
    journey.mark_done(DEFN, state, nudge, deliver(nudge, *nudge.channels), t(2, 9))
    simulate(DEFN, state, t(2, 9), t(3, 8, 59))
    alert = step_at(DEFN, state, t(3, 9))
    assert alert.occurrence == "support_alert.1"
    journey.mark_done(DEFN, state, alert, [], t(3, 9), broken=alert.channels)
    assert state.alerts == 0 and state.alerted_for is None
    run = simulate(DEFN, state, t(3, 9), t(6))
    assert run.at_of("support_alert.1") == t(3, 10)
    assert state.alerts == 1


def test_a_key_event_while_the_nudge_is_sent_opens_a_new_episode_not_an_alert() -> None:
    """Nudge decided at 09:00, a progress event applied at 09:01 while it is sent, marked done
    at 09:01: it is progress after the nudge, so no support alert the next day."""
    state, step = stalled_until_the_nudge()
    journey.apply_event(DEFN, state, "data_source_connected", t(2, 9, 1), None, t(2, 9, 1))
    journey.mark_done(DEFN, state, step, deliver(step, *step.channels), t(2, 9, 1))
    assert state.nudged_for == state.persona_at  # the episode the nudge was for
    run = simulate(DEFN, state, t(2, 9, 1), t(8))
    # No alert on day 3: the new episode starts from that event, with its own nudge (due on
    # day 4 at 09:01; that day's drip took the cap, so day 5), then its alert a day later.
    (nudge_at, nudge), (alert_at, alert) = stall_log(run)
    assert (nudge, alert) == ("stall_nudge.2", "support_alert.1")
    assert nudge_at == t(5, 9)
    assert alert_at == nudge_at + timedelta(days=1)


def test_an_old_key_event_arriving_late_does_not_reopen_the_episode() -> None:
    state, step = stalled_until_the_nudge()
    journey.mark_done(DEFN, state, step, deliver(step, *step.channels), t(2, 9))
    # Day 2 12:00: a progress event that happened on day 1 arrives (a backlog in the product).
    late = [(t(2, 12), event(state, "data_source_connected", t(1, 10)))]
    run = simulate(DEFN, state, t(2, 9), t(8), late)
    assert stall_log(run) == [(t(3, 9), "support_alert.1")]
    assert state.events_seen["data_source_connected"] == 1


def test_a_held_marketing_retry_goes_out_on_its_own_day_and_counts_once() -> None:
    """The drip of day 1 goes out in-app at 09:00 but its email template is broken; the email
    retry at 10:00 is the same message: the day's cap (1) does not hold it back, and the next
    drip still waits for its own day."""
    state = begin(role="technical", urgency="evaluating")
    simulate(DEFN, state, SIGNUP, t(1, 8, 59))
    step = step_at(DEFN, state, t(1, 9))
    assert step.occurrence == "drip.drip_api_quickstart"
    journey.mark_done(DEFN, state, step, deliver(step, "in_app"), t(1, 9), broken=("email",))
    run = simulate(DEFN, state, t(1, 9), t(6))
    assert run.log()[0] == (t(1, 10), "drip.drip_api_quickstart")
    assert run.channels("drip.drip_api_quickstart") == ("email",)
    assert state.marketing_days["2026-01-06"] == 1
    emails: dict[date, int] = {}
    for item in state.sent:
        spec = DEFN.message(item.message)
        if spec.category == "marketing" and item.channel == "email":
            day = journey.local_date(state, item.at)
            emails[day] = emails.get(day, 0) + 1
    assert max(emails.values()) <= DEFN.max_marketing_per_day, emails


def test_a_broken_step_is_not_held_past_the_time_it_goes_stale() -> None:
    """The hour-before reminder's retry would come at the call itself: given up at once (and
    support told so by the workflow), not held for a retry that never happens."""
    state = begin(role="business", urgency="this_month")
    simulate(DEFN, state, SIGNUP, t(4, 8, 59))
    step = step_at(DEFN, state, t(4, 9))
    while step.occurrence != "call_reminder_hour.1":  # the day's drip goes first
        journey.mark_done(DEFN, state, step, deliver(step, *step.channels), t(4, 9))
        step = step_at(DEFN, state, t(4, 9))
    journey.mark_done(DEFN, state, step, [], t(4, 9), broken=step.channels)
    assert "call_reminder_hour.1" not in state.held
    assert state.done["call_reminder_hour.1"] == "skipped"


def test_a_held_step_that_goes_stale_is_handed_to_support() -> None:
    state = begin(role="technical", urgency="evaluating")
    simulate(DEFN, state, SIGNUP, t(1, 8, 59))
    step = step_at(DEFN, state, t(1, 9))
    journey.mark_done(DEFN, state, step, [], t(1, 9), broken=step.channels)
    assert step.occurrence in state.held
    # The worker comes back after the drip went stale (day 1 + 3 days).
    journey.next_step(DEFN, state, t(4, 12))
    assert step.occurrence not in state.held
    assert journey.take_abandoned(state) == [step.occurrence]
    assert journey.take_abandoned(state) == []


@pytest.mark.parametrize("rules", [1, 2])
def test_late_proof_of_activation_after_the_end(rules: int) -> None:
    """Events that happened on day 1 but arrive on day 16, after the trial expired: activated
    as of day 1 (rules 2), as when they arrive an hour before the end."""
    state = begin(role="business", urgency="this_month", rules=rules)
    simulate(DEFN, state, SIGNUP, t(16))
    assert journey.stage_of(DEFN, state, t(16)) == "expired"
    journey.apply_event(DEFN, state, "workflow_created", t(1, 10), None, t(16))
    journey.apply_event(DEFN, state, "teammate_invited", t(1, 11), None, t(16))
    if rules == 1:
        assert state.activated_at is None  # the bug old trials keep
        return
    assert state.activated_at == t(1, 11)
    assert "Activated on day 1." in journey.summary(DEFN, state, t(16))


def test_call_signals_that_cannot_be_true_are_refused() -> None:
    state = scheduled()  # the call: day 4 at 10:00
    assert state.call.at == t(4, 10)
    now = t(2, 12)
    assert journey.apply_call_rescheduled(state, t(2, 11), now) is False  # into the past
    assert journey.apply_call_booked(state, t(20, 10), None, now) is False  # after the end
    assert journey.apply_call_no_show(state, now) is False  # two days before the call
    assert journey.apply_call_completed(state, "early", now) is False  # before it starts
    assert (state.call.state, state.call.version, state.call.rebook_offered) == (
        "scheduled",
        1,
        False,
    )
    problem = journey.call_problem(state, "completed", None, now)
    assert problem is not None and "before it starts" in problem
    # What can be true is accepted.
    assert journey.apply_call_rescheduled(state, t(5, 15), now) is True
    assert journey.apply_call_no_show(state, t(5, 15, 10)) is True
    assert journey.apply_call_booked(state, t(6, 9), None, t(5, 16)) is True
    assert journey.apply_call_completed(state, "done", t(6, 9, 40)) is True


def test_a_call_booked_after_the_trial_ended_is_refused() -> None:
    state = scheduled()
    simulate(DEFN, state, SIGNUP, t(16))
    assert journey.apply_call_booked(state, t(17, 10), "Julia", t(16)) is False
    run = simulate(DEFN, state, t(16), t(30))
    assert not [occ for occ in run.occurrences() if occ.startswith("call_")]


def test_transactional_messages_do_not_wait_for_the_qualifier() -> None:
    """No qualifier answer yet (deadline 09:00): a call booked and an extension at 08:10 are
    confirmed at once; the welcome (marketing decisions) waits for the persona."""
    state = begin()
    signals = [
        (t(0, 8, 10), lambda now: journey.apply_call_booked(state, t(3, 10), "Julia", now)),
        (t(0, 8, 20), lambda now: journey.apply_extension(state, 7, now)),
    ]
    run = simulate(DEFN, state, SIGNUP, t(0, 9, 30), signals)
    assert run.at_of("call_booked.1") == t(0, 8, 10)
    assert run.at_of("trial_extended.1") == t(0, 8, 20)
    assert run.at_of("welcome") == t(0, 9)
    assert state.persona_source == "defaulted"


def test_the_day_before_reminder_is_the_previous_local_day_at_the_same_time() -> None:
    """Paris moves to summer time on 2026-03-29: a call on 03-30 at 10:00 is reminded on
    03-29 at 10:00 local, 23 hours before, not 24."""
    signup = datetime(2026, 3, 23, 8, tzinfo=UTC)
    state = begin(role="business", urgency="evaluating", timezone="Europe/Paris", signup=signup)
    call = datetime(2026, 3, 30, 8, tzinfo=UTC)  # 10:00 in Paris (UTC+2)
    book = [
        (signup + timedelta(hours=1), lambda now: journey.apply_call_booked(state, call, None, now))
    ]
    run = simulate(DEFN, state, signup, datetime(2026, 3, 31, tzinfo=UTC), book)
    reminded = run.at_of("call_reminder_day.2")
    assert reminded == datetime(2026, 3, 29, 8, tzinfo=UTC)  # 10:00 in Paris (UTC+2)
    assert call - reminded == timedelta(hours=24)  # both 10:00 local, both UTC+2
    winter = begin(role="business", urgency="evaluating", timezone="Europe/Paris", signup=signup)
    call = datetime(2026, 3, 29, 8, tzinfo=UTC)  # 10:00 on the day of the change
    book = [
        (
            signup + timedelta(hours=1),
            lambda now: journey.apply_call_booked(winter, call, None, now),
        )
    ]
    run = simulate(DEFN, winter, signup, datetime(2026, 3, 30, tzinfo=UTC), book)
    # 03-28 at 10:00 in Paris is 09:00 UTC (winter time): 23 hours before the call.
    assert run.at_of("call_reminder_day.2") == datetime(2026, 3, 28, 9, tzinfo=UTC)


@pytest.mark.parametrize("seconds_per_day", [0.5, 2.0, 4.0, 86400.0])
def test_the_clock_never_overflows(seconds_per_day: float) -> None:
    clock = JourneyClock(origin=SIGNUP, seconds_per_day=seconds_per_day)
    for real in (
        SIGNUP - timedelta(days=20),
        SIGNUP + timedelta(days=400),
        datetime.min.replace(tzinfo=UTC) + timedelta(days=1),
    ):
        at = clock.journey(real)
        assert (at <= SIGNUP) == (real <= SIGNUP)
        assert abs(at - SIGNUP) <= journey.JOURNEY_SPAN


def test_an_old_event_on_a_fast_clock_is_seen_not_counted() -> None:
    clock = JourneyClock(origin=SIGNUP, seconds_per_day=2.0)
    state = begin(role="technical")
    occurred = clock.journey(SIGNUP - timedelta(days=20))
    outcome = journey.apply_event(DEFN, state, "api_call", occurred, None, t(0, 9))
    assert (outcome.accepted, outcome.counted) == (True, False)


# --- In-app first, other channels unless read (rules 4) --------------------------------------


def with_unless_read(
    defn: JourneyDefinition, persona: str, message: str, hours: float
) -> JourneyDefinition:
    path = defn.personas[persona]  # type: ignore[index]
    drip = tuple(
        step.model_copy(update={"unless_read_hours": hours}) if step.message == message else step
        for step in path.drip
    )
    personas: dict[str, Any] = dict(defn.personas)
    personas[persona] = path.model_copy(update={"drip": drip})
    return defn.model_copy(update={"personas": personas})


UNLESS_READ = with_unless_read(DEFN, "technical", "drip_webhooks", 24)


def test_in_app_goes_first_and_the_email_follows_a_day_later() -> None:
    state = begin(UNLESS_READ, role="technical", urgency="this_month")
    run = simulate(UNLESS_READ, state, SIGNUP, t(4, 12))
    assert run.at_of("drip.drip_webhooks") == t(4, 9)
    assert run.channels("drip.drip_webhooks") == ("in_app",)
    (queued,) = [q for q in state.queued if q.occurrence == "drip.drip_webhooks.unless_read"]
    assert (queued.due, queued.unless_read) == (t(5, 9), "drip.drip_webhooks")
    # The follow-up is a step of its own: the workflow asks the activity to skip it if the
    # in-app copy was read; the rules send it on the other channels only.
    step = journey.next_step(UNLESS_READ, state, t(5, 9))
    assert isinstance(step, Send)
    assert (step.occurrence, step.channels, step.unless_read, step.in_app_first) == (
        "drip.drip_webhooks.unless_read",
        ("email",),
        "drip.drip_webhooks",
        False,
    )
    journey.mark_done(UNLESS_READ, state, step, [Delivered("email", "k", "t")], t(5, 9))
    assert state.done["drip.drip_webhooks.unless_read"] == "sent"
    assert not any(q.unless_read for q in state.queued)
    # Both reached the user, on two local days: each counts toward its day's cap.
    assert state.marketing_days["2026-01-09"] == 1 and state.marketing_days["2026-01-10"] == 1


def test_a_follow_up_the_activity_skipped_is_done_and_never_sent_again() -> None:
    state = begin(UNLESS_READ, role="technical", urgency="this_month")
    simulate(UNLESS_READ, state, SIGNUP, t(4, 12))
    step = journey.next_step(UNLESS_READ, state, t(5, 9))
    assert isinstance(step, Send) and step.unless_read == "drip.drip_webhooks"
    # The user read it in-app: the send activity records the email as skipped, nothing sent.
    journey.mark_done(UNLESS_READ, state, step, [], t(5, 9))
    assert state.done["drip.drip_webhooks.unless_read"] == "skipped"
    later = simulate(UNLESS_READ, state, t(5, 9), t(9))
    assert "drip.drip_webhooks.unless_read" not in later.occurrences()
    assert [s.channel for s in state.sent if s.occurrence.startswith("drip.drip_webhooks")] == [
        "in_app"
    ]


def test_a_trial_on_rules_3_sends_every_channel_at_once() -> None:
    state = begin(UNLESS_READ, rules=3, role="technical", urgency="this_month")
    run = simulate(UNLESS_READ, state, SIGNUP, t(6))
    assert run.channels("drip.drip_webhooks") == ("email", "in_app")
    assert not any(occ.endswith(".unless_read") for occ in run.occurrences())


def test_without_the_in_app_channel_the_email_goes_at_once() -> None:
    state = begin(UNLESS_READ, role="technical", urgency="this_month")
    journey.apply_unsubscribe(state, Unsubscribe(channel="in_app"))
    run = simulate(UNLESS_READ, state, SIGNUP, t(6))
    assert run.at_of("drip.drip_webhooks") == t(4, 9)
    assert run.channels("drip.drip_webhooks") == ("email",)
    assert not any(occ.endswith(".unless_read") for occ in run.occurrences())


def test_a_follow_up_is_skipped_once_its_step_is_moot_or_the_trial_converts() -> None:
    defn = with_unless_read(DEFN, "technical", "drip_connect_integration", 24)
    state = begin(defn, role="technical", urgency="this_month")
    # Day 3 (the nudge took day 2): in-app only; the integration connected that afternoon
    # makes the email moot.
    signals = [(t(3, 15), event(state, "integration_connected", t(3, 15), defn))]
    run = simulate(defn, state, SIGNUP, t(6), signals)
    assert run.at_of("drip.drip_connect_integration") == t(3, 9)
    assert run.channels("drip.drip_connect_integration") == ("in_app",)
    assert state.done["drip.drip_connect_integration.unless_read"] == "skipped"
    assert "drip.drip_connect_integration.unless_read" not in run.occurrences()

    other = begin(UNLESS_READ, role="technical", urgency="this_month")
    simulate(UNLESS_READ, other, SIGNUP, t(4, 12))
    assert any(q.unless_read for q in other.queued)
    journey.apply_conversion(other, "pro", 49.0, t(4, 13))
    run = simulate(UNLESS_READ, other, t(4, 13), t(6))
    assert not any(occ.endswith(".unless_read") for occ in run.occurrences())


def test_a_follow_up_goes_stale_when_its_drip_step_would_have() -> None:
    state = begin(UNLESS_READ, role="technical", urgency="this_month")
    simulate(UNLESS_READ, state, SIGNUP, t(4, 12))
    (queued,) = [q for q in state.queued if q.unless_read]
    assert queued.stale_at == t(7)  # the day-4 step's own stale time: three days after its day
    # Days 5 and 6 are capped: no slot before then, so it is given up, never sent late.
    state.marketing_days.update({"2026-01-10": 1, "2026-01-11": 1})
    journey.next_step(UNLESS_READ, state, t(6, 23))
    assert "drip.drip_webhooks.unless_read" not in state.done
    journey.next_step(UNLESS_READ, state, t(7))
    assert state.done["drip.drip_webhooks.unless_read"] == "skipped"


def test_unless_read_needs_in_app_and_another_channel() -> None:
    with pytest.raises(ValueError, match="unless_read_hours needs in_app"):
        MessageSpec(channels=("email",), category="marketing", unless_read_hours=2)
    with pytest.raises(ValueError, match="unless_read_hours needs in_app"):
        MessageSpec(channels=("in_app",), category="marketing", unless_read_hours=2)
    spec = MessageSpec(channels=("email", "in_app"), category="marketing", unless_read_hours=2)
    assert spec.unless_read_hours == 2
    assert UNLESS_READ.message("drip_webhooks").unless_read_hours == 24


def test_a_follow_up_off_the_users_new_path_is_given_up() -> None:
    state = begin(UNLESS_READ, role="technical", urgency="this_month")
    simulate(UNLESS_READ, state, SIGNUP, t(4, 12))
    assert any(q.unless_read for q in state.queued)
    # Re-qualified as business: the technical tip's email no longer fits the user's path.
    journey.apply_qualification(
        UNLESS_READ, state, "business", "team_coordination", "this_month", t(4, 13)
    )
    run = simulate(UNLESS_READ, state, t(4, 13), t(6))
    assert state.done["drip.drip_webhooks.unless_read"] == "skipped"
    assert "drip.drip_webhooks.unless_read" not in run.occurrences()


# --- Success calls in the agents' calendars (rules 4) ----------------------------------------


def test_rules_3_trials_keep_the_round_robin() -> None:
    state = begin(role="business", urgency="this_week", rules=3)
    assert journey.next_step(DEFN, state, SIGNUP) == AssignAgent(("Camille", "Samir", "Julia"))


def test_the_proposed_call_is_the_calendars_answer() -> None:
    state = begin(role="business", urgency="this_month")
    step = journey.next_step(DEFN, state, SIGNUP)
    assert step == OfferCall(1, "propose", 0, earliest=t(4, 10), latest=t(7))
    journey.apply_call_offer(DEFN, state, step, "Julia", t(4, 14, 30), SIGNUP)
    call = state.call
    assert (call.state, call.agent, call.at, call.version) == (
        "scheduled",
        "Julia",
        t(4, 14, 30),
        1,
    )
    assert call.slot_version == 1 and call.requests == 1
    assert [q.occurrence for q in state.queued] == ["call_invite.1"]
    # Asked once: the next step is the invitation.
    step = journey.next_step(DEFN, state, SIGNUP)
    assert isinstance(step, Send) and step.occurrence in ("welcome", "call_invite.1")


def test_the_window_starts_two_hours_from_now_when_the_urgencys_day_is_today() -> None:
    call = DEFN.call.model_copy(
        update={"day_by_urgency": {**DEFN.call.day_by_urgency, "this_week": 0}}
    )
    defn = DEFN.model_copy(update={"call": call})
    state = begin(defn, signup=t(0, 9, 30), role="business", urgency="this_week")
    assert journey.call_window(defn, state, t(0, 9, 30)) == (t(0, 11, 30), t(3))


def test_no_free_slot_sends_the_self_serve_link_and_tells_support() -> None:
    state = begin(role="business", urgency="this_week", company="Acme")
    step = journey.next_step(DEFN, state, SIGNUP)
    assert isinstance(step, OfferCall)
    journey.apply_call_offer(DEFN, state, step, None, None, SIGNUP)
    assert state.call.state == "none" and state.call.self_serve
    queued = {q.occurrence: q for q in state.queued}
    assert set(queued) == {"call_self_serve", "call_unassigned.1"}
    alert = queued["call_unassigned.1"].extra
    assert alert["reason"] == "call unassigned" and alert["cs_task"] is True
    run = simulate(DEFN, state, SIGNUP, SIGNUP)
    assert {"call_self_serve", "call_unassigned.1"} <= set(run.occurrences())
    assert run.channels("call_unassigned.1") == ("support",)
    assert "call_invite.1" not in run.occurrences()


@pytest.mark.parametrize(
    ("urgency", "experiment_arm", "offered"),
    [
        ("this_week", "personalized", True),
        ("this_month", "generic", True),
        ("evaluating", "personalized", False),
        ("this_week", "holdout", False),
    ],
)
def test_who_is_offered_a_call_is_a_rule_of_the_journey(
    urgency: str, experiment_arm: str, offered: bool
) -> None:
    state = begin(SHIPPED, role="business", urgency=urgency)
    state.arm = experiment_arm
    assert journey.offers_call(SHIPPED, state) is offered
    step = journey.next_step(SHIPPED, state, SIGNUP)
    if offered:
        assert isinstance(step, OfferCall) and step.purpose == "propose"
        return
    # The self-serve path: the link (transactional, so the holdout arm gets it too), and
    # support is not told: nobody expected a call.
    run = simulate(SHIPPED, state, SIGNUP, SIGNUP)
    assert "call_self_serve" in run.occurrences()
    assert run.channels("call_self_serve") == ("email", "in_app")
    assert not any(o.startswith(("call_invite", "call_unassigned")) for o in run.occurrences())


def test_company_offers_a_call_to_b2b_trials_whatever_their_urgency() -> None:
    offer = SHIPPED.call.offer_to
    assert offer is not None
    call = SHIPPED.call.model_copy(update={"offer_to": offer.model_copy(update={"company": True})})
    defn = SHIPPED.model_copy(update={"call": call, "experiment": None})
    assert journey.offers_call(
        defn, begin(defn, role="business", urgency="evaluating", company="A")
    )
    assert not journey.offers_call(defn, begin(defn, role="business", urgency="evaluating"))


def test_a_self_serve_booking_gets_an_agent_free_then() -> None:
    state = begin(SHIPPED, role="business", urgency="evaluating")
    simulate(SHIPPED, state, SIGNUP, SIGNUP)
    assert state.call.self_serve and state.call.state == "none"
    assert journey.apply_call_booked(state, t(3, 15), None, t(1, 9))
    step = journey.next_step(SHIPPED, state, t(1, 9))
    assert step == OfferCall(1, "attach", 1, at=t(3, 15))
    journey.apply_call_offer(SHIPPED, state, step, "Samir", t(3, 15), t(1, 9))
    assert (state.call.state, state.call.agent, state.call.at) == ("booked", "Samir", t(3, 15))
    run = simulate(SHIPPED, state, t(1, 9), t(1, 9))
    assert "call_booked.1" in run.occurrences()


def test_a_reschedule_keeps_the_agent_if_free_and_tells_support_if_nobody_is() -> None:
    state = begin(role="business", urgency="this_month")
    simulate(DEFN, state, SIGNUP, SIGNUP)
    assert (state.call.agent, state.call.version) == ("Camille", 1)
    assert journey.apply_call_rescheduled(state, t(5, 16), t(1, 9))
    step = journey.next_step(DEFN, state, t(1, 9))
    assert step == OfferCall(2, "attach", 2, at=t(5, 16), prefer="Camille")
    journey.apply_call_offer(DEFN, state, step, None, t(5, 16), t(1, 9))
    assert state.call.agent is None and state.call.slot_version == 2
    assert any(q.occurrence == "call_unassigned.2" for q in state.queued)
    assert "no agent yet" in journey.summary(DEFN, state, t(1, 9))


def test_an_answer_for_a_call_that_moved_meanwhile_is_not_applied() -> None:
    state = begin(role="business", urgency="this_month")
    step = journey.next_step(DEFN, state, SIGNUP)
    assert isinstance(step, OfferCall)
    # The user books while the calendar is asked.
    journey.apply_call_booked(state, t(2, 15), None, SIGNUP)
    journey.apply_call_offer(DEFN, state, step, "Camille", t(4, 10), SIGNUP)
    assert (state.call.state, state.call.at, state.call.agent) == ("booked", t(2, 15), None)
    # The user's time is asked about next (which frees the slot of the stale answer).
    assert journey.next_step(DEFN, state, SIGNUP) == OfferCall(2, "attach", 1, at=t(2, 15))


def test_a_call_still_to_come_is_released_when_the_trial_converts() -> None:
    state = begin(role="business", urgency="this_month")
    simulate(DEFN, state, SIGNUP, SIGNUP)
    journey.apply_conversion(state, "pro", 49.0, t(1, 9))
    assert journey.next_step(DEFN, state, t(1, 9)) == ReleaseCall(after=t(1, 9))
    journey.apply_call_released(state)
    assert not isinstance(journey.next_step(DEFN, state, t(1, 9)), ReleaseCall)


def test_a_stalled_users_call_moves_to_a_free_slot_from_tomorrow() -> None:
    state = begin(role="business", urgency="evaluating")
    simulate(DEFN, state, SIGNUP, SIGNUP)
    assert state.call.at == t(7, 10)
    # Support alert on day 3: the call should come forward, to tomorrow's first free slot.
    state.alerted_for = None
    calls.bring_call_forward(DEFN, state, t(3, 9))
    step = journey.next_step(DEFN, state, t(3, 9))
    assert step == OfferCall(2, "forward", 1, earliest=t(4, 10), latest=t(7, 10), prefer="Camille")
    journey.apply_call_offer(DEFN, state, step, "Julia", t(4, 14), t(3, 9))
    assert (state.call.at, state.call.agent, state.call.version) == (t(4, 14), "Julia", 2)
    assert any(q.occurrence == "call_rescheduled.2" for q in state.queued)
    assert state.call.forward_from is None


# --- Rules 5: the onboarding CSAT and the global holdout ---------------------------------------


def test_the_global_holdout_gets_no_onboarding_not_even_a_call() -> None:
    state = in_arm("global_holdout")
    assert state.rules >= 5
    run = simulate(SHIPPED, state, SIGNUP, t(25))
    occurrences = run.occurrences()
    # No call, nor the link to book one, nor anything marketing: the welcome either.
    assert not any(occ.startswith("call_") for occ in occurrences), occurrences
    categories = {
        SHIPPED.message(occ.split(".")[0].removeprefix("drip.")).category for occ in occurrences
    }
    assert categories == {"transactional"}
    # The onboarding CSAT is a question, not onboarding: asked at the trial's end (never
    # activated), as of everyone.
    assert occurrences == ["survey_onboarding"]
    assert run.log() == [(journey.trial_ends_at(state), "survey_onboarding")]


def test_the_onboarding_csat_comes_a_day_after_activation_once() -> None:
    state = begin(SHIPPED, role="technical", urgency="evaluating")
    activation = [
        (t(2, 10), event(state, "integration_connected", t(2, 10), SHIPPED)),
        *[(t(2, 11), event(state, "api_call", t(2, 11), SHIPPED)) for _ in range(10)],
    ]
    run = simulate(SHIPPED, state, SIGNUP, t(20), activation)
    assert state.activated_at == t(2, 11)
    assert [at for at, occ in run.log() if occ == "survey_onboarding"] == [t(3, 11)]
    # Rules 4 trials never ask it (their histories replay as they ran).
    old = begin(SHIPPED, role="technical", urgency="evaluating", rules=4)
    assert "survey_onboarding" not in simulate(SHIPPED, old, SIGNUP, t(20)).occurrences()

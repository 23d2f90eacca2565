"""The journey rules behind support's queue (rules 4), pure: no Temporal, no I/O.

A login alone is no progress; an activated user whose progress stops for
`stall.inactive_after_days` gets a support task (`inactive_alert`), not a nudge; what needs a
human (`needs_attention`) follows open tasks, missed calls and broken templates; a closed task's
outcome is recorded once. Times as in tests/test_journey.py (signup Monday 08:00 UTC).
"""

from __future__ import annotations

from datetime import timedelta

from tests.test_journey import DEFN, GOALS, SIGNUP, begin, event, simulate, t, with_stall
from trialpath.core import journey
from trialpath.core.journey import Held


def _goal(state: journey.TrialState, persona: str, day: float) -> list[tuple]:
    at = SIGNUP + timedelta(days=day)
    return [(at, event(state, name, at)) for name, count in GOALS[persona] for _ in range(count)]


def test_the_shipped_journey_does_not_count_a_login_as_progress() -> None:
    assert "login" not in DEFN.stall.key_events
    state = begin(role="business", urgency="this_month")
    logins = [(t(d, 10), event(state, "login", t(d, 10))) for d in (1, 2, 3)]
    run = simulate(DEFN, state, SIGNUP, t(4, 8), logins)
    # Logging in every day does not stop the stall nudge on day 2 (09:00, the send window).
    assert run.at_of("stall_nudge.1") == t(2, 9)
    assert state.events_seen["login"] == 3


def test_a_progress_event_still_moves_the_stall_away() -> None:
    state = begin(role="business", urgency="this_month")
    run = simulate(
        DEFN, state, SIGNUP, t(3, 8), [(t(1, 10), event(state, "workflow_created", t(1, 10)))]
    )
    assert "stall_nudge.1" not in run.occurrences()


def test_an_activated_user_who_goes_quiet_gets_a_support_task_not_a_nudge() -> None:
    state = begin(role="technical", urgency="this_month")
    run = simulate(DEFN, state, SIGNUP, t(10), _goal(state, "technical", 1.0))
    assert state.activated_at is not None
    days = DEFN.stall.inactive_after_days
    assert days is not None
    alerts = [(at, occ) for at, occ in run.log() if occ.startswith("inactive_alert")]
    # Transactional and immediate: exactly `inactive_after_days` after the last progress.
    assert alerts == [(SIGNUP + timedelta(days=1 + days), "inactive_alert.1")]
    assert run.channels("inactive_alert.1") == ("support",)
    # One per episode: nothing more while the user stays quiet, and no marketing nudge.
    assert not [o for o in run.occurrences() if o.startswith("stall_nudge")]
    assert state.inactive_alerted_for == SIGNUP + timedelta(days=1)


def test_the_inactivity_alert_asks_for_a_task_with_its_context() -> None:
    state = begin(role="executive", urgency="this_week", company="Acme")
    simulate(DEFN, state, SIGNUP, t(2), _goal(state, "executive", 1.0))
    days = DEFN.stall.inactive_after_days or 0
    now = SIGNUP + timedelta(days=1 + days)
    step = journey.next_step(DEFN, state, now)
    assert isinstance(step, journey.Send) and step.message == "inactive_alert"
    assert step.extra["cs_task"] is True
    assert step.extra["kind"] == "inactive"
    assert step.extra["days_inactive"] == int(days)
    assert step.extra["activated_day"] == 1
    assert step.anchor == SIGNUP + timedelta(days=1)


def test_progress_after_the_alert_opens_a_new_episode() -> None:
    state = begin(role="business", urgency="this_month")
    later = t(7, 12)
    signals = [*_goal(state, "business", 1.0), (later, event(state, "workflow_created", later))]
    run = simulate(DEFN, state, SIGNUP, t(14), signals)
    days = DEFN.stall.inactive_after_days or 0
    alerts = [(at, occ) for at, occ in run.log() if occ.startswith("inactive_alert")]
    assert alerts == [
        (SIGNUP + timedelta(days=1 + days), "inactive_alert.1"),
        (later + timedelta(days=days), "inactive_alert.2"),
    ]


def test_no_inactivity_alert_for_holdout_old_rules_or_a_journey_without_it() -> None:
    for state, defn in (
        (begin(role="business", urgency="this_month", rules=3), DEFN),
        (begin(role="business", urgency="this_month"), with_stall(DEFN, inactive_after_days=None)),
    ):
        run = simulate(defn, state, SIGNUP, t(14), _goal(state, "business", 1.0))
        assert state.activated_at is not None
        assert not [o for o in run.occurrences() if o.startswith("inactive_alert")]
    holdout = begin(role="business", urgency="this_month")
    holdout.arm = "holdout"
    run = simulate(DEFN, holdout, SIGNUP, t(14), _goal(holdout, "business", 1.0))
    assert holdout.activated_at is not None
    assert not [o for o in run.occurrences() if o.startswith("inactive_alert")]


def test_no_inactivity_alert_after_the_trial_or_a_conversion() -> None:
    state = begin(role="business", urgency="this_month")
    converted = t(3)
    signals = [
        *_goal(state, "business", 1.0),
        (converted, lambda now: journey.apply_conversion(state, "team", 99.0, now)),
    ]
    run = simulate(DEFN, state, SIGNUP, t(30), signals)
    assert not [o for o in run.occurrences() if o.startswith("inactive_alert")]


def test_needs_attention_follows_tasks_missed_calls_and_broken_templates() -> None:
    state = begin(role="business", urgency="this_month", company="Acme")
    simulate(DEFN, state, SIGNUP, SIGNUP)
    now = t(1, 10)
    assert journey.needs_attention(DEFN, state, now) == []
    journey.open_task(state, "trial-u1:support_alert.1", "stalled")
    assert journey.needs_attention(DEFN, state, now) == ["stalled"]
    state.held["drip.x"] = Held(channels=["email"], retry_at=t(1, 11))
    assert journey.needs_attention(DEFN, state, now) == ["stalled", "template_broken"]
    del state.held["drip.x"]
    # A missed call needs a human until it is rebooked.
    assert state.call.at is not None
    journey.apply_call_no_show(state, state.call.at + timedelta(minutes=40))
    after = state.call.at + timedelta(hours=1)
    assert journey.needs_attention(DEFN, state, after) == ["no_show", "stalled"]
    journey.apply_call_rescheduled(state, after + timedelta(days=1), after)
    assert journey.needs_attention(DEFN, state, after) == ["stalled"]
    # Closing the task: recorded once, the reason gone.
    assert journey.apply_task_closed(
        state, "trial-u1:support_alert.1", "stalled", "reached_user", after
    )
    assert not journey.apply_task_closed(
        state, "trial-u1:support_alert.1", "stalled", "reached_user", after
    )
    assert journey.needs_attention(DEFN, state, after) == []
    assert [(s.task, s.outcome) for s in state.support] == [
        ("trial-u1:support_alert.1", "reached_user")
    ]
    # A task closed before the workflow recorded its opening is not reopened by it.
    journey.open_task(state, "trial-u1:support_alert.1", "stalled")
    assert state.tasks == {}
    assert "Needs a human" not in journey.summary(DEFN, state, after)
    journey.open_task(state, "trial-u1:inactive_alert.1", "inactive")
    assert "Needs a human: 1 open support task(s) (inactive)." in journey.summary(
        DEFN, state, after
    )


def test_a_persona_nobody_answered_is_inferred_or_defaulted() -> None:
    deadline = SIGNUP + timedelta(hours=DEFN.qualifier_timeout_hours)
    nothing = begin()
    simulate(DEFN, nothing, SIGNUP, deadline)
    assert (nothing.persona, nothing.persona_source) == (DEFN.default_persona, "defaulted")
    assert nothing.persona_at == deadline
    evidence = begin()
    early = SIGNUP + timedelta(minutes=10)
    simulate(DEFN, evidence, SIGNUP, deadline, [(early, event(evidence, "api_call", early))])
    assert (evidence.persona, evidence.persona_source) == ("technical", "inferred")
    # Trials on older rules called the default an inference too.
    old = begin(rules=3)
    simulate(DEFN, old, SIGNUP, deadline)
    assert old.persona_source == "inferred"


def test_a_missed_call_after_the_end_needs_no_one() -> None:
    state = begin(role="business", urgency="this_month")
    simulate(DEFN, state, SIGNUP, SIGNUP)
    state.call.state = "no_show"
    assert journey.needs_attention(DEFN, state, journey.trial_ends_at(state)) == []

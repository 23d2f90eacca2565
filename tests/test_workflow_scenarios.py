"""One workflow test per scenario and persona, on the time-skipping server.

Every trial signs up at 08:00 UTC (time zone UTC, send window 09:00-18:00, one marketing message
a day), so the expected day of each message follows from the journey definition by hand:
- welcome and call invitation go out at signup (day 0);
- drip step N goes out at 09:00 on its day unless the cap or a more important message is first;
- the success call (urgency this_month) is on day 4 at 10:00, reminders day 3 10:00 and
  day 4 09:00; with no phone number the SMS reminder falls back to email;
- a user with no key action gets a nudge on day 2 and a support alert on day 3;
- the trial's last day is day 14 (T-3 day 11, T-1 day 13, T-0 day 14), win-back on days 17, 24.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.driver import TrialDriver, align, sent_log
from trialpath.core.definition import load_definition
from trialpath.delivery.inbox import inbox_id
from trialpath.operations.config import PACKAGE_DIR, Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import CsTask, Message, StageChange, Trial, TrialEvent

PERSONAS: dict[str, dict[str, Any]] = {
    "technical": {
        "goal": [("integration_connected", 1), ("api_call", 10)],
        "drips": [
            "drip_api_quickstart",
            "drip_connect_integration",
            "drip_webhooks",
            "drip_integration_guides",
            "drip_advanced_api",
        ],
        # Whether drip step 2 is skipped once the goal is reached.
        "drip1_skipped_when_active": True,
        "challenge": "integrations",
    },
    "business": {
        "goal": [("workflow_created", 1), ("teammate_invited", 1)],
        "drips": [
            "drip_first_workflow",
            "drip_invite_team",
            "drip_automate",
            "drip_optimise_workflows",
            "drip_team_collaboration",
        ],
        "drip1_skipped_when_active": True,
        "challenge": "team_coordination",
    },
    "executive": {
        "goal": [("dashboard_configured", 1), ("report_shared", 1)],
        "drips": [
            "drip_first_dashboard",
            "drip_connect_data",
            "drip_case_study",
            "drip_roi_calculator",
            "drip_reporting",
        ],
        "drip1_skipped_when_active": False,
        "challenge": "strategic_oversight",
    },
}

EMAIL_IN_APP = ("email", "in_app")


def msgs(
    day: int, occurrence: str, channels: tuple[str, ...] = EMAIL_IN_APP
) -> list[tuple[int, str]]:
    return [(day, f"{occurrence}/{channel}") for channel in channels]


def drip(persona: str, n: int) -> str:
    return "drip." + PERSONAS[persona]["drips"][n]


SHIPPED = load_definition(PACKAGE_DIR / "journey.toml")


def drip_msgs(persona: str, n: int, day: int) -> list[tuple[int, str]]:
    """Drip step `n` sent on `day`; a step with `unless_read_hours` (whole days here) goes
    in-app that day and by email that many days later (nobody reads it in these scenarios)."""
    step = SHIPPED.personas[persona].drip[n]  # type: ignore[index]
    if step.unless_read_hours is None:
        return msgs(day, drip(persona, n))
    assert step.unless_read_hours % 24 == 0
    later = day + int(step.unless_read_hours // 24)
    return msgs(day, drip(persona, n), ("in_app",)) + msgs(
        later, drip(persona, n) + ".unless_read", ("email",)
    )


def start_of_trial() -> list[tuple[int, str]]:
    return msgs(0, "welcome") + msgs(0, "call_invite.1")


def end_of_trial(last_day: int = 14, winback: bool = True) -> list[tuple[int, str]]:
    found = (
        msgs(last_day - 3, "trial_ending_3")
        + msgs(last_day - 1, "trial_ending_1")
        + msgs(last_day, "trial_ending_0")
    )
    if winback:
        found += msgs(last_day + 3, "winback_3", ("email",))
        found += msgs(last_day + 10, "winback_10", ("email",))
    return found


def stalled_days_1_to_4(persona: str) -> list[tuple[int, str]]:
    """No key action: drip, nudge, support alert, call reminders (call on day 4)."""
    return (
        msgs(1, drip(persona, 0))
        + msgs(2, "stall_nudge.1")
        + msgs(3, drip(persona, 1))
        + msgs(3, "support_alert.1", ("support",))
        + msgs(3, "call_reminder_day.1")
        + msgs(4, drip(persona, 2))
        + msgs(4, "call_reminder_hour.1")
    )


async def reach_goal(trial: TrialDriver, persona: str) -> None:
    for name, count in PERSONAS[persona]["goal"]:
        await trial.event(name, count)


def rows(settings: Settings, model: Any, user_id: str) -> list[Any]:
    with Session(make_engine(settings.effective_database_url)) as session:
        return list(session.exec(select(model).where(model.user_id == user_id)).all())


def check_outbox(settings: Settings, user_id: str, log: list[tuple[int, str]]) -> None:
    """The outbox holds exactly the messages the workflow reports, each once, with a file;
    in-app messages are in the user's inbox."""
    messages = rows(settings, Message, user_id)
    assert sorted(m.step for m in messages) == sorted(step for _, step in log)
    assert all(m.status == "sent" for m in messages)
    for m in messages:
        if m.channel == "in_app":
            assert m.provider == "inbox"
            assert m.provider_message_id == inbox_id(m.key)
            continue
        suffix = ".eml" if m.channel in ("email", "support") else ".txt"
        stem = m.key.replace(":", "_").replace("/", "_")
        assert (settings.outbox_dir / f"{stem}{suffix}").is_file(), m.key


pytestmark = [
    pytest.mark.parametrize("persona", list(PERSONAS)),
    # The journey's behaviour; its writes reach PostgreSQL in test_activities, test_kpis_e2e.
    pytest.mark.database_agnostic,
]


async def test_activates_on_day_1(
    env: WorkflowEnvironment, settings: Settings, worker: Worker, persona: str
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, f"act1-{persona}", role=persona)
    await trial.start()
    await trial.at_day(1.1)
    await reach_goal(trial, persona)
    result = await trial.result()

    expected = start_of_trial() + msgs(1, drip(persona, 0)) + msgs(1, "milestone", ("in_app",))
    expected += msgs(2, "activated")
    if not PERSONAS[persona]["drip1_skipped_when_active"]:
        expected += msgs(3, drip(persona, 1))
    expected += msgs(3, "call_reminder_day.1")
    expected += msgs(4, drip(persona, 2)) + msgs(4, "call_reminder_hour.1")
    # No progress for 4 days after activation (day 1.1): a support task on day 5, no nudge.
    expected += msgs(5, "inactive_alert.1", ("support",))
    expected += drip_msgs(persona, 3, 7) + drip_msgs(persona, 4, 10) + end_of_trial()
    assert sent_log(result) == expected
    assert result.stage == "expired"
    assert result.persona == persona
    assert result.activated
    assert result.activated_at is not None
    assert (result.activated_at - trial.signup_at).total_seconds() == pytest.approx(
        1.1 * 86400, abs=5
    )
    check_outbox(settings, trial.user_id, sent_log(result))
    trial_row = rows(settings, Trial, trial.user_id)[0]
    assert (trial_row.stage, trial_row.activated, trial_row.persona) == ("expired", True, persona)
    assert trial_row.ended_at is not None
    stages = [
        c.to_stage for c in sorted(rows(settings, StageChange, trial.user_id), key=lambda c: c.seq)
    ]
    assert stages == ["onboarding", "activated", "converting", "expired"]
    events = rows(settings, TrialEvent, trial.user_id)
    assert len(events) == sum(n for _, n in PERSONAS[persona]["goal"])


async def test_stalls_then_activates_after_the_call(
    env: WorkflowEnvironment, settings: Settings, worker: Worker, persona: str
) -> None:
    await align(env)
    trial = TrialDriver(
        env, settings, f"stall-{persona}", role=persona, urgency="evaluating", company="Acme Corp"
    )
    await trial.start()
    await trial.at_day(4.2)
    status = await trial.status()
    assert status.call.state == "scheduled"
    assert status.call.at is not None
    # The support alert moved the day-7 call to day 4 at 10:00.
    assert (status.call.at - trial.signup_at).total_seconds() == pytest.approx(
        (4 + 2 / 24) * 86400, abs=5
    )
    await trial.signal("call_completed", {"notes": "walked through the setup"})
    await trial.at_day(4.5)
    await reach_goal(trial, persona)
    result = await trial.result()

    expected = (
        start_of_trial()
        + msgs(1, drip(persona, 0))
        + msgs(2, "stall_nudge.1")
        + msgs(3, drip(persona, 1))
        + msgs(3, "support_alert.1", ("support",))
        + msgs(3, "call_rescheduled.2")
        + msgs(3, "call_reminder_day.2")
        + msgs(4, drip(persona, 2))
        + msgs(4, "call_reminder_hour.2")
        + msgs(4, "call_followup", ("email",))
        + msgs(4, "milestone", ("in_app",))
        + msgs(5, "activated")
        + drip_msgs(persona, 3, 7)
        # Quiet for 4 days after the goal (day 4.5): support gets a task on day 8.
        + msgs(8, "inactive_alert.1", ("support",))
        + drip_msgs(persona, 4, 10)
        + end_of_trial()
    )
    assert sent_log(result) == expected
    assert result.stage == "expired"
    assert result.activated
    assert result.call.state == "completed"
    tasks = sorted(rows(settings, CsTask, trial.user_id), key=lambda task: task.created_at)
    assert [(task.kind, task.key.rpartition(":")[2]) for task in tasks] == [
        ("stalled", "support_alert.1"),
        ("inactive", "inactive_alert.1"),
    ]
    assert {task.agent for task in tasks} == {task.owner for task in tasks} == {result.call.agent}
    # Nobody closed them: the trial still lists them.
    assert set(result.open_tasks.values()) == {"stalled", "inactive"}
    check_outbox(settings, trial.user_id, sent_log(result))


async def test_never_activates(
    env: WorkflowEnvironment, settings: Settings, worker: Worker, persona: str
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, f"never-{persona}", role=persona)
    await trial.start()
    result = await trial.result()

    expected = (
        start_of_trial()
        + stalled_days_1_to_4(persona)
        + drip_msgs(persona, 3, 7)
        + drip_msgs(persona, 4, 10)
        + end_of_trial()
    )
    assert sent_log(result) == expected
    assert result.stage == "expired"
    assert not result.activated
    # No company and urgency this_month: an alert, but no CS task.
    assert rows(settings, CsTask, trial.user_id) == []
    check_outbox(settings, trial.user_id, sent_log(result))


async def test_converts_on_day_5(
    env: WorkflowEnvironment, settings: Settings, worker: Worker, persona: str
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, f"conv-{persona}", role=persona)
    await trial.start()
    await trial.at_day(1.1)
    await reach_goal(trial, persona)
    await trial.at_day(5.2)
    await trial.signal("converted", {"plan": "team", "mrr": 99})
    result = await trial.result()

    expected = start_of_trial() + msgs(1, drip(persona, 0)) + msgs(1, "milestone", ("in_app",))
    expected += msgs(2, "activated")
    if not PERSONAS[persona]["drip1_skipped_when_active"]:
        expected += msgs(3, drip(persona, 1))
    expected += msgs(3, "call_reminder_day.1")
    expected += msgs(4, drip(persona, 2)) + msgs(4, "call_reminder_hour.1")
    expected += msgs(5, "inactive_alert.1", ("support",))  # day 5.1, before the purchase
    expected += msgs(5, "welcome_paid")
    assert sent_log(result) == expected
    assert result.stage == "converted"
    trial_row = rows(settings, Trial, trial.user_id)[0]
    assert (trial_row.stage, trial_row.converted_plan, trial_row.mrr) == ("converted", "team", 99)


async def test_extends_on_day_12(
    env: WorkflowEnvironment, settings: Settings, worker: Worker, persona: str
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, f"ext-{persona}", role=persona)
    await trial.start()
    await trial.at_day(12.2)
    before = await trial.status()
    assert before.stage == "converting"
    await trial.signal("extend_trial", {"days": 7})
    await trial.at_day(12.3)
    after = await trial.status()
    assert (after.trial_ends_at - before.trial_ends_at).days == 7
    assert after.stage == "onboarding"
    result = await trial.result()

    expected = (
        start_of_trial()
        + stalled_days_1_to_4(persona)
        + drip_msgs(persona, 3, 7)
        + drip_msgs(persona, 4, 10)
        + msgs(11, "trial_ending_3")
        + msgs(12, "trial_extended.1")
        + msgs(20, "trial_ending_1")
        + msgs(21, "trial_ending_0")
        + msgs(24, "winback_3", ("email",))
        + msgs(31, "winback_10", ("email",))
    )
    assert sent_log(result) == expected
    assert result.stage == "expired"


async def test_cancels(
    env: WorkflowEnvironment, settings: Settings, worker: Worker, persona: str
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, f"cancel-{persona}", role=persona)
    await trial.start()
    await trial.at_day(3.2)
    await trial.signal("cancel", {"reason": "chose another tool"})
    result = await trial.result()

    expected = (
        start_of_trial()
        + msgs(1, drip(persona, 0))
        + msgs(2, "stall_nudge.1")
        + msgs(3, drip(persona, 1))
        + msgs(3, "support_alert.1", ("support",))
        + msgs(3, "call_reminder_day.1")
    )
    assert sent_log(result) == expected
    assert result.stage == "cancelled"
    assert rows(settings, Trial, trial.user_id)[0].stage == "cancelled"


async def test_unsubscribes_from_email(
    env: WorkflowEnvironment, settings: Settings, worker: Worker, persona: str
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, f"unsub-{persona}", role=persona)
    await trial.start()
    await trial.at_day(0.5)
    await trial.signal("unsubscribe", {"channel": "email"})
    result = await trial.result()

    in_app = ("in_app",)
    expected = (
        start_of_trial()
        + msgs(1, drip(persona, 0), in_app)
        + msgs(2, "stall_nudge.1", in_app)
        + msgs(3, drip(persona, 1), in_app)
        + msgs(3, "support_alert.1", ("support",))
        # Call reminders are transactional: they still go by email.
        + msgs(3, "call_reminder_day.1")
        + msgs(4, drip(persona, 2), in_app)
        + msgs(4, "call_reminder_hour.1")
        + msgs(7, drip(persona, 3), in_app)
        + msgs(10, drip(persona, 4), in_app)
        + msgs(11, "trial_ending_3", in_app)
        + msgs(13, "trial_ending_1", in_app)
        + msgs(14, "trial_ending_0", in_app)
    )
    assert sent_log(result) == expected
    assert result.unsubscribed == ["email"]
    assert result.stage == "expired"


async def test_call_rescheduled_twice(
    env: WorkflowEnvironment, settings: Settings, worker: Worker, persona: str
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, f"resched-{persona}", role=persona)
    await trial.start()
    await trial.at_day(1.2)
    await trial.signal("call_rescheduled", {"at": trial.iso(5 + 7 / 24)})  # day 5 15:00
    await trial.at_day(2.2)
    await trial.signal("call_rescheduled", {"at": trial.iso(6 + 3 / 24)})  # day 6 11:00
    await trial.at_day(6.5)
    status = await trial.status()
    await trial.signal("cancel", {})
    result = await trial.result()

    expected = (
        start_of_trial()
        + msgs(1, drip(persona, 0))
        + msgs(1, "call_rescheduled.2")
        + msgs(2, "stall_nudge.1")
        + msgs(2, "call_rescheduled.3")
        # The user chose the time, so the support alert does not move the call.
        + msgs(3, drip(persona, 1))
        + msgs(3, "support_alert.1", ("support",))
        + msgs(4, drip(persona, 2))
        + msgs(5, "call_reminder_day.3")
        + msgs(6, "call_reminder_hour.3")
    )
    assert sent_log(result) == expected
    assert status.call.at is not None
    assert status.call.at.isoformat() == trial.iso(6 + 3 / 24).replace("+00:00", "+00:00")


async def test_call_no_show(
    env: WorkflowEnvironment, settings: Settings, worker: Worker, persona: str
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, f"noshow-{persona}", role=persona)
    await trial.start()
    await trial.at_day(4.2)
    await trial.signal("call_no_show", {})
    await trial.at_day(4.3)
    await trial.signal("call_booked", {"at": trial.iso(5 + 2 / 24), "agent": "Julia"})
    await trial.at_day(5.2)
    await trial.signal("call_no_show", {})
    await trial.at_day(5.5)
    status = await trial.status()
    await trial.signal("cancel", {})
    result = await trial.result()

    expected = (
        start_of_trial()
        + stalled_days_1_to_4(persona)
        + msgs(4, "call_rebook")
        + msgs(4, "call_booked.2", ("email",))
        # Booked less than a day ahead: no day-before reminder. A second no-show: no new offer.
        + msgs(5, "call_reminder_hour.2")
    )
    assert sent_log(result) == expected
    assert status.call.state == "no_show"
    assert status.call.agent == "Julia"


async def test_duplicate_event_ids(
    env: WorkflowEnvironment, settings: Settings, worker: Worker, persona: str
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, f"dup-{persona}", role=persona)
    await trial.start()
    (first, _), (second, count) = PERSONAS[persona]["goal"]
    await trial.at_day(0.2)
    for _ in range(3):
        await trial.event(first, id="evt-1")
    await trial.event(second, count, id="evt-1")
    status = await trial.status()
    assert status.events_seen == {first: 1}
    assert not status.activated
    await trial.at_day(0.3)
    for i in range(count):
        await trial.event(second, id=f"evt-{i + 2}")
    await trial.at_day(0.4)
    status = await trial.status()
    assert status.events_seen == {first: 1, second: count}
    assert status.activated
    await trial.signal("cancel", {})
    result = await trial.result()
    assert sent_log(result) == start_of_trial() + msgs(0, "milestone", ("in_app",))
    assert len(rows(settings, TrialEvent, trial.user_id)) == 1 + count


async def test_qualifier_never_answered(
    env: WorkflowEnvironment, settings: Settings, worker: Worker, persona: str
) -> None:
    """The persona is inferred after the 1-hour timeout from the events seen so far (business,
    the default, when there are none); urgency defaults to `evaluating` (call on day 7)."""
    await align(env)
    trial = TrialDriver(env, settings, f"noqual-{persona}", role=None, urgency=None)
    await trial.start()
    hint = {"technical": "api_call", "executive": "dashboard_configured", "business": None}[persona]
    await trial.at_day(0.01)
    status = await trial.status()
    assert status.stage == "qualifying"
    assert status.sent == []
    if hint:
        await trial.event(hint)
    await trial.at_day(1.5)
    status = await trial.status()
    await trial.signal("cancel", {})
    result = await trial.result()

    assert status.persona == persona
    expected = start_of_trial()
    if persona == "executive":
        # The dashboard was configured before the persona was known: milestone right after welcome.
        expected = msgs(0, "welcome") + msgs(0, "milestone", ("in_app",)) + msgs(0, "call_invite.1")
    if persona == "business":
        # The others already did what drip step 1 teaches, so it is skipped.
        expected += msgs(1, drip(persona, 0))
    assert sent_log(result) == expected
    assert status.call.at is not None
    assert (status.call.at - trial.signup_at).days == 7

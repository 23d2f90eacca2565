"""The workflow's public contract: update validation, search attributes, query, signals sent
before the journey is loaded, bad payloads, continue-as-new."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlmodel import Session, select
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import worker as worker_module
from activities.records import RecordActivities, RecordProgressInput
from tests.driver import TrialDriver, align, sent_log
from trialpath.core.contract import TrialProfile
from trialpath.entry.trials import recorded_status
from trialpath.growth.simulate import skip_to
from trialpath.operations.config import Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message, Trial, TrialEvent
from worker import build_worker
from workflows.policy import PATCH_STEP_SENDS


async def test_qualify_update_sets_the_persona(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, "q-ok", role=None, urgency=None)
    await trial.start()
    result = await trial.qualify("executive", "strategic_oversight", "this_week")
    assert result.persona == "executive"
    status = await trial.status()
    assert (status.persona, status.urgency, status.stage) == (
        "executive",
        "this_week",
        "onboarding",
    )
    await trial.at_day(0.1)
    status = await trial.status()
    # Urgency this_week: the success call is on day 2.
    assert status.call.at is not None
    assert (status.call.at.date() - trial.signup_at.date()).days == 2
    assert [s.key.split(":")[1] for s in status.sent][:1] == ["welcome/email"]
    assert status.sent[0].template == "email/welcome.executive.en.html.j2"
    # Answering again later switches the path.
    assert (await trial.qualify("technical", "integrations", "this_week")).persona == "technical"
    await trial.signal("cancel")
    await trial.result()


async def test_invalid_answers_are_rejected_and_leave_no_trace(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, "q-bad", role=None, urgency=None)
    handle = await trial.start()
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await trial.qualify("wizard", "integrations", "someday")
    message = str(info.value.cause)
    assert "role 'wizard' is not one of technical, business, executive" in message
    assert "urgency 'someday' is not one of this_week, this_month, evaluating" in message
    history = await handle.fetch_history()
    assert not [
        e
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert (await trial.status()).persona is None
    await trial.signal("cancel")
    await trial.result()


async def test_search_attributes_and_details_follow_the_trial(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, "sa-1", role="business")
    handle = await trial.start()
    await trial.at_day(0.5)
    await trial.event("workflow_created")
    await trial.event("teammate_invited")
    await trial.at_day(0.6)
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(SearchAttributeKey.for_keyword("TrialStage")) == "activated"
    assert attrs.get(SearchAttributeKey.for_keyword("Persona")) == "business"
    assert attrs.get(SearchAttributeKey.for_bool("Activated")) is True
    assert attrs.get(SearchAttributeKey.for_keyword("ExperimentArm")) == "default"
    assert attrs.get(SearchAttributeKey.for_keyword("CsOwner")) in ("Camille", "Samir", "Julia")
    ends = attrs.get(SearchAttributeKey.for_datetime("TrialEndsAt"))
    assert ends is not None and ends == (await trial.status()).trial_ends_at
    # Nothing personal in ids or search attributes.
    assert "@" not in handle.id and "Ada" not in str(attrs)
    await trial.signal("cancel")
    await trial.result()
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(SearchAttributeKey.for_keyword("TrialStage")) == "cancelled"


async def test_bad_signal_payloads_are_dropped_not_fatal(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, "bad-signal", role="technical")
    await trial.start()
    await trial.signal("unsubscribe", {"channel": "pigeon"})
    await trial.signal("extend_trial", {"days": "many"})
    await trial.signal("event", {"nom": "typo"})
    await trial.event("integration_connected")
    await trial.at_day(0.1)
    status = await trial.status()
    assert status.unsubscribed == []
    assert status.events_seen == {"integration_connected": 1}
    assert status.stage == "onboarding"
    await trial.signal("cancel")
    assert (await trial.result()).stage == "cancelled"


async def test_events_older_than_the_trial_do_not_activate(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, "old-events", role="business")
    await trial.start()
    before = trial.iso(-2)
    await trial.event("workflow_created", occurred_at=before)
    await trial.event("teammate_invited", occurred_at=before)
    await trial.at_day(0.1)
    status = await trial.status()
    assert status.events_seen == {"workflow_created": 1, "teammate_invited": 1}
    assert not status.activated
    await trial.signal("cancel")
    await trial.result()


async def test_an_event_that_changes_nothing_costs_its_signal_only(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    """A login (no progress, no wake-up moved) keeps the running timer and waits for the
    trial's next record: no timer started, no activity scheduled for it."""
    await align(env)
    trial = TrialDriver(env, settings, "lean-event", role="business")
    handle = await trial.start()
    await trial.at_day(0.5)
    asleep = await trial.status()
    assert asleep.next_wakeup is not None
    before = len((await handle.fetch_history()).events)
    for i in range(3):
        await trial.signal("event", {"name": "login", "id": f"login-{i}"})
    history = await _settled(handle, signals=3, after=before)
    kinds = [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history]
    assert kinds.count("WORKFLOW_EXECUTION_SIGNALED") == 3
    assert not {"TIMER_STARTED", "ACTIVITY_TASK_SCHEDULED", "MARKER_RECORDED"} & set(kinds), kinds
    status = await trial.status()
    assert status.events_seen.get("login") == 3
    assert status.next_wakeup == asleep.next_wakeup
    engine = make_engine(settings.effective_database_url)

    def logins() -> int:
        with Session(engine) as session:
            rows = session.exec(select(TrialEvent).where(TrialEvent.user_id == "lean-event"))
            return sum(row.name == "login" for row in rows)

    assert logins() == 0
    # Written with the record the trial makes when its timer wakes it.
    await skip_to(env, asleep.next_wakeup + timedelta(minutes=30))
    await trial.status()
    for _ in range(100):
        if logins() == 3:
            break
        await asyncio.sleep(0.05)
    assert logins() == 3
    await trial.signal("cancel")
    await trial.result()
    # A new trial records one patch marker (the newest stands for the older ones).
    events = (await handle.fetch_history()).events
    markers = [e for e in events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert len(markers) == 1
    assert PATCH_STEP_SENDS.encode() in markers[0].SerializeToString()
    # Each step's channels go in one activity: `welcome` by email and in-app is one.
    sends = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and "send" in e.activity_task_scheduled_event_attributes.activity_type.name
    ]
    assert sends and set(sends) == {"send_step"}, sends
    with Session(engine) as session:
        sent = session.exec(select(Message).where(Message.user_id == "lean-event")).all()
    welcome = sorted(m.channel for m in sent if m.message == "welcome")
    assert welcome == ["email", "in_app"]
    assert len(sends) < len(sent)


async def _settled(handle: Any, signals: int, after: int) -> list[Any]:
    """The history after `after` once `signals` signals are in and a workflow task completed
    after the last of them."""
    for _ in range(200):
        events = (await handle.fetch_history()).events[after:]
        kinds = [e.event_type for e in events]
        if kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) == signals:
            last = max(
                i
                for i, k in enumerate(kinds)
                if k == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            )
            if EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in kinds[last:]:
                return list(events)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{signals} signals were not handled")


@pytest.mark.takes(seconds=8)
@pytest.mark.database_agnostic  # the workflow's state across runs (progress rows: test_api)
async def test_many_events_continue_as_new_and_keep_the_state(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, "many-events", role="technical")
    handle = await trial.start()
    first_run = (await handle.describe()).run_id
    await trial.at_day(0.2)
    await trial.event("integration_connected")
    # Default journey continues as new past 2000 history events; 1100 events (each a signal
    # and a recording activity) pass it.
    for i in range(1100):
        await trial.signal("event", {"name": "api_call", "id": f"call-{i}"})
    await trial.at_day(0.5)
    # Duplicates of ids seen in the first run are still ignored in the next one.
    await trial.signal("event", {"name": "api_call", "id": "call-1099"})
    await trial.at_day(0.6)
    status = await trial.status()
    assert (await handle.describe()).run_id != first_run
    assert status.events_seen == {"integration_connected": 1, "api_call": 1100}
    assert status.activated
    keys = [k for _, k in sent_log(status)]
    assert keys.count("welcome/email") == 1
    assert "milestone/in_app" in keys
    await trial.signal("cancel")
    assert (await trial.result()).stage == "cancelled"


def test_profile_rejects_email_as_user_id_and_bad_time_zone() -> None:
    with pytest.raises(ValueError, match="looks like an email address"):
        TrialProfile(user_id="ada@example.com", name="Ada", email="ada@example.com")
    with pytest.raises(ValueError, match="not an IANA time zone"):
        TrialProfile(user_id="u1", name="Ada", email="ada@example.com", timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="not an email address"):
        TrialProfile(user_id="u1", name="Ada", email="ada")


async def test_a_trial_is_dated_from_its_signup_not_from_its_first_task(
    env: WorkflowEnvironment, settings: Settings, executor: ThreadPoolExecutor
) -> None:
    """No worker for a while after the start (a backlog, an outage): the trial is still dated
    from the signup, and what the user did meanwhile counts."""
    await align(env)
    trial = TrialDriver(env, settings, "dated", role="business")
    handle = await trial.start(as_the_api=True)
    signed_up = trial.signup_at
    await trial.event(
        "workflow_created", occurred_at=(signed_up + timedelta(seconds=1)).isoformat()
    )
    await asyncio.sleep(3)  # real time: the time-skipping server waits for the workflow task
    async with build_worker(env.client, settings, executor):
        await trial.at_day(0.2)
        history = await handle.fetch_history()
        first_task = next(
            e.event_time.ToDatetime(tzinfo=UTC)
            for e in history.events
            if e.HasField("workflow_task_started_event_attributes")
        )
        assert first_task - signed_up >= timedelta(seconds=2)
        status = await trial.status()
        assert status.events_seen == {"workflow_created": 1}
        with Session(make_engine(settings.effective_database_url)) as session:
            [event] = session.exec(select(TrialEvent).where(TrialEvent.user_id == "dated")).all()
            row = session.get(Trial, "dated")
        assert event.counted  # after the signup, before the workflow's first task
        assert row is not None and row.signup_at == signed_up
        await trial.signal("cancel")
        await trial.result()


async def test_an_event_arriving_as_the_trial_ends_is_recorded(
    env: WorkflowEnvironment,
    settings: Settings,
    executor: ThreadPoolExecutor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An event signalled while the workflow writes its final record (the API accepted it while
    the trial was still running) reaches the database before the workflow completes."""
    loop = asyncio.get_running_loop()
    endings: list[dict[str, int]] = []

    class SignalDuringLastRecord(RecordActivities):
        @activity.defn(name="record_progress")
        def record_progress(self, request: RecordProgressInput) -> None:
            super().record_progress(request)
            if request.trial.ended_at is None:
                return
            endings.append(dict(request.trial.status["events_seen"]))
            if len(endings) == 1:
                handle = env.client.get_workflow_handle(request.trial.workflow_id)
                late = {"name": "login", "id": "late-login"}
                asyncio.run_coroutine_threadsafe(handle.signal("event", late), loop).result(30)

    monkeypatch.setattr(worker_module, "RecordActivities", SignalDuringLastRecord)
    await align(env)
    trial = TrialDriver(env, settings, "late-event", role="business")
    async with build_worker(env.client, settings, executor):
        await trial.start()
        await trial.at_day(0.1)
        await trial.signal("cancel")
        result = await trial.result()
    assert result.stage == "cancelled"
    assert result.events_seen == {"login": 1}
    assert endings == [{}, {"login": 1}]
    engine = make_engine(settings.effective_database_url)
    recorded = recorded_status(engine, "late-event", ended_only=True)
    assert recorded is not None and recorded.events_seen == {"login": 1}
    with Session(engine) as session:
        event = session.get(TrialEvent, "late-event:late-login")
    assert event is not None and not event.counted  # after the end: stored, not counted

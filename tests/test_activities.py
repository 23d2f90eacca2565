"""Activities against a real SQLite database and outbox folder (no Temporal server needed)."""

from __future__ import annotations

import email
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.calls import AssignAgentInput, CallActivities
from activities.message_io import CallFacts, Recipient, SendMessageInput, TrialFacts
from activities.messaging import MessagingActivities
from activities.records import (
    EventRecord,
    RecordActivities,
    RecordProgressInput,
    StageRecord,
    TrialSnapshot,
)
from trialpath.core.contract import TrialProfile
from trialpath.delivery import DeliveryError, OutgoingMessage, Receipt
from trialpath.delivery.outbox import OutboxProvider
from trialpath.messages.templating import Product, Renderer
from trialpath.operations.config import PROJECT_ROOT, Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import AgentAssignment, Message, StageChange, Trial, TrialEvent

AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


class CountingProvider:
    """Wraps the outbox and counts deliveries; can fail the first attempts."""

    name = "counting"

    def __init__(self, inner: OutboxProvider, failures: list[DeliveryError] | None = None) -> None:
        self.inner = inner
        self.failures = failures or []
        self.calls = 0

    def deliver(self, message: OutgoingMessage) -> Receipt:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.inner.deliver(message)

    def find(self, message: OutgoingMessage, since: datetime) -> Receipt | None:
        return self.inner.find(message, since)


@pytest.fixture
def engine(settings: Settings):  # type: ignore[no-untyped-def]
    return make_engine(settings.effective_database_url)


def messaging(settings: Settings, engine, provider) -> MessagingActivities:  # type: ignore[no-untyped-def]
    product = Product("Acme", "https://app.acme.test", "Paris", "help@acme.test")
    providers = dict.fromkeys(("email", "sms", "in_app", "support"), provider)
    return MessagingActivities(
        engine, Renderer(PROJECT_ROOT / "templates"), providers, product, "Acme <hi@acme.test>"
    )


def request(message: str = "call_invite", channel: str = "email", **extra) -> SendMessageInput:  # type: ignore[no-untyped-def]
    return SendMessageInput(
        workflow_id="trial-u1",
        user_id="u1",
        occurrence=f"{message}.1",
        message=message,
        channel=channel,
        category="transactional",
        persona="technical",
        recipient=Recipient(name="Ada Lovelace", email="ada@example.com", timezone="Europe/Paris"),
        trial=TrialFacts(
            day=0, days_left=14, ends_on=date(2026, 12, 9), activated=False, activation_progress=0
        ),
        call=CallFacts(at=AT + timedelta(days=2), agent="Camille", duration_minutes=30, version=1),
        **extra,
    )


def test_send_is_written_once_and_delivered_once(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    provider = CountingProvider(OutboxProvider(settings.outbox_dir))
    acts = messaging(settings, engine, provider)
    env = ActivityEnvironment()
    first = env.run(acts.send_message, request())
    again = env.run(acts.send_message, request())
    assert first == again
    assert first.key == "trial-u1:call_invite.1/email"
    assert first.status == "sent"
    assert provider.calls == 1
    with Session(engine) as session:
        rows = session.exec(select(Message)).all()
    assert len(rows) == 1
    assert rows[0].template == "email/call_invite.default.en.html.j2"
    assert len(rows[0].content_hash) == 64
    files = list(settings.outbox_dir.iterdir())
    assert [f.name for f in files] == ["trial-u1_call_invite.1_email.eml"]
    parsed = email.message_from_bytes(files[0].read_bytes())
    assert parsed["To"] == "ada@example.com"
    parts = {p.get_content_type(): p for p in parsed.walk()}
    assert {"text/plain", "text/html", "text/calendar"} <= set(parts)
    ics = parts["text/calendar"].get_payload(decode=True).decode()
    assert "SEQUENCE:1" in ics
    assert "DTSTART:20261127T090000Z" in ics
    assert "trial-u1-success-call@trialpath" in ics


def test_concurrent_attempts_never_send_twice(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    provider = CountingProvider(OutboxProvider(settings.outbox_dir))
    acts = messaging(settings, engine, provider)
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda _: ActivityEnvironment().run(acts.send_message, request("welcome")), range(4)
            )
        )
    assert len({r.key for r in results}) == 1
    with Session(engine) as session:
        assert len(session.exec(select(Message)).all()) == 1


def test_transient_failure_keeps_the_row_and_retry_sends_it(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    provider = CountingProvider(
        OutboxProvider(settings.outbox_dir), [DeliveryError("503", permanent=False)]
    )
    acts = messaging(settings, engine, provider)
    with pytest.raises(ApplicationError) as info:
        ActivityEnvironment().run(acts.send_message, request())
    assert info.value.type == "DeliveryUnavailable"
    assert not info.value.non_retryable
    with Session(engine) as session:
        assert session.get(Message, "trial-u1:call_invite.1/email").status == "pending"  # type: ignore[union-attr]
    result = ActivityEnvironment().run(acts.send_message, request())
    assert result.status == "sent"
    assert provider.calls == 2


def test_permanent_failure_is_recorded_and_not_retried(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    provider = CountingProvider(
        OutboxProvider(settings.outbox_dir), [DeliveryError("bad address", permanent=True)]
    )
    acts = messaging(settings, engine, provider)
    with pytest.raises(ApplicationError) as info:
        ActivityEnvironment().run(acts.send_message, request())
    assert info.value.non_retryable
    assert info.value.type == "DeliveryRejected"
    again = ActivityEnvironment().run(acts.send_message, request())
    assert again.status == "failed"
    assert provider.calls == 1


def test_missing_template_is_a_non_retryable_error(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    acts = messaging(settings, engine, CountingProvider(OutboxProvider(settings.outbox_dir)))
    with pytest.raises(ApplicationError, match="no template") as info:
        ActivityEnvironment().run(acts.send_message, request("no_such_message"))
    assert info.value.type == "TemplateError"
    assert info.value.non_retryable


def test_marketing_email_has_one_click_unsubscribe_headers(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    acts = messaging(settings, engine, OutboxProvider(settings.outbox_dir))
    req = request("welcome").model_copy(update={"category": "marketing", "occurrence": "welcome"})
    ActivityEnvironment().run(acts.send_message, req)
    raw = (settings.outbox_dir / "trial-u1_welcome_email.eml").read_bytes()
    parsed = email.message_from_bytes(raw)
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["List-Unsubscribe"].startswith("<https://app.acme.test/")
    assert b"=?utf-8?" not in raw


def test_agents_are_assigned_round_robin_and_stick(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    acts = CallActivities(engine)
    env = ActivityEnvironment()
    agents = ["Camille", "Samir", "Julia"]
    got = [
        env.run(acts.assign_agent, AssignAgentInput(workflow_id=f"trial-{i}", agents=agents))
        for i in range(5)
    ]
    assert got == ["Camille", "Samir", "Julia", "Camille", "Samir"]
    assert (
        env.run(acts.assign_agent, AssignAgentInput(workflow_id="trial-1", agents=agents))
        == "Samir"
    )
    with Session(engine) as session:
        assert len(session.exec(select(AgentAssignment)).all()) == 5


def test_record_progress_is_idempotent(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    acts = RecordActivities(engine)
    snapshot = TrialSnapshot(
        user_id="u1",
        workflow_id="trial-u1",
        signup_at=AT,
        persona="technical",
        stage="onboarding",
        urgency="this_week",
        activated=False,
        activated_at=None,
        trial_ends_at=AT + timedelta(days=14),
        cs_owner="Camille",
        experiment_arm="default",
        converted_plan=None,
        mrr=None,
        converted_at=None,
        ended_at=None,
        status={"stage": "onboarding"},
    )
    progress = RecordProgressInput(
        trial=snapshot,
        profile=TrialProfile(user_id="u1", name="Ada Lovelace", email="ada@example.com"),
        events=[
            EventRecord(
                id="u1:e1", name="api_call", occurred_at=AT, counted=True, properties={"n": 1}
            )
        ],
        stages=[StageRecord(seq=1, from_stage=None, to_stage="onboarding", at=AT)],
    )
    env = ActivityEnvironment()
    env.run(acts.record_progress, progress)
    env.run(acts.record_progress, progress)
    later = progress.model_copy(
        update={
            "trial": snapshot.model_copy(update={"stage": "activated", "activated": True}),
            "profile": None,
        }
    )
    env.run(acts.record_progress, later)
    with Session(engine) as session:
        trial = session.get(Trial, "u1")
        assert trial is not None
        assert (trial.stage, trial.activated, trial.email) == ("activated", True, "ada@example.com")
        assert len(session.exec(select(TrialEvent)).all()) == 1
        assert len(session.exec(select(StageChange)).all()) == 1


def test_concurrent_first_assignments_share_the_agents_evenly(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    acts = CallActivities(engine)
    agents = ["Camille", "Samir", "Julia"]

    def assign(i: int) -> str:
        request = AssignAgentInput(workflow_id=f"trial-c{i}", agents=agents)
        return ActivityEnvironment().run(acts.assign_agent, request)

    with ThreadPoolExecutor(9) as pool:
        got = list(pool.map(assign, range(9)))
    assert sorted(got) == sorted(agents * 3)


def test_outbox_write_cut_short_leaves_nothing_to_find(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker dying mid-write must not leave half a message that `find` (the reconcile after
    a crash) would take for a delivered one: files appear whole or not at all."""
    outbox = OutboxProvider(tmp_path)
    message = OutgoingMessage(
        key="trial-u1:welcome/email",
        channel="email",
        category="marketing",
        sender="Acme <onboarding@acme.test>",
        recipient="Ada Lovelace <ada@example.com>",
        subject="Welcome",
        html="<p>Hi</p>",
        text="Hi",
    )
    since = datetime.now(UTC)

    def killed(src: object, dst: object) -> None:
        raise KeyboardInterrupt  # the process stops between writing and renaming

    monkeypatch.setattr("trialpath.delivery.outbox.os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        outbox.deliver(message)
    assert list(tmp_path.iterdir()) == []
    assert outbox.find(message, since) is None
    monkeypatch.undo()

    receipt = outbox.deliver(message)
    assert [p.name for p in tmp_path.iterdir()] == ["trial-u1_welcome_email.eml"]
    assert outbox.find(message, since) == receipt
    assert email.message_from_bytes((tmp_path / receipt.message_id).read_bytes())["Subject"] == (
        "Welcome"
    )

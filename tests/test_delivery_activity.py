"""The send activity with real-provider behaviour: outcomes that are unknown (timeouts, a crash
after the hand-over), Retry-After, preferences checked at the last moment, signed unsubscribe
links. Runs against a real database; providers are scripted."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.message_io import SendMessageInput
from activities.messaging import MessagingActivities
from tests.test_activities import request
from trialpath.delivery import DeliveryError, OutgoingMessage, Receipt
from trialpath.delivery.outbox import OutboxProvider
from trialpath.delivery.preferences import UnsubscribeTokens, set_subscribed
from trialpath.messages.templating import Product, Renderer
from trialpath.operations.config import PROJECT_ROOT, Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message, MessageEvent, utcnow

KEY = "trial-u1:call_invite.1/email"


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return make_engine(settings.effective_database_url)


class Scripted:
    """A provider whose answers are scripted: an exception to raise, or a receipt id."""

    name = "scripted"

    def __init__(self, *answers: Any, found: Any = NotImplementedError) -> None:
        self.answers = list(answers)
        self.found = found
        self.delivered: list[OutgoingMessage] = []
        self.lookups = 0

    def deliver(self, message: OutgoingMessage) -> Receipt:
        answer = self.answers.pop(0) if self.answers else "id-ok"
        if isinstance(answer, BaseException):
            raise answer
        self.delivered.append(message)
        return Receipt(self.name, answer)

    def find(self, message: OutgoingMessage, since: datetime) -> Receipt | None:
        self.lookups += 1
        if self.found is NotImplementedError:
            raise NotImplementedError
        if isinstance(self.found, BaseException):
            raise self.found
        return Receipt(self.name, self.found) if self.found else None


def acts(
    engine: Engine, provider: Any, reconcile_after: float = 600, secret: str = "s3cret"
) -> MessagingActivities:
    return MessagingActivities(
        engine,
        Renderer(PROJECT_ROOT / "templates"),
        dict.fromkeys(("email", "sms", "in_app", "support"), provider),
        Product("Acme", "https://app.acme.test", "Paris", "help@acme.test"),
        "Acme <hi@acme.test>",
        tokens=UnsubscribeTokens(secret),
        public_url="https://trialpath.acme.test",
        reconcile_after=timedelta(seconds=reconcile_after),
    )


def run(activities: MessagingActivities, req: SendMessageInput | None = None) -> Any:
    return ActivityEnvironment().run(activities.send_message, req or request())


def row(engine: Engine, key: str = KEY) -> Message:
    with Session(engine) as session:
        found = session.get(Message, key)
        assert found is not None
        return found


def timeout() -> DeliveryError:
    return DeliveryError("timed out", permanent=False, in_doubt=True)


def test_a_timeout_leaves_the_send_in_doubt_and_a_lookup_finds_it(engine: Engine) -> None:
    provider = Scripted(timeout(), found="SM-found")
    activities = acts(engine, provider)
    with pytest.raises(ApplicationError) as info:
        run(activities)
    assert info.value.type == "DeliveryInDoubt" and not info.value.non_retryable
    assert row(engine).status == "sending" and row(engine).attempts == 1
    result = run(activities)
    assert result.status == "sent" and result.provider_message_id == "SM-found"
    assert provider.delivered == [] and provider.lookups == 1
    assert row(engine).attempts == 1


def test_in_doubt_and_the_provider_has_not_got_it_sends_again(engine: Engine) -> None:
    provider = Scripted(timeout(), "id-2", found=None)
    activities = acts(engine, provider)
    with pytest.raises(ApplicationError):
        run(activities)
    assert run(activities).provider_message_id == "id-2"
    assert len(provider.delivered) == 1 and row(engine).attempts == 2


def test_in_doubt_without_lookup_waits_for_the_webhook_then_sends_again(engine: Engine) -> None:
    provider = Scripted(timeout(), "id-2")
    activities = acts(engine, provider, reconcile_after=600)
    with pytest.raises(ApplicationError):
        run(activities)
    with pytest.raises(ApplicationError) as info:
        run(activities)
    assert info.value.type == "DeliveryInDoubt"
    assert info.value.next_retry_delay is not None
    assert timedelta(seconds=590) < info.value.next_retry_delay <= timedelta(seconds=600)
    assert provider.delivered == []
    # Once the window has passed with no record at the provider, it is sent again.
    assert run(acts(engine, provider, reconcile_after=0)).status == "sent"
    assert len(provider.delivered) == 1


def test_in_doubt_reconciled_from_a_webhook_event(engine: Engine) -> None:
    provider = Scripted(timeout())
    activities = acts(engine, provider)
    with pytest.raises(ApplicationError):
        run(activities)
    with Session(engine) as session:
        session.add(
            MessageEvent(
                id="sendgrid:ev1",
                provider="sendgrid",
                message_key=KEY,
                provider_message_id="sg-123",
                type="processed",
                at=utcnow(),
            )
        )
        session.commit()
    result = run(activities)
    assert result.status == "sent" and result.provider_message_id == "sg-123"
    assert provider.delivered == []


def test_a_crash_during_the_provider_call_is_treated_as_in_doubt(engine: Engine) -> None:
    provider = Scripted(RuntimeError("worker died"), found="id-1")
    activities = acts(engine, provider)
    with pytest.raises(RuntimeError):
        run(activities)
    assert row(engine).status == "sending"
    assert run(activities).provider_message_id == "id-1"
    assert provider.delivered == []


def test_refused_before_acceptance_is_retried_after_retry_after(engine: Engine) -> None:
    provider = Scripted(
        DeliveryError("429", permanent=False, retry_after=7),
        DeliveryError("429", permanent=False, retry_after=10**6),
        "id-3",
    )
    activities = acts(engine, provider)
    with pytest.raises(ApplicationError) as info:
        run(activities)
    assert info.value.type == "DeliveryUnavailable"
    assert info.value.next_retry_delay == timedelta(seconds=7)
    assert row(engine).status == "pending" and row(engine).error == "429"
    with pytest.raises(ApplicationError) as info:
        run(activities)
    assert info.value.next_retry_delay == timedelta(hours=1)
    assert run(activities).status == "sent"
    assert provider.lookups == 0 and row(engine).attempts == 3 and row(engine).error is None


def test_marketing_is_skipped_once_the_user_opted_out(engine: Engine) -> None:
    provider = Scripted()
    activities = acts(engine, provider)
    set_subscribed(engine, "u1", ["email"], subscribed=False, source="link")
    marketing = request("welcome").model_copy(
        update={"category": "marketing", "occurrence": "welcome"}
    )
    result = run(activities, marketing)
    assert result.status == "skipped" and provider.delivered == []
    assert row(engine, "trial-u1:welcome/email").error == "the user unsubscribed from email"
    # Transactional messages still go out, and other channels are unaffected.
    assert run(activities).status == "sent"
    in_app = marketing.model_copy(update={"channel": "in_app"})
    assert run(activities, in_app).status == "sent"


def test_a_copy_that_waits_for_the_in_app_one_is_skipped_once_that_was_read(
    engine: Engine,
) -> None:
    provider = Scripted()
    activities = acts(engine, provider)
    card = request("welcome").model_copy(
        update={"category": "marketing", "occurrence": "drip.x", "channel": "in_app"}
    )
    assert run(activities, card).status == "sent"
    follow = card.model_copy(
        update={
            "occurrence": "drip.x.unless_read",
            "channel": "email",
            "unless_read": "trial-u1:drip.x/in_app",
        }
    )
    # Unread: the copy goes out (once, however often the activity runs).
    first = follow.model_copy(update={"occurrence": "drip.y.unless_read"})
    assert run(activities, first).status == "sent"
    assert run(activities, first).status == "sent" and len(provider.delivered) == 2
    # Read: the copy is written, recorded as skipped with the reason, never handed over.
    with Session(engine) as session:
        read = session.get(Message, "trial-u1:drip.x/in_app")
        assert read is not None
        read.read_at = datetime(2026, 1, 9, 10, 30, tzinfo=UTC)
        session.add(read)
        session.commit()
    result = run(activities, follow)
    assert result.status == "skipped" and len(provider.delivered) == 2
    skipped = row(engine, "trial-u1:drip.x.unless_read/email")
    assert skipped.error == "the in-app copy was read at 2026-01-09 10:30:00 UTC"
    assert (skipped.attempts, skipped.sent_at) == (0, None)
    assert run(activities, follow).status == "skipped" and len(provider.delivered) == 2


def test_marketing_email_carries_a_signed_one_click_link(
    engine: Engine, settings: Settings
) -> None:
    activities = acts(engine, OutboxProvider(settings.outbox_dir), secret="k1")
    marketing = request("welcome").model_copy(
        update={"category": "marketing", "occurrence": "welcome"}
    )
    run(activities, marketing)
    parsed = email.message_from_bytes(
        (settings.outbox_dir / "trial-u1_welcome_email.eml").read_bytes()
    )
    header = parsed["List-Unsubscribe"]
    prefix = "<https://trialpath.acme.test/v1/unsubscribe/"
    assert header.startswith(prefix) and header.endswith(">")
    token = header[len(prefix) : -1]
    assert UnsubscribeTokens("k1").read(token) == ("u1", "email")
    # The same link is in the body, for people rather than mail clients.
    assert token in row(engine, "trial-u1:welcome/email").html


def test_a_new_message_is_written_sending_then_settled_two_writes(engine: Engine) -> None:
    """A new message's row is written `sending` in the transaction that creates it (the
    provider is called right after), then settled: two writes, not three, and the settling
    update does not read the row again. A message skipped from the start is written once,
    already settled."""
    writes: list[str] = []
    reads: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        verb = statement.split()[0]
        if verb in ("INSERT", "UPDATE") and "messages" in statement.split("(")[0]:
            writes.append(verb)
        if verb == "SELECT" and "FROM messages" in " ".join(statement.split()):
            reads.append(verb)

    provider = Scripted()
    activities = acts(engine, provider)
    event.listen(engine, "before_cursor_execute", record)
    try:
        result = run(activities)
        assert (result.status, result.provider_message_id) == ("sent", "id-ok")
        assert writes == ["INSERT", "UPDATE"]
        assert reads == ["SELECT"]  # whether an earlier attempt wrote the row
        sent = row(engine)
        assert (sent.status, sent.attempts, len(provider.delivered)) == ("sent", 1, 1)
        assert sent.attempted_at is not None and sent.sent_at is not None
        writes.clear()
        set_subscribed(engine, "u1", ["email"], subscribed=False, source="link")
        marketing = request("welcome").model_copy(
            update={"category": "marketing", "occurrence": "welcome"}
        )
        assert run(activities, marketing).status == "skipped"
        assert writes == ["INSERT"]
    finally:
        event.remove(engine, "before_cursor_execute", record)
    skipped = row(engine, "trial-u1:welcome/email")
    assert (skipped.attempts, skipped.error) == (0, "the user unsubscribed from email")
    assert len(provider.delivered) == 1

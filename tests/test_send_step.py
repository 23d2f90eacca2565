"""`send_step`: every channel of one step in one activity, each sent once and settled on its
own. Runs against a real database; each channel has its own scripted provider."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.message_io import TEMPLATE_BROKEN, ChannelPlan, SendResult, SendStepInput
from activities.messaging import MessagingActivities
from tests.test_activities import request
from tests.test_delivery_activity import Scripted
from trialpath.delivery import DeliveryError
from trialpath.delivery.preferences import UnsubscribeTokens
from trialpath.messages.templating import Product, Renderer
from trialpath.operations.config import PROJECT_ROOT, Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return make_engine(settings.effective_database_url)


def acts(engine: Engine, **providers: Scripted) -> MessagingActivities:
    return MessagingActivities(
        engine,
        Renderer(PROJECT_ROOT / "templates"),
        {c: providers.get(c) or Scripted() for c in ("email", "sms", "in_app", "support")},
        Product("Acme", "https://app.acme.test", "Paris", "help@acme.test"),
        "Acme <hi@acme.test>",
        tokens=UnsubscribeTokens("s3cret"),
        public_url="https://trialpath.acme.test",
    )


def step(message: str, *plans: ChannelPlan) -> SendStepInput:
    return SendStepInput(message=request(message, plans[0].channel), channels=list(plans))


def run(activities: MessagingActivities, request: SendStepInput) -> list[SendResult]:
    results: list[SendResult] = ActivityEnvironment().run(activities.send_step, request)
    return results


def rows(engine: Engine, message: str) -> dict[str, Message]:
    with Session(engine) as session:
        found = [
            session.get(Message, f"trial-u1:{message}.1/{c}") for c in ("email", "sms", "in_app")
        ]
    return {m.channel: m for m in found if m is not None}


def unavailable(retry_after: float | None = None) -> DeliveryError:
    return DeliveryError("503 from the provider", permanent=False, retry_after=retry_after)


def test_every_channel_of_a_step_is_sent_once_by_one_activity(engine: Engine) -> None:
    email, in_app = Scripted("em-1"), Scripted("ia-1")
    activities = acts(engine, email=email, in_app=in_app)
    request = step("call_invite", ChannelPlan(channel="email"), ChannelPlan(channel="in_app"))
    first = run(activities, request)
    assert [(r.channel, r.status, r.provider_message_id) for r in first] == [
        ("email", "sent", "em-1"),
        ("in_app", "sent", "ia-1"),
    ]
    assert [r.key for r in first] == [
        "trial-u1:call_invite.1/email",
        "trial-u1:call_invite.1/in_app",
    ]
    # A retried activity (its completion lost) finds both rows final: nothing sent again.
    assert run(activities, request) == first
    assert (len(email.delivered), len(in_app.delivered)) == (1, 1)
    found = rows(engine, "call_invite")
    assert {c: (m.status, m.attempts) for c, m in found.items()} == {
        "email": ("sent", 1),
        "in_app": ("sent", 1),
    }


def test_a_channel_still_failing_does_not_hold_the_others_back(engine: Engine) -> None:
    """The in-app copy goes out in the first attempt; the activity then fails retryably for
    the email, at the delay its provider asked for, and the next attempt sends only that."""
    email, in_app = Scripted(unavailable(retry_after=30), "em-2"), Scripted("ia-1")
    activities = acts(engine, email=email, in_app=in_app)
    request = step("call_invite", ChannelPlan(channel="email"), ChannelPlan(channel="in_app"))
    with pytest.raises(ApplicationError) as info:
        run(activities, request)
    assert info.value.type == "DeliveryUnavailable" and not info.value.non_retryable
    assert info.value.next_retry_delay == timedelta(seconds=30)
    assert {c: m.status for c, m in rows(engine, "call_invite").items()} == {
        "email": "pending",
        "in_app": "sent",
    }
    results = run(activities, request)
    assert [(r.channel, r.status) for r in results] == [("email", "sent"), ("in_app", "sent")]
    assert (len(email.delivered), len(in_app.delivered)) == (1, 1)
    assert rows(engine, "call_invite")["email"].attempts == 2


@pytest.mark.parametrize(
    ("sms_after", "email_after", "delay"),
    [(30, 10, timedelta(seconds=10)), (30, None, None)],
    ids=["soonest-asked", "one-asks-nothing"],
)
def test_the_retry_comes_when_the_soonest_channel_asks(
    engine: Engine, sms_after: float, email_after: float | None, delay: timedelta | None
) -> None:
    activities = acts(
        engine, sms=Scripted(unavailable(sms_after)), email=Scripted(unavailable(email_after))
    )
    request = step("call_reminder_hour", ChannelPlan(channel="sms"), ChannelPlan(channel="email"))
    with pytest.raises(ApplicationError) as info:
        run(activities, request)
    assert info.value.next_retry_delay == delay
    assert info.value.message == "503 from the provider; 503 from the provider"


def test_a_broken_template_is_reported_for_its_channel_alone(engine: Engine) -> None:
    """`call_invite` has no SMS template: that channel comes back broken (no row, nothing
    sent, the workflow holds the step), and the email goes out all the same."""
    sms, email = Scripted(), Scripted("em-1")
    activities = acts(engine, sms=sms, email=email)
    request = step("call_invite", ChannelPlan(channel="sms"), ChannelPlan(channel="email"))
    broken, sent = run(activities, request)
    assert (broken.channel, broken.status, sent.status) == ("sms", TEMPLATE_BROKEN, "sent")
    assert "no template for sms message 'call_invite'" in (broken.error or "")
    assert sms.delivered == [] and len(email.delivered) == 1
    assert set(rows(engine, "call_invite")) == {"email"}


def test_a_channel_refused_for_good_falls_back_inside_the_activity(engine: Engine) -> None:
    sms = Scripted(DeliveryError("not a mobile number", permanent=True))
    email = Scripted("em-1")
    activities = acts(engine, sms=sms, email=email)
    request = step(
        "call_reminder_hour",
        ChannelPlan(channel="sms", max_attempts=3, fallback="email"),
        ChannelPlan(channel="in_app"),
    )
    fallback, in_app = run(activities, request)
    assert (fallback.channel, fallback.status) == ("email", "sent")
    assert in_app.status == "sent"
    found = rows(engine, "call_reminder_hour")
    assert found["sms"].status == "failed" and found["sms"].error == "not a mobile number"
    assert found["email"].status == "sent" and len(email.delivered) == 1
    # Retried after a lost completion: the same answer, no second email.
    assert run(activities, request) == [fallback, in_app]
    assert len(email.delivered) == 1


def test_the_fallback_waits_for_the_channel_to_be_settled(engine: Engine) -> None:
    """With `max_attempts`, a channel that keeps failing is retried that many provider calls
    (the activity failing retryably meanwhile), then settled `failed`, then falls back."""
    sms = Scripted(unavailable(), unavailable(), unavailable())
    email = Scripted("em-1")
    activities = acts(engine, sms=sms, email=email)
    request = step(
        "call_reminder_hour", ChannelPlan(channel="sms", max_attempts=3, fallback="email")
    )
    for _ in range(2):
        with pytest.raises(ApplicationError):
            run(activities, request)
        assert "email" not in rows(engine, "call_reminder_hour")
    [result] = run(activities, request)
    assert (result.channel, result.status) == ("email", "sent")
    sms_row = rows(engine, "call_reminder_hour")["sms"]
    assert (sms_row.status, sms_row.attempts) == ("failed", 3)
    assert "gave up after 3 attempts" in (sms_row.error or "")


def test_refused_for_good_without_a_fallback_comes_back_failed(engine: Engine) -> None:
    activities = acts(engine, email=Scripted(DeliveryError("bounced", permanent=True)))
    [result] = run(activities, step("call_invite", ChannelPlan(channel="email")))
    assert (result.channel, result.status, result.error) == ("email", "failed", "bounced")

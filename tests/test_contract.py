"""Contract tests: every request the SendGrid and Twilio providers make is valid for the
providers' official OpenAPI descriptions, served by Prism with request validation on.

Real messages are rendered from the templates and sent through the send activity, as the
worker does; Prism answers a request that breaks the schema with an error (400 or 422), which
the providers turn into a failed send, so a passing test means every request conformed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.testing import ActivityEnvironment

from activities.message_io import SendMessageInput
from activities.messaging import MessagingActivities
from tests.prism import sendgrid_mock, twilio_mock, violations
from tests.test_activities import request
from trialpath.delivery import DeliveryError, OutgoingMessage
from trialpath.delivery.preferences import UnsubscribeTokens
from trialpath.delivery.sendgrid import SendGridProvider, build_mail_payload
from trialpath.delivery.twilio import TwilioProvider
from trialpath.messages.templating import Product, Renderer
from trialpath.operations.config import PROJECT_ROOT, Settings
from trialpath.operations.db import make_engine

pytestmark = pytest.mark.database_agnostic  # its subject is not the database

__all__ = ["sendgrid_mock", "twilio_mock"]  # fixtures, used by name

ACCOUNT = "AC" + "0123456789abcdef" * 2
SERVICE = "MG" + "fedcba9876543210" * 2


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.effective_database_url)
    yield engine
    engine.dispose()


def activities(engine: Engine, providers: dict[str, Any]) -> MessagingActivities:
    return MessagingActivities(
        engine,
        Renderer(PROJECT_ROOT / "templates"),
        providers,
        Product("Acme", "https://app.acme.test", "10 rue de la Paix, Paris", "help@acme.test"),
        "Acme Onboarding <onboarding@acme.test>",
        tokens=UnsubscribeTokens("secret"),
        public_url="https://trialpath.acme.test",
    )


def sample(message: str, channel: str, category: str, **changes: Any) -> SendMessageInput:
    req = request(message, channel).model_copy(
        update={"category": category, "occurrence": f"{message}.1", **changes}
    )
    if changes.get("locale"):
        req.recipient.locale = changes["locale"]
    return req


EMAILS = [
    ("welcome", "marketing", {"persona": "technical"}),
    ("welcome", "marketing", {"persona": "business", "locale": "fr"}),
    ("stall_nudge", "marketing", {"persona": "executive"}),
    ("call_invite", "transactional", {}),
    ("call_rescheduled", "transactional", {"locale": "fr"}),
    ("trial_ending_0", "marketing", {"persona": "business"}),
    ("winback_10", "marketing", {"persona": None}),
]


@pytest.mark.parametrize(("message", "category", "changes"), EMAILS)
@pytest.mark.parametrize("sandbox", [False, True], ids=["live", "sandbox"])
def test_sendgrid_requests_match_the_official_schema(
    sendgrid_mock: str,
    engine: Engine,
    message: str,
    category: str,
    changes: dict[str, Any],
    sandbox: bool,
) -> None:
    provider = SendGridProvider("SG.test-key", sendgrid_mock, sandbox=sandbox, timeout=10)
    acts = activities(engine, {"email": provider})
    result = ActivityEnvironment().run(
        acts.send_message, sample(message, "email", category, **changes)
    )
    assert result.status == "sent", result


def test_sendgrid_payload_has_what_the_schema_allows_us_to_check(sendgrid_mock: str) -> None:
    """The same payload, posted directly: no `sl-violations` at all (warnings included)."""
    outgoing = OutgoingMessage(
        key="trial-u1:welcome/email",
        channel="email",
        category="marketing",
        sender="Acme <onboarding@acme.test>",
        recipient="Ada Lovelace <ada@example.com>",
        subject="Welcome",
        html="<p>Hi</p>",
        text="Hi",
        headers={
            "List-Unsubscribe": "<https://trialpath.acme.test/v1/unsubscribe/t>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        user_id="u1",
        trial_id="trial-u1",
        message="welcome",
        persona="technical",
    )
    payload = build_mail_payload(outgoing, sandbox=True)
    response = httpx.post(
        f"{sendgrid_mock}/v3/mail/send",
        json=payload,
        headers={"Authorization": "Bearer SG.test-key"},
    )
    assert response.status_code == 202, response.text
    assert violations(response) == []
    # And the mock does catch a broken one.
    del payload["personalizations"]
    broken = httpx.post(
        f"{sendgrid_mock}/v3/mail/send", json=payload, headers={"Authorization": "Bearer x"}
    )
    assert broken.status_code == 400 and violations(broken)


SMS = [
    ("call_reminder_hour", "transactional", {}),
    ("trial_ending_0", "marketing", {"persona": "technical"}),
    ("trial_ending_0", "marketing", {"persona": "business", "locale": "fr"}),
]


@pytest.mark.parametrize(("message", "category", "changes"), SMS)
@pytest.mark.parametrize("sender", ["from_number", "messaging_service_sid"])
def test_twilio_requests_match_the_official_schema(
    twilio_mock: str,
    engine: Engine,
    message: str,
    category: str,
    changes: dict[str, Any],
    sender: str,
) -> None:
    provider = TwilioProvider(
        ACCOUNT,
        "auth-token",
        base_url=twilio_mock,
        status_callback_url="https://trialpath.acme.test/v1/webhooks/twilio",
        max_segments=10,
        timeout=10,
        **{sender: "+15005550006" if sender == "from_number" else SERVICE},
    )
    acts = activities(engine, {"sms": provider})
    req = sample(message, "sms", category, **changes)
    req.recipient.phone = "+33612345678"
    result = ActivityEnvironment().run(acts.send_message, req)
    assert result.status == "sent", result
    assert result.provider_message_id and result.provider_message_id.startswith("SM")


def test_twilio_lookup_matches_the_official_schema(twilio_mock: str) -> None:
    """The reconciliation lookup (list Messages by recipient) is a valid request too.

    Prism validates its own answers as well, and the spec's example page breaks the spec's
    `uri` format: that answer is a 500 whose violations are all about the response. None may
    be about our request."""
    provider = TwilioProvider(
        ACCOUNT, "auth-token", from_number="+15005550006", base_url=twilio_mock, timeout=10
    )
    seen: list[Any] = []
    send = provider._http.request

    def recording(*args: Any, **kwargs: Any) -> Any:
        response = send(*args, **kwargs)
        seen.append(response)
        return response

    provider._http.request = recording
    outgoing = OutgoingMessage(
        key="trial-u1:call_reminder_hour.1/sms",
        channel="sms",
        category="transactional",
        sender="",
        recipient="+33612345678",
        text="Your call starts in one hour.",
    )
    with contextlib.suppress(DeliveryError):
        provider.find(outgoing, datetime.now(UTC) - timedelta(minutes=5))
    assert len(seen) == 1
    if seen[0].status_code != 200:
        problems = json.loads(seen[0].text)["validation"]
        assert problems and all(p["location"][0] == "response" for p in problems), problems


def test_twilio_mock_refuses_what_breaks_the_schema(twilio_mock: str) -> None:
    """The mock is strict: a malformed account SID is refused, and the provider reports it."""
    provider = TwilioProvider(
        "AC-not-a-sid", "token", from_number="+15005550006", base_url=twilio_mock, timeout=10
    )
    outgoing = OutgoingMessage(
        key="k",
        channel="sms",
        category="transactional",
        sender="",
        recipient="+33612345678",
        text="hello",
    )
    with pytest.raises(DeliveryError) as info:
        provider.deliver(outgoing)
    assert info.value.permanent and info.value.status == 422

"""Support alerts through a Slack-compatible incoming webhook: the post (body, signature,
idempotency key) against a receiver on loopback, how answers are classified, the send activity
retrying and settling through it, and the settings that choose it."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.message_io import SendMessageInput, TemplateFailure
from activities.messaging import MessagingActivities
from tests.test_activities import request
from trialpath.delivery import DeliveryError, OutgoingMessage
from trialpath.delivery.outbox import OutboxProvider
from trialpath.delivery.webhook import (
    IDEMPOTENCY_HEADER,
    SECTION_MAX,
    SIGNATURE_HEADER,
    WebhookProvider,
    build_payload,
    message_hash,
    sign,
    temporal_ui_link,
    verify_signature,
)
from trialpath.messages.templating import Product, Renderer
from trialpath.operations.config import PROJECT_ROOT, Settings, SettingsError, get_settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message
from trialpath.operations.ports import free_port
from worker import build_providers

SECRET = "whsec-test-0123456789abcdef"
NOW = 1_796_000_000  # the signing clock of these tests
LINK = temporal_ui_link("https://temporal.acme.test/", "acme prod")
ALERT = {
    "reason": "stalled",
    "user_id": "u1",
    "persona": "technical",
    "urgency": "this_week",
    "days_stalled": 3,
    "cs_task": True,
    "agent": "Camille",
}
KEY = "trial-u1:support_alert.1/support"

MESSAGE = OutgoingMessage(
    key=KEY,
    channel="support",
    category="transactional",
    sender="Acme <hi@acme.test>",
    recipient="support webhook",
    subject="[this week] technical trial u1 stalled for 3 days",
    text="Hi team,\n\nA trial user has stalled: <u1> & co.",
    user_id="u1",
    trial_id="trial-u1",
    message="support_alert",
)


# --- a receiver on loopback ------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang_up: bool = False


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int | None
    """The status the receiver answered, None when it hung up."""

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1 that records every post and answers the scripted
    replies in turn (200 `ok`, as Slack does, once they are used up)."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.posts: list[Post] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                reply = receiver.replies.pop(0) if receiver.replies else Reply()
                answered = None if reply.hang_up else reply.status
                receiver.posts.append(Post(self.path, dict(self.headers.items()), body, answered))
                if reply.hang_up:
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/s3cr3tpath"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def accepted(self) -> list[Post]:
        return [p for p in self.posts if p.answered is not None and 200 <= p.answered < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    # httpx honours proxy variables; the receiver must be reached directly.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    fake = Receiver()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.close()


def provider_for(receiver: Receiver, **options: Any) -> WebhookProvider:
    options.setdefault("secret", SECRET)
    options.setdefault("link", LINK)
    return WebhookProvider(receiver.url, timeout=5, clock=lambda: NOW, **options)


# --- the post --------------------------------------------------------------------------------


def test_the_post_is_a_slack_message_with_subject_text_trial_and_link(receiver: Receiver) -> None:
    receipt = provider_for(receiver).deliver(MESSAGE)

    (post,) = receiver.posts
    assert post.path == "/services/T0/B0/s3cr3tpath"
    assert post.headers["Content-Type"] == "application/json; charset=utf-8"
    assert receipt.provider == "webhook" and receipt.message_id == message_hash(KEY)
    body = post.json
    link = (
        "https://temporal.acme.test/namespaces/acme%20prod/workflows"
        "?query=WorkflowId%3D%22trial-u1%22"
    )
    # `text` holds it all (notifications, receivers without blocks), escaped for mrkdwn.
    assert body["text"] == (
        f"*{MESSAGE.subject}*\n\nHi team,\n\nA trial user has stalled: &lt;u1&gt; &amp; co."
        f"\n\n{link}"
    )
    assert body["blocks"] == [
        {"type": "header", "text": {"type": "plain_text", "text": MESSAGE.subject}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "Hi team,\n\nA trial user has stalled: &lt;u1&gt; &amp; co.",
            },
        },
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": "`trial-u1` · `support_alert`"}],
        },
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open the trial"},
                    "url": link,
                }
            ],
        },
    ]


def test_the_post_is_signed_and_carries_the_idempotency_key(receiver: Receiver) -> None:
    provider_for(receiver).deliver(MESSAGE)

    (post,) = receiver.posts
    signature = post.headers[SIGNATURE_HEADER]
    assert signature.startswith(f"t={NOW},v1=")
    assert verify_signature(SECRET, post.body, signature, now=NOW + 10)
    assert not verify_signature("another secret", post.body, signature, now=NOW)
    assert post.headers[IDEMPOTENCY_HEADER] == hashlib.sha256(KEY.encode()).hexdigest()
    assert "u1" not in post.headers[IDEMPOTENCY_HEADER]


def test_without_a_secret_the_post_is_unsigned(receiver: Receiver) -> None:
    provider_for(receiver, secret="").deliver(MESSAGE)

    (post,) = receiver.posts
    assert SIGNATURE_HEADER not in post.headers
    assert post.headers[IDEMPOTENCY_HEADER] == message_hash(KEY)


def test_without_a_link_or_trial_there_is_no_button() -> None:
    assert "actions" not in [b["type"] for b in build_payload(MESSAGE)["blocks"]]
    assert temporal_ui_link("", "default") == ""


def test_long_alerts_fit_slack_limits_and_text_keeps_everything() -> None:
    line = "x" * 70 + " <&>\n"
    long = replace(MESSAGE, subject="S" * 400, text=line * 1000, trial_id="", message="")

    body = build_payload(long)

    header, *sections = body["blocks"]
    assert len(header["text"]["text"]) == 150 and header["text"]["text"].endswith("…")
    assert 1 < len(sections) <= 10
    for section in sections:
        text = section["text"]["text"]
        assert 0 < len(text) <= SECTION_MAX
        # never cut inside an escape
        assert text.count("&") == text.count("&lt;") + text.count("&gt;") + text.count("&amp;")
    assert sections[-1]["text"]["text"].endswith("…")
    assert len(body["text"]) <= 40_000 and body["text"].startswith("*" + "S" * 400 + "*")

    # One line longer than a section is cut, never inside an escape.
    ampersands = build_payload(replace(MESSAGE, text="&" * 5000))["blocks"][1:-1]
    assert len(ampersands) == 9  # 25 000 characters escaped
    assert "".join(b["text"]["text"] for b in ampersands) == "&amp;" * 5000
    assert all(len(b["text"]["text"]) <= SECTION_MAX for b in ampersands)


# --- the signature ---------------------------------------------------------------------------


def test_verify_signature_refuses_tampering_replays_and_garbage() -> None:
    body = b'{"text":"hi"}'
    good = sign(SECRET, body, NOW)

    assert verify_signature(SECRET, body, good, now=NOW)
    assert verify_signature(SECRET, body, good, now=NOW + 300)
    assert not verify_signature(SECRET, body, good, now=NOW + 301)  # too old: a replay
    assert not verify_signature(SECRET, body, good, now=NOW - 301)  # from the future
    assert verify_signature(SECRET, body, good, tolerance_seconds=3600, now=NOW + 3000)
    assert not verify_signature(SECRET, b'{"text":"hi!"}', good, now=NOW)
    resigned = good.replace(f"t={NOW}", f"t={NOW + 1}")  # a new time on the old digest
    assert not verify_signature(SECRET, body, resigned, now=NOW)
    # Several v1 entries (the sender rotating secrets): one matching is enough.
    assert verify_signature(SECRET, body, f"t={NOW},v1=00ff,{good.split(',')[1]}", now=NOW)
    for garbage in ("", "t=,v1=", f"t={NOW}", "v1=abc", f"t=x{NOW},v1=ab", "nonsense", None):
        assert not verify_signature(SECRET, body, garbage, now=NOW)
    assert not verify_signature("", body, good, now=NOW)


# --- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "permanent", "retry_after"),
    [
        (Reply(500, b"rollup_error"), False, None),
        (Reply(503, b"", {"Retry-After": "30"}), False, 30.0),
        (Reply(429, b"rate_limited", {"Retry-After": "7"}), False, 7.0),
        # Credentials: fixed once for every alert, so retried (the project's rule for 401/403).
        (Reply(403, b"invalid_token"), False, None),
        (Reply(400, b"invalid_payload"), True, None),
        (Reply(404, b"no_service"), True, None),
        (Reply(410, b"channel_is_archived"), True, None),
    ],
)
def test_answers_are_classified(
    receiver: Receiver, reply: Reply, permanent: bool, retry_after: float | None
) -> None:
    receiver.replies = [reply]

    with pytest.raises(DeliveryError) as caught:
        provider_for(receiver).deliver(MESSAGE)

    assert caught.value.permanent is permanent
    assert caught.value.in_doubt is False
    assert caught.value.status == reply.status
    assert caught.value.retry_after == retry_after
    assert reply.body.decode() in str(caught.value)
    assert "s3cr3tpath" not in str(caught.value)


def test_a_closed_port_is_retried_and_certainly_not_posted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    url = f"http://127.0.0.1:{free_port()}/services/T0/B0/s3cr3tpath"

    with pytest.raises(DeliveryError) as caught:
        WebhookProvider(url, timeout=2).deliver(MESSAGE)

    assert caught.value.permanent is False and caught.value.in_doubt is False
    assert caught.value.status is None and "s3cr3tpath" not in str(caught.value)


def test_a_hang_up_after_the_post_leaves_the_outcome_unknown(receiver: Receiver) -> None:
    receiver.replies = [Reply(hang_up=True)]

    with pytest.raises(DeliveryError) as caught:
        provider_for(receiver).deliver(MESSAGE)

    assert caught.value.permanent is False and caught.value.in_doubt is True
    assert len(receiver.posts) == 1


def raising(error: type[httpx.TransportError]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("scripted", request=request)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("error", "in_doubt"),
    [
        (httpx.ReadTimeout, True),  # the post left; the answer did not come
        (httpx.ReadError, True),
        (httpx.RemoteProtocolError, True),
        (httpx.ConnectTimeout, False),  # never connected
        (httpx.ConnectError, False),
        (httpx.PoolTimeout, False),
        (httpx.ProxyError, False),
        (httpx.WriteTimeout, False),  # the body was not all sent
    ],
)
def test_network_failures_are_retried_in_doubt_only_once_the_post_left(
    error: type[httpx.TransportError], in_doubt: bool
) -> None:
    provider = WebhookProvider("https://hooks.example.test/x", transport=raising(error))

    with pytest.raises(DeliveryError) as caught:
        provider.deliver(MESSAGE)

    assert caught.value.permanent is False and caught.value.in_doubt is in_doubt


def test_an_incoming_webhook_cannot_be_asked_what_it_took() -> None:
    with pytest.raises(NotImplementedError):
        WebhookProvider("https://hooks.example.test/x").find(MESSAGE, datetime.now(UTC))


def test_the_webhook_url_stays_out_of_logs(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    provider = provider_for(receiver)
    with caplog.at_level(logging.INFO, logger="httpx"):
        provider.deliver(MESSAGE)

    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines and all("s3cr3tpath" not in line for line in lines)
    assert any("http://127.0.0.1/[REDACTED]" in line for line in lines)
    assert "s3cr3tpath" not in repr(provider)


# --- the send activity -----------------------------------------------------------------------


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return make_engine(settings.effective_database_url)


def activities(
    engine: Engine, settings: Settings, provider: Any, reconcile_after: float = 600
) -> MessagingActivities:
    return MessagingActivities(
        engine,
        Renderer(PROJECT_ROOT / "templates"),
        {
            "email": OutboxProvider(settings.outbox_dir),
            "sms": OutboxProvider(settings.outbox_dir),
            "in_app": OutboxProvider(settings.outbox_dir),
            "support": provider,
        },
        Product("Acme", "https://app.acme.test", "Paris", "help@acme.test"),
        "Acme <hi@acme.test>",
        reconcile_after=timedelta(seconds=reconcile_after),
    )


def alert() -> SendMessageInput:
    return request("support_alert", "support", alert=ALERT)


def run(acts: MessagingActivities) -> Any:
    return ActivityEnvironment().run(acts.send_message, alert())


def rows(engine: Engine) -> list[Message]:
    with Session(engine) as session:
        return list(session.exec(select(Message)).all())


def test_retried_after_500_and_429_the_alert_is_posted_once_and_sent_once(
    receiver: Receiver, engine: Engine, settings: Settings
) -> None:
    receiver.replies = [Reply(500, b"rollup_error"), Reply(429, b"", {"Retry-After": "7"})]
    acts = activities(engine, settings, provider_for(receiver))

    with pytest.raises(ApplicationError) as first:
        run(acts)
    assert first.value.type == "DeliveryUnavailable" and not first.value.non_retryable
    with pytest.raises(ApplicationError) as second:
        run(acts)
    assert second.value.type == "DeliveryUnavailable"
    assert second.value.next_retry_delay == timedelta(seconds=7)
    result = run(acts)

    assert result.status == "sent" and result.provider_message_id == message_hash(KEY)
    assert len(receiver.posts) == 3 and len(receiver.accepted) == 1
    assert {p.headers[IDEMPOTENCY_HEADER] for p in receiver.posts} == {message_hash(KEY)}
    assert len({p.body for p in receiver.posts}) == 1  # the same alert each time
    (row,) = rows(engine)
    assert (row.key, row.status, row.attempts, row.provider) == (KEY, "sent", 3, "webhook")
    assert row.recipient == "support webhook"
    body = receiver.accepted[0].json
    assert body["blocks"][0]["text"]["text"] == row.subject
    assert "trial u1 stalled for 3 days" in row.subject


def test_an_activity_retried_after_the_post_succeeded_does_not_post_again(
    receiver: Receiver, engine: Engine, settings: Settings
) -> None:
    acts = activities(engine, settings, provider_for(receiver))

    first = run(acts)
    again = run(acts)

    assert first == again and first.status == "sent"
    assert len(receiver.posts) == 1
    assert [r.status for r in rows(engine)] == ["sent"]


def test_a_404_marks_the_alert_failed_without_retrying(
    receiver: Receiver, engine: Engine, settings: Settings
) -> None:
    receiver.replies = [Reply(404, b"no_service")]
    acts = activities(engine, settings, provider_for(receiver))

    with pytest.raises(ApplicationError) as caught:
        run(acts)

    assert caught.value.type == "DeliveryRejected" and caught.value.non_retryable
    (row,) = rows(engine)
    assert row.status == "failed" and row.error is not None and "404" in row.error
    assert "no_service" in row.error
    # Should the activity run again anyway, the failed row is final: no second post.
    assert run(acts).status == "failed"
    assert len(receiver.posts) == 1


def test_an_unknown_outcome_waits_then_posts_again_with_the_same_key(
    engine: Engine, settings: Settings
) -> None:
    posted: list[httpx.Request] = []

    def lost_answer_then_ok(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        if len(posted) == 1:
            raise httpx.ReadTimeout("scripted", request=request)
        return httpx.Response(200, text="ok")

    provider = WebhookProvider(
        "https://hooks.example.test/x", transport=httpx.MockTransport(lost_answer_then_ok)
    )
    acts = activities(engine, settings, provider)

    with pytest.raises(ApplicationError) as caught:
        run(acts)
    assert caught.value.type == "DeliveryInDoubt"
    assert rows(engine)[0].status == "sending"
    # Within the reconcile window nothing is posted: there is nobody to ask.
    with pytest.raises(ApplicationError) as waiting:
        run(acts)
    assert waiting.value.type == "DeliveryInDoubt" and waiting.value.next_retry_delay
    assert len(posted) == 1
    # After it: posted again (at least once), with the key a deduplicating receiver drops.
    assert run(activities(engine, settings, provider, reconcile_after=0)).status == "sent"
    assert len(posted) == 2
    assert posted[0].headers[IDEMPOTENCY_HEADER] == posted[1].headers[IDEMPOTENCY_HEADER]
    assert posted[0].content == posted[1].content


def test_a_refused_template_failure_alert_is_recorded_without_failing_the_trial(
    receiver: Receiver, engine: Engine, settings: Settings
) -> None:
    receiver.replies = [Reply(410, b"channel_is_archived")]
    acts = activities(engine, settings, provider_for(receiver))
    failure = TemplateFailure(
        workflow_id="trial-u1",
        user_id="u1",
        occurrence="welcome",
        message="welcome",
        channel="email",
        error="templates/email/welcome.technical.en.html.j2: 'frist_name' is undefined",
        attempt=1,
        retry_at=None,
        gave_up="the retries are used up",
    )

    result = ActivityEnvironment().run(acts.alert_template_failure, failure)

    assert result.status == "failed" and result.error and "channel_is_archived" in result.error
    (post,) = receiver.posts
    assert post.json["blocks"][0]["text"]["text"] == "Template error: welcome (email) not sent"
    assert "frist_name" in post.json["text"]
    assert ActivityEnvironment().run(acts.alert_template_failure, failure).status == "failed"
    assert len(receiver.posts) == 1


# --- settings --------------------------------------------------------------------------------


def settings_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(f"TRIALPATH_{name}", value)
    get_settings.cache_clear()
    try:
        return get_settings()
    finally:
        get_settings.cache_clear()


def test_webhook_without_a_url_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from(monkeypatch, SUPPORT_PROVIDER="webhook")

    message = str(caught.value)
    assert message.startswith("invalid settings: TRIALPATH_SUPPORT_WEBHOOK_URL: ")
    assert "needed when TRIALPATH_SUPPORT_PROVIDER is webhook" in message


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://hooks.example.test/services/T/B/leakme", "must be https://"),
        ("ftp://hooks.example.test/leakme", "must be an https:// URL"),
        ("hooks.example.test/leakme", "must be an https:// URL"),
        ("https://user:leakme@hooks.example.test/x", "user name or password"),
        ("https://hooks.example.test:leakme/x", "not a URL"),
    ],
)
def test_a_webhook_url_must_be_https_and_is_never_repeated_in_the_error(
    monkeypatch: pytest.MonkeyPatch, url: str, needle: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from(monkeypatch, SUPPORT_PROVIDER="webhook", SUPPORT_WEBHOOK_URL=url)

    assert str(caught.value).startswith("invalid settings: TRIALPATH_SUPPORT_WEBHOOK_URL: ")
    assert needle in str(caught.value) and "leakme" not in str(caught.value)


def test_a_temporal_ui_url_must_be_a_web_address(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match=r"TRIALPATH_TEMPORAL_UI_URL: .*http:// or https://"):
        settings_from(monkeypatch, TEMPORAL_UI_URL="cloud.temporal.io")


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T000/B000/XXXX",
        "http://127.0.0.1:9000/hook",
        "http://[::1]:9000/hook",
        "http://localhost:9000/hook",
    ],
)
def test_https_or_loopback_http_is_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    settings = settings_from(
        monkeypatch, SUPPORT_PROVIDER="webhook", SUPPORT_WEBHOOK_URL=f"  {url}  "
    )

    assert settings.support_webhook_url.get_secret_value() == url
    assert url not in repr(settings)


def test_the_worker_posts_support_alerts_to_the_webhook_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from(
        monkeypatch,
        SUPPORT_PROVIDER="webhook",
        SUPPORT_WEBHOOK_URL="https://hooks.example.test/services/T/B/X",
        SUPPORT_WEBHOOK_SECRET=SECRET,
        TEMPORAL_UI_URL="https://cloud.temporal.io/",
        TEMPORAL_NAMESPACE="acme.a1b2c",
    )

    providers = build_providers(settings)

    support = providers["support"]
    assert isinstance(support, WebhookProvider) and support.secret == SECRET
    assert support.link == (
        "https://cloud.temporal.io/namespaces/acme.a1b2c/workflows"
        "?query=WorkflowId%3D%22{trial_id}%22"
    )
    assert {providers[c].name for c in ("email", "sms")} == {"outbox"}


@pytest.mark.parametrize("name", ["outbox", "sendgrid", "smtp"])
def test_email_providers_still_serve_support_without_a_webhook_url(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    settings = settings_from(monkeypatch, SUPPORT_PROVIDER=name, SENDGRID_API_KEY="SG.x")

    assert settings.support_provider == name
    assert build_providers(settings)["support"].name == name

"""The SendGrid provider against a local HTTP server, and Event Webhook verification/parsing."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trialpath.delivery import Attachment, DeliveryError, OutgoingMessage, Receipt
from trialpath.delivery.sendgrid import (
    SendGridProvider,
    build_mail_payload,
    parse_sendgrid_events,
    verify_sendgrid_signature,
)

API_KEY = "SG.test-key.not-real"
UNSUBSCRIBE = {
    "List-Unsubscribe": "<https://app.example.com/u/tok123>, <mailto:unsub@example.com>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}
INVITE = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n\xe2\x9c\x93"

MESSAGE = OutgoingMessage(
    key="trial-u42:welcome:email",
    channel="email",
    category="marketing",
    sender="Trialpath Team <hello@example.com>",
    recipient="Ada Lovelace <ada@example.org>",
    subject="Welcome to Example",
    html="<p>Hello Ada</p>",
    text="Hello Ada",
    headers=UNSUBSCRIBE,
    attachments=(Attachment("call.ics", "text/calendar; method=REQUEST", INVITE),),
    user_id="u42",
    trial_id="trial-u42",
    message="welcome",
    persona="technical",
)


# --- the Mail Send payload -------------------------------------------------------------------


def test_payload_addresses_subject_and_personalization() -> None:
    payload = build_mail_payload(MESSAGE, sandbox=False)

    assert payload["from"] == {"name": "Trialpath Team", "email": "hello@example.com"}
    assert len(payload["personalizations"]) == 1
    assert payload["personalizations"][0]["to"] == [
        {"name": "Ada Lovelace", "email": "ada@example.org"}
    ]
    # Custom args travel on the personalization: the official schema wants the top-level
    # `custom_args` to be a string.
    assert "custom_args" not in payload
    assert payload["subject"] == "Welcome to Example"


def test_payload_bare_addresses_have_no_name() -> None:
    message = replace(MESSAGE, sender="hello@example.com", recipient="ada@example.org")
    payload = build_mail_payload(message, sandbox=False)

    assert payload["from"] == {"email": "hello@example.com"}
    assert payload["personalizations"][0]["to"] == [{"email": "ada@example.org"}]


def test_payload_refuses_a_recipient_that_is_not_an_address() -> None:
    with pytest.raises(ValueError, match="recipient"):
        build_mail_payload(replace(MESSAGE, recipient="Ada Lovelace"), sandbox=False)


def test_payload_categories_are_step_persona_and_category() -> None:
    assert build_mail_payload(MESSAGE, sandbox=False)["categories"] == [
        "welcome",
        "technical",
        "marketing",
    ]


def test_payload_categories_are_unique_non_empty_and_default_persona() -> None:
    message = replace(MESSAGE, message="", persona=None, category="transactional")
    assert build_mail_payload(message, sandbox=False)["categories"] == ["default", "transactional"]

    same = replace(MESSAGE, message="marketing", persona="marketing", category="marketing")
    assert build_mail_payload(same, sandbox=False)["categories"] == ["marketing"]


def test_payload_custom_args_carry_key_trial_and_user_as_strings() -> None:
    args = build_mail_payload(MESSAGE, sandbox=False)["personalizations"][0]["custom_args"]

    assert args == {"trialpath_key": MESSAGE.key, "trial_id": "trial-u42", "user_id": "u42"}
    assert all(isinstance(value, str) for value in args.values())


def test_payload_leaves_out_empty_custom_args() -> None:
    message = replace(MESSAGE, trial_id="", user_id="")
    assert build_mail_payload(message, sandbox=False)["personalizations"][0]["custom_args"] == {
        "trialpath_key": MESSAGE.key
    }


def test_payload_keeps_list_unsubscribe_headers() -> None:
    assert build_mail_payload(MESSAGE, sandbox=False)["headers"] == UNSUBSCRIBE


def test_payload_transactional_without_headers_has_none() -> None:
    message = replace(MESSAGE, category="transactional", headers={})
    assert "headers" not in build_mail_payload(message, sandbox=False)


def test_payload_plain_text_comes_before_html() -> None:
    assert build_mail_payload(MESSAGE, sandbox=False)["content"] == [
        {"type": "text/plain", "value": "Hello Ada"},
        {"type": "text/html", "value": "<p>Hello Ada</p>"},
    ]


def test_payload_skips_empty_parts_but_keeps_one() -> None:
    html_only = build_mail_payload(replace(MESSAGE, text=""), sandbox=False)
    assert html_only["content"] == [{"type": "text/html", "value": "<p>Hello Ada</p>"}]

    text_only = build_mail_payload(replace(MESSAGE, html=""), sandbox=False)
    assert text_only["content"] == [{"type": "text/plain", "value": "Hello Ada"}]

    empty = build_mail_payload(replace(MESSAGE, html="", text=""), sandbox=False)
    assert len(empty["content"]) == 1
    assert empty["content"][0]["value"]


def test_payload_attachment_round_trips_through_base64() -> None:
    (attachment,) = build_mail_payload(MESSAGE, sandbox=False)["attachments"]

    assert attachment["filename"] == "call.ics"
    assert attachment["type"] == "text/calendar; method=REQUEST"
    assert attachment["disposition"] == "attachment"
    assert base64.b64decode(attachment["content"], validate=True) == INVITE


def test_payload_attachments_keep_their_order() -> None:
    files = tuple(Attachment(f"{n}.txt", "text/plain", n.encode()) for n in ("a", "b", "c"))
    payload = build_mail_payload(replace(MESSAGE, attachments=files), sandbox=False)

    assert [item["filename"] for item in payload["attachments"]] == ["a.txt", "b.txt", "c.txt"]
    assert "attachments" not in build_mail_payload(replace(MESSAGE, attachments=()), sandbox=False)


def test_payload_sandbox_flag() -> None:
    on = build_mail_payload(MESSAGE, sandbox=True)
    off = build_mail_payload(MESSAGE, sandbox=False)

    assert on["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert "mail_settings" not in off


def test_payload_is_json_serializable() -> None:
    assert json.loads(json.dumps(build_mail_payload(MESSAGE, sandbox=True)))["subject"]


# --- deliver against a local server ----------------------------------------------------------


@dataclass
class Reply:
    status: int = 202
    headers: dict[str, str] = field(default_factory=lambda: {"X-Message-Id": "W86EgYT6SQKk0l"})
    body: bytes = b""
    delay: float = 0.0
    hang_up: bool = False


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeSendGrid:
    """A ThreadingHTTPServer on 127.0.0.1 that records requests and answers with `reply`."""

    def __init__(self) -> None:
        self.reply = Reply()
        self.requests: list[Recorded] = []
        self.stopping = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                fake.requests.append(
                    Recorded("POST", self.path, dict(self.headers.items()), self.rfile.read(length))
                )
                reply = fake.reply
                if reply.delay and fake.stopping.wait(reply.delay):
                    return
                if reply.hang_up:
                    self.close_connection = True
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def sendgrid_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSendGrid]:
    # urllib honours proxy variables; the fake server must be reached directly.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    fake = FakeSendGrid()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.close()


def test_deliver_posts_mail_send_and_returns_message_id(sendgrid_server: FakeSendGrid) -> None:
    provider = SendGridProvider(API_KEY, sendgrid_server.url + "/", timeout=5)

    receipt = provider.deliver(MESSAGE)

    assert receipt == Receipt(provider="sendgrid", message_id="W86EgYT6SQKk0l")
    (request,) = sendgrid_server.requests
    assert request.method == "POST"
    assert request.path == "/v3/mail/send"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == build_mail_payload(MESSAGE, sandbox=False)


def test_deliver_in_sandbox_sends_the_sandbox_flag(sendgrid_server: FakeSendGrid) -> None:
    SendGridProvider(API_KEY, sendgrid_server.url, sandbox=True, timeout=5).deliver(MESSAGE)

    body = json.loads(sendgrid_server.requests[0].body)
    assert body["mail_settings"]["sandbox_mode"]["enable"] is True


def test_deliver_without_message_id_header_falls_back_to_key(
    sendgrid_server: FakeSendGrid,
) -> None:
    sendgrid_server.reply = Reply(headers={})

    receipt = SendGridProvider(API_KEY, sendgrid_server.url, timeout=5).deliver(MESSAGE)

    assert receipt.message_id == MESSAGE.key


def test_deliver_400_is_permanent_with_sendgrid_message(sendgrid_server: FakeSendGrid) -> None:
    error_body = {
        "errors": [
            {
                "message": "The from address does not match a verified Sender Identity",
                "field": "from",
                "help": None,
            }
        ]
    }
    sendgrid_server.reply = Reply(
        status=400,
        headers={"Content-Type": "application/json"},
        body=json.dumps(error_body).encode(),
    )

    with pytest.raises(DeliveryError) as caught:
        SendGridProvider(API_KEY, sendgrid_server.url, timeout=5).deliver(MESSAGE)

    assert caught.value.permanent is True
    assert caught.value.status == 400
    assert caught.value.in_doubt is False
    assert str(caught.value) == (
        "SendGrid refused the message (400): "
        "The from address does not match a verified Sender Identity"
    )


def test_deliver_429_is_transient_with_retry_after(sendgrid_server: FakeSendGrid) -> None:
    sendgrid_server.reply = Reply(
        status=429, headers={"Retry-After": "7"}, body=b'{"errors":[{"message":"too many"}]}'
    )

    with pytest.raises(DeliveryError) as caught:
        SendGridProvider(API_KEY, sendgrid_server.url, timeout=5).deliver(MESSAGE)

    assert caught.value.permanent is False
    assert caught.value.retry_after == 7
    assert caught.value.status == 429
    assert caught.value.in_doubt is False


def test_deliver_503_is_transient(sendgrid_server: FakeSendGrid) -> None:
    sendgrid_server.reply = Reply(status=503, headers={}, body=b"upstream unavailable")

    with pytest.raises(DeliveryError) as caught:
        SendGridProvider(API_KEY, sendgrid_server.url, timeout=5).deliver(MESSAGE)

    assert caught.value.permanent is False
    assert caught.value.status == 503
    assert caught.value.retry_after is None
    assert "upstream unavailable" in str(caught.value)


def test_deliver_timeout_is_in_doubt(sendgrid_server: FakeSendGrid) -> None:
    sendgrid_server.reply = Reply(delay=5)

    with pytest.raises(DeliveryError) as caught:
        SendGridProvider(API_KEY, sendgrid_server.url, timeout=0.3).deliver(MESSAGE)

    assert caught.value.permanent is False
    assert caught.value.in_doubt is True
    assert len(sendgrid_server.requests) == 1


def test_deliver_hang_up_after_the_request_is_in_doubt(sendgrid_server: FakeSendGrid) -> None:
    sendgrid_server.reply = Reply(hang_up=True)

    with pytest.raises(DeliveryError) as caught:
        SendGridProvider(API_KEY, sendgrid_server.url, timeout=5).deliver(MESSAGE)

    assert caught.value.permanent is False
    assert caught.value.in_doubt is True
    assert len(sendgrid_server.requests) == 1


def test_deliver_to_a_closed_port_is_transient_not_in_doubt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(DeliveryError) as caught:
        SendGridProvider(API_KEY, f"http://127.0.0.1:{port}", timeout=2).deliver(MESSAGE)

    assert caught.value.permanent is False
    assert caught.value.in_doubt is False
    assert caught.value.status is None


def test_deliver_refuses_an_unsendable_message_without_calling(
    sendgrid_server: FakeSendGrid,
) -> None:
    with pytest.raises(DeliveryError) as caught:
        SendGridProvider(API_KEY, sendgrid_server.url, timeout=5).deliver(
            replace(MESSAGE, recipient="not an address")
        )

    assert caught.value.permanent is True
    assert sendgrid_server.requests == []


def test_find_defers_to_webhook_records() -> None:
    provider = SendGridProvider(API_KEY)
    with pytest.raises(NotImplementedError, match="Event Webhook"):
        provider.find(MESSAGE, datetime(2026, 1, 1, tzinfo=UTC))


# --- Event Webhook signature -----------------------------------------------------------------


def _key_pair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # SendGrid shows the verification key as base64 DER, without PEM armour.
    return private, base64.b64encode(der).decode("ascii")


def _sign(private: ec.EllipticCurvePrivateKey, timestamp: str, payload: bytes) -> str:
    signature = private.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode("ascii")


WEBHOOK_BODY = (
    b'[{"email":"ada@example.org","timestamp":1764061200,"event":"delivered",'
    b'"sg_event_id":"ZGVsaXZlcmVk","sg_message_id":"W86EgYT6SQKk0l.filter0001.16648.5515E0B88.0",'
    b'"trialpath_key":"trial-u42:welcome:email"}]\r\n'
)
TIMESTAMP = "1764061230"


@pytest.fixture(scope="module")
def keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    return _key_pair()


def test_signature_good(keys: tuple[ec.EllipticCurvePrivateKey, str]) -> None:
    private, public = keys
    signature = _sign(private, TIMESTAMP, WEBHOOK_BODY)

    assert verify_sendgrid_signature(public, WEBHOOK_BODY, signature, TIMESTAMP) is True


def test_signature_accepts_a_key_pasted_as_pem(
    keys: tuple[ec.EllipticCurvePrivateKey, str],
) -> None:
    private, _ = keys
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    assert verify_sendgrid_signature(
        pem.decode(), WEBHOOK_BODY, _sign(private, TIMESTAMP, WEBHOOK_BODY), TIMESTAMP
    )


def test_signature_changed_payload(keys: tuple[ec.EllipticCurvePrivateKey, str]) -> None:
    private, public = keys
    signature = _sign(private, TIMESTAMP, WEBHOOK_BODY)
    changed = WEBHOOK_BODY.replace(b"delivered", b"bounce")

    assert verify_sendgrid_signature(public, changed, signature, TIMESTAMP) is False


def test_signature_other_key(keys: tuple[ec.EllipticCurvePrivateKey, str]) -> None:
    private, _ = keys
    _, other_public = _key_pair()
    signature = _sign(private, TIMESTAMP, WEBHOOK_BODY)

    assert verify_sendgrid_signature(other_public, WEBHOOK_BODY, signature, TIMESTAMP) is False


def test_signature_wrong_timestamp(keys: tuple[ec.EllipticCurvePrivateKey, str]) -> None:
    private, public = keys
    signature = _sign(private, TIMESTAMP, WEBHOOK_BODY)

    assert verify_sendgrid_signature(public, WEBHOOK_BODY, signature, "1764061231") is False


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "!!!",
        "abc",
        "not base64 at all",
        "é",
        base64.b64encode(b"\x30\x06\x02\x01\x01").decode(),
    ],
)
def test_signature_garbage_is_false(
    keys: tuple[ec.EllipticCurvePrivateKey, str], signature: str
) -> None:
    _, public = keys
    assert verify_sendgrid_signature(public, WEBHOOK_BODY, signature, TIMESTAMP) is False


def test_signature_with_junk_added_is_false(keys: tuple[ec.EllipticCurvePrivateKey, str]) -> None:
    # base64.b64decode(validate=False), as the library uses it, would drop the "!".
    private, public = keys
    signature = _sign(private, TIMESTAMP, WEBHOOK_BODY)

    assert verify_sendgrid_signature(public, WEBHOOK_BODY, "!" + signature, TIMESTAMP) is False


@pytest.mark.parametrize("public_key", ["", "   ", "garbage", "MFkwEwYHKoZIzj0CAQYI", "é"])
def test_signature_garbage_key_is_false(
    keys: tuple[ec.EllipticCurvePrivateKey, str], public_key: str
) -> None:
    private, _ = keys
    signature = _sign(private, TIMESTAMP, WEBHOOK_BODY)

    assert verify_sendgrid_signature(public_key, WEBHOOK_BODY, signature, TIMESTAMP) is False


def test_signature_missing_timestamp_or_non_utf8_body(
    keys: tuple[ec.EllipticCurvePrivateKey, str],
) -> None:
    private, public = keys
    assert not verify_sendgrid_signature(public, WEBHOOK_BODY, _sign(private, "", WEBHOOK_BODY), "")

    body = b"\xff\xfe not utf-8"
    assert not verify_sendgrid_signature(public, body, _sign(private, TIMESTAMP, body), TIMESTAMP)


def test_signature_max_age(keys: tuple[ec.EllipticCurvePrivateKey, str]) -> None:
    private, public = keys
    signature = _sign(private, TIMESTAMP, WEBHOOK_BODY)
    signed_at = datetime.fromtimestamp(int(TIMESTAMP), UTC)

    def check(now: datetime, timestamp: str = TIMESTAMP) -> bool:
        return verify_sendgrid_signature(
            public, WEBHOOK_BODY, signature, timestamp, max_age_seconds=300, now=now
        )

    assert check(signed_at.replace(minute=signed_at.minute + 4))
    assert not check(signed_at.replace(minute=signed_at.minute + 6))
    assert not check(signed_at, timestamp="yesterday")
    # Without a tolerance, an old but correctly signed request still verifies.
    assert verify_sendgrid_signature(public, WEBHOOK_BODY, signature, TIMESTAMP)


# --- Event Webhook parsing -------------------------------------------------------------------

KEY = "trial-u42:welcome:email"
EVENTS: list[dict[str, Any]] = [
    {
        "email": "ada@example.org",
        "timestamp": 1764061200,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": "processed",
        "category": ["welcome", "technical", "marketing"],
        "sg_event_id": "rbtnWrG1DVDGGGFHFyun0A",
        "sg_message_id": "W86EgYT6SQKk0l.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
        "trialpath_key": KEY,
        "trial_id": "trial-u42",
        "user_id": "u42",
    },
    {
        "email": "ada@example.org",
        "timestamp": 1764061205,
        "event": "delivered",
        "ip": "168.1.1.1",
        "response": "250 OK",
        "sg_event_id": "ZGVsaXZlcmVk",
        "sg_message_id": "W86EgYT6SQKk0l.filter0001.16648.5515E0B88.0",
        "trialpath_key": KEY,
    },
    {
        "email": "bounced@example.net",
        "timestamp": 1764061300,
        "event": "bounce",
        "type": "bounce",
        "status": "5.1.1",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
        "sg_event_id": "Ym91bmNl",
        "sg_message_id": "Xb0uNcEdMsG.filter0002.1.2.0",
        "trialpath_key": "trial-u7:welcome:email",
    },
    {
        "email": "ada@example.org",
        "timestamp": 1764064800,
        "event": "open",
        "sg_machine_open": False,
        "useragent": "Mozilla/5.0",
        "sg_event_id": "b3Blbg",
        "sg_message_id": "W86EgYT6SQKk0l.filter0001.16648.5515E0B88.0",
        "trialpath_key": KEY,
    },
    {
        "email": "ada@example.org",
        "timestamp": 1764064860,
        "event": "click",
        "url": "https://app.example.com/start?utm_source=email",
        "url_offset": {"index": 0, "type": "html"},
        "sg_event_id": "Y2xpY2s",
        "sg_message_id": "W86EgYT6SQKk0l.filter0001.16648.5515E0B88.0",
        "trialpath_key": KEY,
    },
    {
        "email": "ada@example.org",
        "timestamp": 1764068400,
        "event": "spamreport",
        "sg_event_id": "c3BhbXJlcG9ydA",
        "sg_message_id": "W86EgYT6SQKk0l.filter0001.16648.5515E0B88.0",
    },
    {
        "email": "ada@example.org",
        "timestamp": 1764072000,
        "event": "unsubscribe",
        "sg_event_id": "dW5zdWJzY3JpYmU",
        "sg_message_id": "W86EgYT6SQKk0l",
        "trialpath_key": KEY,
    },
    {
        "email": "ada@example.org",
        "timestamp": 1764072060,
        "event": "group_unsubscribe",
        "asm_group_id": 42,
        "sg_message_id": "W86EgYT6SQKk0l.filter0001.16648.5515E0B88.0",
    },
]


def test_parse_maps_every_event() -> None:
    events = parse_sendgrid_events(json.dumps(EVENTS).encode())

    assert [event.type for event in events] == [
        "processed",
        "delivered",
        "bounce",
        "open",
        "click",
        "spamreport",
        "unsubscribe",
        "group_unsubscribe",
    ]
    assert all(event.provider == "sendgrid" for event in events)
    assert [event.payload for event in events] == EVENTS


def test_parse_delivered_fields() -> None:
    delivered = parse_sendgrid_events(json.dumps(EVENTS).encode())[1]

    assert delivered.id == "sendgrid:ZGVsaXZlcmVk"
    assert delivered.at == datetime(2025, 11, 25, 9, 0, 5, tzinfo=UTC)
    assert delivered.message_key == KEY
    assert delivered.provider_message_id == "W86EgYT6SQKk0l"
    assert delivered.recipient == "ada@example.org"


def test_parse_keeps_bounce_reason_and_click_url() -> None:
    events = parse_sendgrid_events(json.dumps(EVENTS).encode())
    bounce, click = events[2], events[4]

    assert bounce.message_key == "trial-u7:welcome:email"
    assert bounce.provider_message_id == "Xb0uNcEdMsG"
    assert bounce.recipient == "bounced@example.net"
    assert bounce.payload["reason"].startswith("550 5.1.1")
    assert click.payload["url"] == "https://app.example.com/start?utm_source=email"


def test_parse_without_custom_arg_or_suffix() -> None:
    events = parse_sendgrid_events(json.dumps(EVENTS).encode())
    spam, unsubscribe = events[5], events[6]

    assert spam.message_key is None
    assert spam.provider_message_id == "W86EgYT6SQKk0l"
    assert unsubscribe.provider_message_id == "W86EgYT6SQKk0l"


def test_parse_derives_a_stable_id_without_sg_event_id() -> None:
    group = EVENTS[7]
    first = parse_sendgrid_events(json.dumps([group]).encode())[0]
    reordered = dict(reversed(list(group.items())))
    again = parse_sendgrid_events(json.dumps([reordered], indent=2).encode())[0]
    other = parse_sendgrid_events(json.dumps([{**group, "timestamp": 1764072061}]).encode())[0]

    assert first.id.startswith("sendgrid:")
    assert first.id == again.id
    assert first.id != other.id
    assert len(first.id) <= 200


def test_parse_event_without_message_id() -> None:
    (event,) = parse_sendgrid_events(
        b'[{"email":"a@example.org","timestamp":"1764072000","event":"deferred","sg_event_id":"x"}]'
    )

    assert event.provider_message_id is None
    assert event.message_key is None
    assert event.at == datetime(2025, 11, 25, 12, 0, tzinfo=UTC)


def test_parse_empty_array() -> None:
    assert parse_sendgrid_events(b"[]") == []


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"", "not JSON"),
        (b"not json", "not JSON"),
        (b"\xff\xfe[]", "not JSON"),
        (b'{"event":"delivered","timestamp":1}', "array"),
        (b'"delivered"', "array"),
        (b'[{"event":"delivered","timestamp":1}, 3]', "#1 is not a JSON object"),
        (b'[{"timestamp":1764072000}]', "`event`"),
        (b'[{"event":"","timestamp":1764072000}]', "`event`"),
        (b'[{"event":"delivered"}]', "`timestamp`"),
        (b'[{"event":"delivered","timestamp":true}]', "`timestamp`"),
        (b'[{"event":"delivered","timestamp":"soon"}]', "`timestamp`"),
        (b'[{"event":"delivered","timestamp":1e300}]', "`timestamp`"),
    ],
)
def test_parse_bad_bodies(body: bytes, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_sendgrid_events(body)

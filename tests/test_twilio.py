"""The Twilio provider against a local HTTP server, SMS segment counting, and webhooks."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from twilio.request_validator import RequestValidator

from trialpath.delivery import DeliveryError, OutgoingMessage
from trialpath.delivery.twilio import (
    TwilioProvider,
    normalise_phone,
    parse_twilio_callback,
    sms_segments,
    verify_twilio_signature,
)

ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
SERVICE_SID = "MG" + "b2" * 16
FROM_NUMBER = "+16502530000"
USER_PHONE = "+33612345678"
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
CALLBACK = "https://trialpath.example/v1/webhooks/twilio"


# --- a local stand-in for api.twilio.com ------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    authorization: str


@dataclass
class Answer:
    status: int = 201
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    """Close the connection after reading the request, without any response."""


def new_sid(prefix: str = "SM") -> str:
    return prefix + uuid.uuid4().hex


def message_json(
    *,
    to: str = USER_PHONE,
    body: str = "Welcome to Acme",
    sid: str | None = None,
    created: datetime | None = None,
    from_: str | None = None,
    service: str | None = SERVICE_SID,
    direction: str = "outbound-api",
    status: str = "accepted",
) -> dict[str, object]:
    sid = sid or new_sid()
    stamp = format_datetime(created or datetime.now(UTC), usegmt=True)
    return {
        "account_sid": ACCOUNT_SID,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": stamp,
        "date_sent": None,
        "date_updated": stamp,
        "direction": direction,
        "error_code": None,
        "error_message": None,
        "from": from_,
        "messaging_service_sid": service,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "subresource_uris": {
            "media": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media.json"
        },
        "to": to,
        "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
    }


def created_answer(seen: Seen) -> Answer:
    form = {name: values[0] for name, values in seen.form.items()}
    return Answer(
        201,
        message_json(
            to=form["To"],
            body=form["Body"],
            from_=form.get("From"),
            service=form.get("MessagingServiceSid"),
        ),
    )


class FakeTwilio:
    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.answer: Callable[[Seen], Answer] = created_answer
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                url = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    url.path,
                    parse_qs(url.query),
                    parse_qs(raw),
                    self.headers.get("Authorization", ""),
                )
                fake.requests.append(seen)
                answer = fake.answer(seen)
                if answer.drop:
                    self.close_connection = True
                    return
                time.sleep(answer.delay)
                data = json.dumps(answer.body).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout tests)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def posts(self) -> list[dict[str, str]]:
        return [
            {name: values[0] for name, values in seen.form.items()}
            for seen in self.requests
            if seen.method == "POST"
        ]


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    server = FakeTwilio()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def provider(
    base_url: str,
    *,
    messaging_service_sid: str = SERVICE_SID,
    from_number: str = "",
    status_callback_url: str = CALLBACK,
    max_segments: int = 3,
    timeout: float = 5.0,
) -> TwilioProvider:
    return TwilioProvider(
        ACCOUNT_SID,
        AUTH_TOKEN,
        messaging_service_sid=messaging_service_sid,
        from_number=from_number,
        base_url=base_url,
        status_callback_url=status_callback_url,
        max_segments=max_segments,
        timeout=timeout,
    )


def sms(text: str = "Welcome to Acme", recipient: str = USER_PHONE) -> OutgoingMessage:
    return OutgoingMessage(
        key="trial:u-42/welcome/sms",
        channel="sms",
        category="onboarding",
        sender="Acme",
        recipient=recipient,
        text=text,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- segments -----------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "segments"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3)])
def test_plain_ascii_segments(length: int, segments: int) -> None:
    assert sms_segments("a" * length) == ("GSM-7", segments)


def test_empty_text_is_one_gsm_segment() -> None:
    assert sms_segments("") == ("GSM-7", 1)


def test_extension_characters_count_double() -> None:
    assert sms_segments("€" * 80) == ("GSM-7", 1)
    assert sms_segments("€" * 81) == ("GSM-7", 2)
    assert sms_segments("a" * 152 + "{}[]") == ("GSM-7", 1)
    assert sms_segments("a" * 153 + "{}[]") == ("GSM-7", 2)
    assert sms_segments("^{}\\[~]|€\f")[0] == "GSM-7"


def test_escape_pair_is_not_split_across_parts() -> None:
    # 306 septets would fit in 2 × 153, but the € (ESC + e) cannot straddle the boundary.
    assert sms_segments("a" * 152 + "€" + "a" * 151) == ("GSM-7", 2)
    assert sms_segments("a" * 152 + "€" + "a" * 152) == ("GSM-7", 3)


def test_gsm_accents_and_greek() -> None:
    assert sms_segments("é" * 160) == ("GSM-7", 1)
    assert sms_segments("Votre essai a démarré, où ? ¿ΔΦΓΛΩΠΨΣΘΞ?")[0] == "GSM-7"
    # The table has ù and Ç, not ú or ç.
    assert sms_segments("Ñandú")[0] == "UCS-2"
    assert sms_segments("ça")[0] == "UCS-2"


@pytest.mark.parametrize(("length", "segments"), [(70, 1), (71, 2), (134, 2), (135, 3)])
def test_ucs2_segments(length: int, segments: int) -> None:
    assert sms_segments("ê" * length) == ("UCS-2", segments)


def test_one_non_gsm_character_switches_the_whole_text_to_ucs2() -> None:
    assert sms_segments("a" * 69 + "ê") == ("UCS-2", 1)
    assert sms_segments("a" * 70 + "ê") == ("UCS-2", 2)


def test_emoji_count_as_two_utf16_units() -> None:
    assert sms_segments("😀" * 35) == ("UCS-2", 1)
    assert sms_segments("😀" * 36) == ("UCS-2", 2)
    # 134 units would fit in 2 × 67, but the surrogate pair cannot straddle the boundary.
    assert sms_segments("ê" * 66 + "😀" + "ê" * 65) == ("UCS-2", 2)
    assert sms_segments("ê" * 66 + "😀" + "ê" * 66) == ("UCS-2", 3)


def test_french_typographic_apostrophe_is_ucs2() -> None:
    assert sms_segments("C'est parti") == ("GSM-7", 1)
    assert sms_segments("C’est parti") == ("UCS-2", 1)


# --- phone numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "e164"),
    [
        ("+33 6 12 34 56 78", "+33612345678"),
        ("+33612345678", "+33612345678"),
        (" +33 (0)1 42 68 53 00 ", "+33142685300"),
        ("+1 (650) 253-0000", "+16502530000"),
        ("+1.650.253.0000", "+16502530000"),
    ],
)
def test_valid_numbers_are_normalised(number: str, e164: str) -> None:
    assert normalise_phone(number) == e164


@pytest.mark.parametrize(
    "number",
    [
        "0612345678",
        "33612345678",
        "+1 800 FLOWERS",
        "+33 6 12 34 56 7a",
        "+33 1",
        "+33 6 12 34 56 78 ext. 9",
        "+999 123456789",
        "",
        "+",
    ],
)
def test_invalid_numbers_are_permanent_errors(number: str) -> None:
    with pytest.raises(DeliveryError, match=r"is not a valid E\.164 phone number") as caught:
        normalise_phone(number)
    assert caught.value.permanent
    assert repr(number) in str(caught.value)


# --- deliver ------------------------------------------------------------------------------


def test_deliver_with_a_messaging_service(fake: FakeTwilio) -> None:
    receipt = provider(fake.base_url).deliver(sms("Bienvenue chez Acme !", "+33 6 12 34 56 78"))

    [seen] = fake.requests
    assert (seen.method, seen.path) == ("POST", MESSAGES_PATH)
    scheme, _, credentials = seen.authorization.partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(credentials).decode() == f"{ACCOUNT_SID}:{AUTH_TOKEN}"
    assert fake.posts() == [
        {
            "To": USER_PHONE,
            "Body": "Bienvenue chez Acme !",
            "MessagingServiceSid": SERVICE_SID,
            "StatusCallback": f"{CALLBACK}?key=trial%3Au-42%2Fwelcome%2Fsms",
        }
    ]
    assert receipt.provider == "twilio"
    assert receipt.message_id.startswith("SM")
    assert len(receipt.message_id) == 34


def test_deliver_from_a_number_without_callback(fake: FakeTwilio) -> None:
    twilio = provider(
        fake.base_url, messaging_service_sid="", from_number=FROM_NUMBER, status_callback_url=""
    )
    twilio.deliver(sms())

    assert fake.posts() == [{"To": USER_PHONE, "Body": "Welcome to Acme", "From": FROM_NUMBER}]


def test_callback_url_with_a_query_string_gets_the_key_appended(fake: FakeTwilio) -> None:
    provider(fake.base_url, status_callback_url=f"{CALLBACK}?region=eu").deliver(sms())

    assert fake.posts()[0]["StatusCallback"] == (
        f"{CALLBACK}?region=eu&key=trial%3Au-42%2Fwelcome%2Fsms"
    )


def test_twilio_region_environment_does_not_redirect_requests(
    fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    monkeypatch.setenv("TWILIO_EDGE", "dublin")

    provider(fake.base_url).deliver(sms())

    assert len(fake.posts()) == 1


def test_refused_number_is_permanent_with_twilio_code(fake: FakeTwilio) -> None:
    fake.answer = lambda seen: Answer(
        400,
        {
            "code": 21211,
            "message": "The 'To' number +33612345678 is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400,
        },
    )

    with pytest.raises(DeliveryError) as caught:
        provider(fake.base_url).deliver(sms())

    err = caught.value
    assert (err.permanent, err.in_doubt, err.status) == (True, False, 400)
    assert str(err) == (
        "Twilio refused the SMS (400, code 21211): "
        "The 'To' number +33612345678 is not a valid phone number."
    )


def test_problem_details_refusal_is_permanent(fake: FakeTwilio) -> None:
    fake.answer = lambda seen: Answer(
        400,
        {
            "type": "https://www.twilio.com/docs/errors/21610",
            "title": "Attempt to send to unsubscribed recipient",
            "status": 400,
            "code": 21610,
            "detail": "The recipient replied STOP to this sender.",
        },
    )

    with pytest.raises(DeliveryError) as caught:
        provider(fake.base_url).deliver(sms())

    assert caught.value.permanent
    assert str(caught.value) == (
        "Twilio refused the SMS (400, code 21610): The recipient replied STOP to this sender."
    )


def test_rate_limit_is_transient_and_honours_retry_after(fake: FakeTwilio) -> None:
    fake.answer = lambda seen: Answer(
        429,
        {"code": 20429, "message": "Too Many Requests", "more_info": "", "status": 429},
        headers={"Retry-After": "5"},
    )

    with pytest.raises(DeliveryError) as caught:
        provider(fake.base_url).deliver(sms())

    err = caught.value
    assert (err.permanent, err.in_doubt, err.status, err.retry_after) == (False, False, 429, 5.0)
    assert "code 20429" in str(err)


def test_server_error_is_transient(fake: FakeTwilio) -> None:
    fake.answer = lambda seen: Answer(500, {"message": "Internal Server Error", "status": 500})

    with pytest.raises(DeliveryError) as caught:
        provider(fake.base_url).deliver(sms())

    err = caught.value
    assert (err.permanent, err.in_doubt, err.status, err.retry_after) == (False, False, 500, None)


def test_slow_answer_is_in_doubt(fake: FakeTwilio) -> None:
    fake.answer = lambda seen: Answer(201, message_json(), delay=1.0)

    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        provider(fake.base_url, timeout=0.3).deliver(sms())

    assert time.monotonic() - started < 0.9
    assert (caught.value.permanent, caught.value.in_doubt) == (False, True)
    assert len(fake.requests) == 1


def test_connection_dropped_after_sending_is_in_doubt(fake: FakeTwilio) -> None:
    fake.answer = lambda seen: Answer(drop=True)

    with pytest.raises(DeliveryError) as caught:
        provider(fake.base_url).deliver(sms())

    assert (caught.value.permanent, caught.value.in_doubt) == (False, True)
    assert len(fake.requests) == 1


def test_closed_port_is_transient_and_not_in_doubt() -> None:
    with pytest.raises(DeliveryError) as caught:
        provider(f"http://127.0.0.1:{closed_port()}").deliver(sms())

    assert (caught.value.permanent, caught.value.in_doubt) == (False, False)


def test_too_many_segments_is_permanent_without_a_request(fake: FakeTwilio) -> None:
    with pytest.raises(DeliveryError) as caught:
        provider(fake.base_url, max_segments=2).deliver(sms("ê" * 135))

    assert caught.value.permanent
    assert "3 segments" in str(caught.value)
    assert "UCS-2" in str(caught.value)
    assert fake.requests == []


def test_invalid_recipient_is_permanent_without_a_request(fake: FakeTwilio) -> None:
    with pytest.raises(DeliveryError, match=r"not a valid E\.164") as caught:
        provider(fake.base_url).deliver(sms(recipient="06 12 34 56 78"))

    assert caught.value.permanent
    assert fake.requests == []


def test_provider_needs_a_sender() -> None:
    with pytest.raises(ValueError, match="messaging service SID or a from number"):
        TwilioProvider(ACCOUNT_SID, AUTH_TOKEN)


# --- find ---------------------------------------------------------------------------------


def listing(*messages: dict[str, object]) -> Answer:
    uri = f"{MESSAGES_PATH}?To=%2B33612345678&PageSize=50&Page=0"
    return Answer(
        200,
        {
            "messages": list(messages),
            "end": len(messages) - 1,
            "first_page_uri": uri,
            "next_page_uri": None,
            "page": 0,
            "page_size": 50,
            "previous_page_uri": None,
            "start": 0,
            "uri": uri,
        },
    )


def test_find_returns_the_matching_message(fake: FakeTwilio) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    wanted = new_sid()
    fake.answer = lambda seen: listing(
        message_json(body="Something else"),
        message_json(body="Welcome to Acme", sid=wanted),
    )

    receipt = provider(fake.base_url).find(sms(), since)

    assert receipt is not None
    assert (receipt.provider, receipt.message_id) == ("twilio", wanted)
    [seen] = fake.requests
    assert (seen.method, seen.path) == ("GET", MESSAGES_PATH)
    assert seen.query["To"] == [USER_PHONE]
    assert seen.query["PageSize"] == ["50"]


def test_find_returns_none_without_a_match(fake: FakeTwilio) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    fake.answer = lambda seen: listing(
        message_json(body="Something else"),
        # The same text, but sent long before the attempt in doubt.
        message_json(created=since - timedelta(days=3)),
        # The same text, but from another messaging service.
        message_json(service="MG" + "c3" * 16),
        # The user's reply quoting us is not ours.
        message_json(direction="inbound"),
    )

    assert provider(fake.base_url).find(sms(), since) is None


def test_find_matches_the_from_number(fake: FakeTwilio) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    ours = new_sid()
    fake.answer = lambda seen: listing(
        message_json(from_="+16502530001", service=None),
        message_json(from_=FROM_NUMBER, service=None, sid=ours),
    )
    twilio = provider(fake.base_url, messaging_service_sid="", from_number=FROM_NUMBER)

    receipt = twilio.find(sms(), since)

    assert receipt is not None
    assert receipt.message_id == ours


def test_find_errors_are_transient(fake: FakeTwilio) -> None:
    fake.answer = lambda seen: Answer(503, {"message": "Service Unavailable", "status": 503})
    since = datetime.now(UTC)

    with pytest.raises(DeliveryError) as caught:
        provider(fake.base_url).find(sms(), since)
    assert (caught.value.permanent, caught.value.status) == (False, 503)

    with pytest.raises(DeliveryError) as caught:
        provider(f"http://127.0.0.1:{closed_port()}").find(sms(), since)
    assert not caught.value.permanent


# --- webhooks -----------------------------------------------------------------------------

HOOK_URL = f"{CALLBACK}?key=trial%3Au-42%2Fwelcome%2Fsms"


def status_params(status: str = "delivered", sid: str = "SM" + "d4" * 16) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "From": "+16502530000",
        "MessageSid": sid,
        "MessageStatus": status,
        "MessagingServiceSid": SERVICE_SID,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": USER_PHONE,
    }


def inbound_params(body: str) -> dict[str, str]:
    sid = "SM" + "e5" * 16
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "Body": body,
        "From": USER_PHONE,
        "FromCountry": "FR",
        "MessageSid": sid,
        "MessagingServiceSid": SERVICE_SID,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "SmsStatus": "received",
        "To": "+16502530000",
    }


def test_signature_from_twilio_verifies() -> None:
    params = status_params()
    signature = RequestValidator(AUTH_TOKEN).compute_signature(HOOK_URL, params)

    assert verify_twilio_signature(AUTH_TOKEN, HOOK_URL, params, signature)


def test_signature_rejects_anything_changed() -> None:
    params = status_params()
    signature = RequestValidator(AUTH_TOKEN).compute_signature(HOOK_URL, params)

    tampered = {**params, "MessageStatus": "failed"}
    assert not verify_twilio_signature(AUTH_TOKEN, HOOK_URL, tampered, signature)
    other_url = HOOK_URL.replace("welcome", "reminder")
    assert not verify_twilio_signature(AUTH_TOKEN, other_url, params, signature)
    assert not verify_twilio_signature("another-token", HOOK_URL, params, signature)
    assert not verify_twilio_signature(AUTH_TOKEN, HOOK_URL, params, "")
    assert not verify_twilio_signature(AUTH_TOKEN, HOOK_URL, params, "not base64 at all")
    assert not verify_twilio_signature("", HOOK_URL, params, signature)


NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_status_callback_becomes_an_event() -> None:
    params = status_params("delivered")

    event = parse_twilio_callback(params, "trial:u-42/welcome/sms", now=NOW)

    sid = params["MessageSid"]
    assert event.id == f"twilio:{sid}:delivered"
    assert (event.provider, event.type, event.at) == ("twilio", "delivered", NOW)
    assert event.message_key == "trial:u-42/welcome/sms"
    assert (event.provider_message_id, event.recipient) == (sid, USER_PHONE)
    assert event.payload == params


def test_failed_status_keeps_the_error_code() -> None:
    params = {**status_params("undelivered"), "ErrorCode": "30003"}

    event = parse_twilio_callback(params, None, now=NOW)

    assert event.type == "undelivered"
    assert event.message_key is None
    assert event.payload["ErrorCode"] == "30003"


def test_old_style_status_callback_with_sms_fields_only() -> None:
    params = {"SmsSid": "SM" + "f6" * 16, "SmsStatus": "sent", "To": USER_PHONE}

    event = parse_twilio_callback(params, "k", now=NOW)

    assert (event.type, event.provider_message_id) == ("sent", params["SmsSid"])


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("STOP", "stop"),
        ("stop ", "stop"),
        ("  Unsubscribe\n", "stop"),
        ("optout", "stop"),
        ("START", "start"),
        ("unstop", "start"),
        ("Yes", "start"),
        ("Stop please", "reply"),
        ("Merci, à demain !", "reply"),
        ("", "reply"),
    ],
)
def test_inbound_reply(body: str, kind: str) -> None:
    params = inbound_params(body)

    event = parse_twilio_callback(params, now=NOW)

    assert event.type == kind
    assert event.id == f"twilio:{params['MessageSid']}:inbound"
    assert event.recipient == USER_PHONE
    assert event.provider_message_id == params["MessageSid"]
    assert event.message_key is None
    assert event.at == NOW


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"Body": "STOP", "From": USER_PHONE},
        {"MessageSid": "SM" + "a0" * 16},
        {"MessageSid": "SM" + "a0" * 16, "To": USER_PHONE, "From": FROM_NUMBER},
        {"MessageSid": "SM" + "a0" * 16, "Body": "STOP"},
    ],
)
def test_garbage_is_rejected(params: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="Twilio"):
        parse_twilio_callback(params, now=NOW)

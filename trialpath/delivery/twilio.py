"""The `twilio` provider: SMS through Twilio's Messages API, and Twilio's webhooks.

Sending goes through the official `twilio` package. Its client is pointed at `base_url` (a
local mock in tests) and given an HTTP client that remembers each thread's last response
headers, because a 429's `Retry-After` is not on the exception the library raises.

One webhook URL receives two kinds of POSTs: status callbacks for messages we sent (the
idempotency key rides in the callback URL's `key` query parameter) and inbound replies from
users, where STOP/START keywords become `stop`/`start` events.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers
import requests

# twilio ships no type information (no py.typed): until pyproject's mypy overrides list
# "twilio.*", these imports need the ignore; `unused-ignore` keeps them valid after that.
from twilio.base.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped, unused-ignore]
from twilio.http.response import Response  # type: ignore[import-untyped, unused-ignore]
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped, unused-ignore]
from twilio.rest import Client  # type: ignore[import-untyped, unused-ignore]
from urllib3.exceptions import MaxRetryError, NewConnectionError

from trialpath.delivery import (
    DeliveryError,
    OutgoingMessage,
    ProviderEvent,
    Receipt,
    classify_status,
    parse_retry_after,
)

# GSM 03.38 default alphabet (0x1B, the escape to the extension table, is not a character).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each of these is sent as ESC + character, two septets.
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67

STOP_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})

# How far before the in-doubt attempt a message found at Twilio may have been created: our
# clock and Twilio's are not the same clock.
CLOCK_SKEW = timedelta(minutes=5)
FIND_LIMIT = 50

_PHONE_CHARACTERS = re.compile(r"\+[0-9 ().\-]+")


def sms_segments(text: str) -> tuple[str, int]:
    """The encoding ("GSM-7" or "UCS-2") and number of SMS segments `text` is sent as.

    Concatenated parts lose room to their header (153 septets, 67 UTF-16 units), and a part
    never ends in the middle of an escape pair or a surrogate pair.
    """
    if all(ch in GSM_BASIC or ch in GSM_EXTENSION for ch in text):
        encoding, single, part = "GSM-7", GSM_SINGLE, GSM_PART
        sizes = [2 if ch in GSM_EXTENSION else 1 for ch in text]
    else:
        encoding, single, part = "UCS-2", UCS2_SINGLE, UCS2_PART
        sizes = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    if sum(sizes) <= single:
        return encoding, 1
    parts, used = 1, 0
    for size in sizes:
        if used + size > part:
            parts, used = parts + 1, 0
        used += size
    return encoding, parts


def normalise_phone(number: str) -> str:
    """`number` in E.164 (`+33612345678`), or a permanent `DeliveryError` if it is not one."""
    candidate = number.strip()
    problem = DeliveryError(f"{number!r} is not a valid E.164 phone number", permanent=True)
    # phonenumbers reads letters as keypad digits (+1 800 FLOWERS) and accepts "ext. 12".
    if not _PHONE_CHARACTERS.fullmatch(candidate):
        raise problem
    try:
        parsed = phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException:
        raise problem from None
    if not phonenumbers.is_valid_number(parsed):
        raise problem
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class _HttpClient(TwilioHttpClient):  # type: ignore[misc]
    """Twilio's requests-based client, remembering each thread's last response headers."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._last = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Response:
        self._last.headers = {}
        response = super().request(*args, **kwargs)
        self._last.headers = response.headers or {}
        return response

    def last_header(self, name: str) -> str | None:
        """A header of this thread's last response (case-insensitive), if there was one."""
        headers = getattr(self._last, "headers", {})
        value = headers.get(name)
        if value is None:
            value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
        return str(value) if value is not None else None


class TwilioProvider:
    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        messaging_service_sid: str = "",
        from_number: str = "",
        base_url: str = "https://api.twilio.com",
        status_callback_url: str = "",
        max_segments: int = 3,
        timeout: float = 15.0,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("the Twilio provider needs an account SID and an auth token")
        if not messaging_service_sid and not from_number:
            raise ValueError("the Twilio provider needs a messaging service SID or a from number")
        self.messaging_service_sid = messaging_service_sid
        self.from_number = from_number
        self.status_callback_url = status_callback_url
        self.max_segments = max_segments
        self._http = _HttpClient(timeout)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._client.api.base_url = base_url.rstrip("/")
        # base_url is the whole address: the library would otherwise rewrite its host from
        # the TWILIO_EDGE / TWILIO_REGION environment variables.
        self._client.edge = None
        self._client.region = None

    def deliver(self, message: OutgoingMessage) -> Receipt:
        to = normalise_phone(message.recipient)
        if not message.text:
            raise DeliveryError("the SMS has no text", permanent=True)
        encoding, segments = sms_segments(message.text)
        if segments > self.max_segments:
            raise DeliveryError(
                f"the SMS is {segments} segments long ({encoding}), more than the "
                f"{self.max_segments} allowed",
                permanent=True,
            )
        params: dict[str, str] = {"to": to, "body": message.text}
        if self.messaging_service_sid:
            params["messaging_service_sid"] = self.messaging_service_sid
        else:
            params["from_"] = self.from_number
        if self.status_callback_url:
            params["status_callback"] = callback_url(self.status_callback_url, message.key)
        try:
            created = self._client.messages.create(**params)
        except TwilioException as err:
            raise self._error(
                err, refused="Twilio refused the SMS", unavailable="Twilio could not take the SMS"
            ) from err
        except requests.RequestException as err:
            raise _network_error(err) from err
        except ValueError as err:
            # A 2xx whose body is not Twilio's JSON: something accepted the request.
            raise DeliveryError(
                f"unreadable answer from Twilio: {err}", permanent=False, in_doubt=True
            ) from err
        sid = getattr(created, "sid", None)
        if not sid:
            raise DeliveryError(
                "Twilio accepted the SMS without a message SID", permanent=False, in_doubt=True
            )
        return Receipt(provider=self.name, message_id=str(sid))

    def find(self, message: OutgoingMessage, since: datetime) -> Receipt | None:
        """The receipt of a message to the same number with the same text since `since`.

        Twilio has no lookup by our key, so this matches what was sent. No `DateSent` filter:
        a message still queued has no send date yet and would be missed.
        """
        try:
            to = normalise_phone(message.recipient)
        except DeliveryError:
            return None  # deliver never sends to an invalid number
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        earliest = since - CLOCK_SKEW
        try:
            records = self._client.messages.list(to=to, limit=FIND_LIMIT)
        except TwilioException as err:
            # Looking up never refuses the message itself: any failure means "ask again later".
            raise self._error(
                err, refused=None, unavailable="Twilio could not list messages"
            ) from err
        except requests.RequestException as err:
            raise DeliveryError(
                f"could not reach Twilio to list messages: {err}", permanent=False
            ) from err
        except ValueError as err:
            raise DeliveryError(f"unreadable answer from Twilio: {err}", permanent=False) from err
        for record in records:
            if record.body != message.text or not record.sid:
                continue
            if record.direction and not str(record.direction).startswith("outbound"):
                continue
            if record.date_created is not None and record.date_created < earliest:
                continue
            if self.messaging_service_sid:
                if record.messaging_service_sid not in (None, "", self.messaging_service_sid):
                    continue
            elif record.from_ not in (None, "", self.from_number):
                continue
            return Receipt(provider=self.name, message_id=str(record.sid))
        return None

    def _error(self, err: Any, *, refused: str | None, unavailable: str) -> DeliveryError:
        """A Twilio error answer as a `DeliveryError`: permanent for a 4xx refusal, when the
        call could be refused at all (`refused`), else transient with Twilio's `Retry-After`."""
        status = getattr(err, "status", None)
        if status is None and len(err.args) > 1:
            # A failed list page is a bare TwilioException("Unable to fetch page", response).
            status = getattr(err.args[1], "status_code", None)
        status = status if isinstance(status, int) else None
        code = getattr(err, "code", None)
        if isinstance(err, TwilioServiceException):
            text = err.detail or err.title
        elif isinstance(err, TwilioRestException):
            text = str(err.msg).removeprefix("Unable to create record: ")
        else:
            text = str(err.args[0]) if err.args else repr(err)
        where = f"{status}, code {code}" if code and code != status else f"{status}"
        if refused is not None and status is not None and classify_status(status):
            return DeliveryError(f"{refused} ({where}): {text}", permanent=True, status=status)
        return DeliveryError(
            f"{unavailable} ({where}): {text}",
            permanent=False,
            retry_after=parse_retry_after(self._http.last_header("Retry-After")),
            status=status,
        )


def callback_url(base: str, key: str) -> str:
    """The status callback URL for one message: `base` with our key as `key`."""
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}key={urllib.parse.quote(key, safe='')}"


def _network_error(err: requests.RequestException) -> DeliveryError:
    """Transient; in doubt unless the request certainly never left (no connection made)."""
    never_sent = isinstance(err, requests.ConnectTimeout | requests.exceptions.SSLError)
    if isinstance(err, requests.ConnectionError) and err.args:
        cause = err.args[0]
        never_sent = never_sent or (
            isinstance(cause, MaxRetryError) and isinstance(cause.reason, NewConnectionError)
        )
    if never_sent:
        return DeliveryError(f"could not connect to Twilio: {err}", permanent=False)
    if isinstance(err, requests.Timeout):
        text = f"no answer from Twilio in time, the SMS may have been sent: {err}"
    else:
        text = f"the connection to Twilio broke, the SMS may have been sent: {err}"
    return DeliveryError(text, permanent=False, in_doubt=True)


def verify_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str
) -> bool:
    """Whether `signature` (the `X-Twilio-Signature` header) signs this URL and form body."""
    if not auth_token or not signature:
        return False
    try:
        return bool(RequestValidator(auth_token).validate(url, dict(params), signature))
    except Exception:
        return False


def parse_twilio_callback(
    params: Mapping[str, str], url_key: str | None = None, *, now: datetime | None = None
) -> ProviderEvent:
    """A status callback or an inbound reply, as a `ProviderEvent`.

    `url_key` is the `key` query parameter of the callback URL (our idempotency key); it
    belongs to status callbacks only, replies arrive on the number's own webhook.
    """
    at = now or datetime.now(UTC)
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    if not sid:
        raise ValueError("not a Twilio callback: no MessageSid")
    status = (params.get("MessageStatus") or params.get("SmsStatus") or "").strip().lower()
    # Replies carry a Body and no status but SmsStatus=received; status callbacks no Body.
    if "Body" in params and status in ("", "received"):
        sender = params.get("From") or ""
        if not sender:
            raise ValueError(f"Twilio inbound message {sid} has no From")
        word = params["Body"].strip().upper()
        kind = "stop" if word in STOP_KEYWORDS else "start" if word in START_KEYWORDS else "reply"
        return ProviderEvent(
            id=f"twilio:{sid}:inbound",
            provider="twilio",
            type=kind,
            at=at,
            provider_message_id=sid,
            recipient=sender,
            payload=dict(params),
        )
    if not status:
        raise ValueError(f"Twilio callback for {sid} has neither MessageStatus nor Body")
    return ProviderEvent(
        id=f"twilio:{sid}:{status}",
        provider="twilio",
        type=status,
        at=at,
        message_key=url_key or None,
        provider_message_id=sid,
        recipient=params.get("To") or None,
        payload=dict(params),
    )

"""The `sendgrid` provider: v3 Mail Send, and the Event Webhook that reports what happened next.

One `deliver` is one POST /v3/mail/send. The message's idempotency key travels as the
`trialpath_key` custom arg, which SendGrid echoes on every webhook event, so sends are
reconciled from those events (`parse_sendgrid_events`) rather than by asking the API: Mail Send
has no idempotency key and no lookup, hence `find` raises `NotImplementedError`.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import urllib.error
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.mail import (
    Attachment,
    Category,
    Content,
    CustomArg,
    Disposition,
    FileContent,
    FileName,
    FileType,
    From,
    Header,
    Mail,
    MailSettings,
    Personalization,
    SandBoxMode,
    To,
)
from sendgrid.helpers.mail.exceptions import ApiKeyIncludedException

from trialpath.delivery import (
    DeliveryError,
    OutgoingMessage,
    ProviderEvent,
    Receipt,
    classify_status,
    parse_retry_after,
)

PROVIDER = "sendgrid"
KEY_ARG = "trialpath_key"
"""The custom arg carrying our idempotency key; SendGrid echoes it on every event."""

_PEM_ARMOUR = ("-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----")


class SendGridProvider:
    name = PROVIDER

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.sendgrid.com",
        *,
        sandbox: bool = False,
        timeout: float = 15.0,
    ) -> None:
        self.sandbox = sandbox
        self.timeout = timeout
        self._api = SendGridAPIClient(api_key=api_key, host=base_url.rstrip("/"))
        # SendGridAPIClient takes no timeout; the python_http_client Client it wraps passes its
        # own `timeout` to every child client it builds for a URL path, so set it there.
        self._api.client.timeout = timeout

    def deliver(self, message: OutgoingMessage) -> Receipt:
        try:
            payload = build_mail_payload(message, sandbox=self.sandbox)
        except (ValueError, ApiKeyIncludedException) as error:
            raise DeliveryError(
                f"Not sendable through SendGrid: {error}", permanent=True
            ) from error
        try:
            response = self._api.send(payload)
        except HTTPError as error:
            raise _http_error(error) from error
        except urllib.error.URLError as error:
            # urllib wraps failures while connecting or sending the request in URLError.
            if _is_timeout(error.reason):
                raise DeliveryError(
                    f"SendGrid timed out after {self.timeout}s while sending",
                    permanent=False,
                    in_doubt=True,
                ) from error
            raise DeliveryError(f"SendGrid unreachable: {error.reason}", permanent=False) from error
        except TimeoutError as error:
            raise DeliveryError(
                f"SendGrid did not answer within {self.timeout}s", permanent=False, in_doubt=True
            ) from error
        except (OSError, http.client.HTTPException) as error:
            # Not wrapped in URLError: raised while waiting for or reading the response, so the
            # request was already sent and SendGrid may have accepted it.
            raise DeliveryError(
                f"SendGrid did not answer ({type(error).__name__}: {error})",
                permanent=False,
                in_doubt=True,
            ) from error
        message_id = _header(response.headers, "X-Message-Id") or message.key
        return Receipt(provider=PROVIDER, message_id=message_id)

    def find(self, message: OutgoingMessage, since: datetime) -> Receipt | None:
        raise NotImplementedError("SendGrid sends are reconciled from Event Webhook records")


def build_mail_payload(message: OutgoingMessage, *, sandbox: bool) -> dict[str, Any]:
    """The v3 Mail Send JSON body for one message. Raises `ValueError` for a bad address."""
    mail = Mail(from_email=From(*_address(message.sender, "sender")), subject=message.subject)
    personalization = Personalization()
    personalization.add_to(To(*_address(message.recipient, "recipient")))
    mail.add_personalization(personalization)

    # The API wants text/plain before text/html; Mail.add_content orders them by mime type.
    if message.text:
        mail.add_content(Content("text/plain", message.text))
    if message.html:
        mail.add_content(Content("text/html", message.html))
    if not message.text and not message.html:
        # Mail Send refuses a message without content or with an empty value.
        mail.add_content(Content("text/plain", " "))

    categories = _unique([message.message, message.persona or "default", message.category])
    custom_args = {KEY_ARG: message.key, "trial_id": message.trial_id, "user_id": message.user_id}
    attachments = [
        Attachment(
            FileContent(base64.b64encode(item.data).decode("ascii")),
            FileName(item.filename),
            FileType(item.content_type),
            Disposition("attachment"),
        )
        for item in message.attachments
    ]
    # Mail's add_category/add_header/add_attachment insert at the front of
    # their lists; adding in reverse keeps the message's own order in the request.
    for category in reversed(categories):
        mail.add_category(Category(category))
    for name, value in reversed(message.headers.items()):
        mail.add_header(Header(name, value))
    # On the personalization: the official schema types the top-level `custom_args` as a
    # string, while a personalization's is an object (and SendGrid merges both into events).
    for name, value in custom_args.items():
        if value:
            personalization.add_custom_arg(CustomArg(name, str(value)))
    for attachment in reversed(attachments):
        mail.add_attachment(attachment)

    if sandbox:
        mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))
    payload: dict[str, Any] = mail.get()
    return payload


def verify_sendgrid_signature(
    public_key: str,
    payload: bytes,
    signature: str,
    timestamp: str,
    *,
    max_age_seconds: float | None = None,
    now: datetime | None = None,
) -> bool:
    """Whether an Event Webhook request is signed by the key SendGrid shows (base64 DER).

    `signature` and `timestamp` are the `X-Twilio-Email-Event-Webhook-Signature` and
    `-Timestamp` headers; the signature covers the timestamp followed by the raw body. With
    `max_age_seconds`, a timestamp further than that from `now` is refused too (replays).
    Never raises: a missing or garbled key, signature or timestamp is simply not valid.
    """
    key = _bare_key(public_key)
    if not key or not signature or not timestamp:
        return False
    try:
        # The library decodes leniently (dropping stray characters); insist on clean base64.
        base64.b64decode(signature, validate=True)
        body = payload.decode("utf-8")
        if max_age_seconds is not None:
            current = (now or datetime.now(UTC)).timestamp()
            if abs(current - float(timestamp)) > max_age_seconds:
                return False
        webhook = EventWebhook(key)
        return bool(webhook.verify_signature(body, signature, timestamp))
    except (ValueError, TypeError):
        # binascii.Error and UnicodeDecodeError are ValueErrors; cryptography raises ValueError
        # for an unreadable key and TypeError when the key is not an elliptic-curve key.
        return False


def parse_sendgrid_events(payload: bytes) -> list[ProviderEvent]:
    """The events of one Event Webhook POST (a JSON array), in our words.

    Raises `ValueError` for a body that is not a JSON array of objects, or an event without
    `event` or `timestamp`.
    """
    try:
        body = json.loads(payload)
    except ValueError as error:
        raise ValueError(f"SendGrid webhook body is not JSON: {error}") from error
    if not isinstance(body, list):
        raise ValueError(
            f"SendGrid webhook body must be a JSON array of events, not {type(body).__name__}"
        )
    return [_event(index, item) for index, item in enumerate(body)]


def _event(index: int, item: object) -> ProviderEvent:
    if not isinstance(item, dict):
        raise ValueError(f"SendGrid event #{index} is not a JSON object: {item!r:.80}")
    kind = item.get("event")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"SendGrid event #{index} has no `event` type")
    at = _timestamp(index, item.get("timestamp"))
    event_id = item.get("sg_event_id")
    if not isinstance(event_id, str) or not event_id:
        canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        event_id = "sha256-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return ProviderEvent(
        id=f"{PROVIDER}:{event_id}",
        provider=PROVIDER,
        type=kind,
        at=at,
        message_key=_text(item.get(KEY_ARG)),
        provider_message_id=_message_id(item.get("sg_message_id")),
        recipient=_text(item.get("email")),
        payload=item,
    )


def _timestamp(index: int, value: object) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"SendGrid event #{index} has no unix `timestamp`")
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError) as error:
        raise ValueError(f"SendGrid event #{index} has a bad `timestamp`: {value!r}") from error


def _message_id(value: object) -> str | None:
    # sg_message_id is "<X-Message-Id>.<filter and server suffix>"; the receipt holds the first.
    text = _text(value)
    if text is None:
        return None
    return text.split(".", 1)[0] or None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _address(value: str, role: str) -> tuple[str, str | None]:
    name, address = parseaddr(value)
    if "@" not in address:
        raise ValueError(f"the {role} {value!r} is not an email address")
    return address, name or None


def _unique(values: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for value in values:
        value = value.strip()
        if value and value not in seen:
            seen.append(value)
    return seen


def _bare_key(public_key: str) -> str:
    """The base64 body of a key, with PEM armour and line breaks removed if pasted with them."""
    text = public_key or ""
    for line in _PEM_ARMOUR:
        text = text.replace(line, "")
    return "".join(text.split())


def _http_error(error: HTTPError) -> DeliveryError:
    status = int(getattr(error, "status_code", 0) or 0)
    detail = _error_messages(getattr(error, "body", b""))
    if classify_status(status):
        text = f"SendGrid refused the message ({status})"
        return DeliveryError(f"{text}: {detail}" if detail else text, permanent=True, status=status)
    text = f"SendGrid answered {status}"
    return DeliveryError(
        f"{text}: {detail}" if detail else text,
        permanent=False,
        retry_after=parse_retry_after(_header(getattr(error, "headers", None), "Retry-After")),
        status=status,
    )


def _error_messages(body: object) -> str:
    """The `errors[].message` texts of a SendGrid error body, else the body's start."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not isinstance(body, str) or not body.strip():
        return ""
    try:
        document = json.loads(body)
    except ValueError:
        return body.strip()[:300]
    errors = document.get("errors") if isinstance(document, dict) else None
    if isinstance(errors, list):
        messages = [
            str(item["message"])
            for item in errors
            if isinstance(item, dict) and item.get("message")
        ]
        if messages:
            return "; ".join(messages)
    return body.strip()[:300]


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except AttributeError:
        return None
    return str(value) if value else None


def _is_timeout(reason: object) -> bool:
    return isinstance(reason, TimeoutError) or (
        isinstance(reason, str) and "timed out" in reason.lower()
    )


__all__ = [
    "KEY_ARG",
    "SendGridProvider",
    "build_mail_payload",
    "parse_sendgrid_events",
    "verify_sendgrid_signature",
]

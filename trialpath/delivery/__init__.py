"""Delivery providers: one small protocol, one implementation per way of sending.

The send activity writes the message row (unique idempotency key) before calling a provider,
so a provider only has to deliver and say how a failure should be treated:

- `DeliveryError(permanent=True)`: the provider refused this message for good (bad address,
  rejected content, 4xx). Recorded as failed, never retried.
- `DeliveryError(permanent=False)`: try again later (429, 5xx, connection refused), after
  `retry_after` seconds when the provider said so (`Retry-After`).
- `in_doubt=True` on a transient error: the request may have reached the provider (a timeout
  after it was sent). The next attempt asks `find` before sending again.

`find` looks the message up at the provider (by the idempotency key or what was sent); it
returns the receipt if the provider has it, `None` if it certainly has not, and raises
`NotImplementedError` when the provider cannot tell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class OutgoingMessage:
    key: str
    channel: str
    category: str
    sender: str
    recipient: str
    subject: str = ""
    preheader: str = ""
    html: str = ""
    text: str = ""
    title: str = ""
    cta_label: str = ""
    cta_url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    user_id: str = ""
    trial_id: str = ""
    """The trial's workflow id, carried to the provider (SendGrid custom args, SMS callbacks)."""
    message: str = ""
    """The journey step's message name (`welcome`, `call_invite`...)."""
    persona: str | None = None


@dataclass(frozen=True)
class Receipt:
    provider: str
    message_id: str


@dataclass(frozen=True)
class ProviderEvent:
    """One thing a provider's webhook reported, in our words.

    `type`: processed, delivered, deferred, bounce, dropped, open, click, spamreport,
    unsubscribe (SendGrid); queued, sent, delivered, undelivered, failed (Twilio status);
    stop (an SMS reply asking to stop), start (an SMS reply asking to resume).
    """

    id: str
    """Unique per provider event: replays of the same event carry the same id."""
    provider: str
    type: str
    at: datetime
    message_key: str | None = None
    """Our idempotency key, when the provider echoes it (SendGrid custom args, callback URL)."""
    provider_message_id: str | None = None
    recipient: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


class DeliveryError(Exception):
    """Delivery failed. `permanent` failures (a bad address, a rejection) are not retried."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        retry_after: float | None = None,
        in_doubt: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.in_doubt = in_doubt
        self.status = status


class Provider(Protocol):
    name: str

    def deliver(self, message: OutgoingMessage) -> Receipt: ...

    def find(self, message: OutgoingMessage, since: datetime) -> Receipt | None: ...


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        return None
    from datetime import UTC

    current = now or datetime.now(UTC)
    return max(0.0, (at - current).total_seconds())


def classify_status(status: int) -> bool:
    """Whether an HTTP status means a permanent refusal of this message (a 4xx).

    401 and 403 are not: they say our credentials are wrong (a revoked API key, an unverified
    sender), which is fixed once for every message, so those are retried, not dropped. Nor are
    408, 409, 425 and 429, which ask to come back later."""
    return 400 <= status < 500 and status not in (401, 403, 408, 409, 425, 429)

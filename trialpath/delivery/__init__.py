"""Delivery providers: one small protocol, one implementation per way of sending.

The send activity writes the message row (unique idempotency key) before calling a provider,
so a provider only has to deliver; `outbox` is the default and sends nothing outside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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


@dataclass(frozen=True)
class Receipt:
    provider: str
    message_id: str


class DeliveryError(Exception):
    """Delivery failed. `permanent` failures (a bad address, a rejection) are not retried."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Provider(Protocol):
    name: str

    def deliver(self, message: OutgoingMessage) -> Receipt: ...

"""The in-app inbox: the message row itself is the user's inbox item.

Delivering only gives the row its public id; the product reads the inbox through
`GET /v1/users/{user_id}/inbox` and marks items read with `POST .../{message_id}/read`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from trialpath.delivery import OutgoingMessage, Receipt


def inbox_id(key: str) -> str:
    """A stable public id for an inbox message (the idempotency key is not URL-friendly)."""
    return "msg_" + hashlib.sha256(key.encode()).hexdigest()[:24]


class InboxProvider:
    name = "inbox"

    def deliver(self, message: OutgoingMessage) -> Receipt:
        return Receipt(provider=self.name, message_id=inbox_id(message.key))

    def find(self, message: OutgoingMessage, since: datetime) -> Receipt | None:
        # Nothing leaves the database: an interrupted attempt can simply finish.
        return self.deliver(message)

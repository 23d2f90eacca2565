"""After sending: the in-app inbox, users' channel preferences, and what providers report.

Shared by the HTTP API (inbox routes, one-click unsubscribe, provider webhooks) and the CLI.
Unsubscribing records the choice in the database first (the send activity reads it at the last
moment) and then tells the running workflow, which stops planning marketing on that channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import Engine, case
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from trialpath.core.contract import UnsubscribeChannel
from trialpath.delivery import ProviderEvent
from trialpath.delivery.preferences import preferences_of, set_subscribed
from trialpath.entry.commands import NewEvent, TrialEnded, TrialNotFound, UnsubscribeCommand
from trialpath.entry.trials import Trials
from trialpath.operations.models import Message, MessageEvent, Trial, utcnow

log = logging.getLogger("trialpath.deliveries")

# What a provider event means for the user's preferences: (channel, source).
OPT_OUTS = {
    ("sendgrid", "bounce"): ("email", "bounce"),
    ("sendgrid", "spamreport"): ("email", "spamreport"),
    ("sendgrid", "unsubscribe"): ("email", "provider"),
    ("sendgrid", "group_unsubscribe"): ("email", "provider"),
    ("twilio", "stop"): ("sms", "stop"),
}
OPT_INS = {("twilio", "start"): ("sms", "start")}
READ_EVENT = "message_read"


class InboxItem(BaseModel):
    id: str
    message: str
    title: str
    text: str
    html: str
    cta_label: str | None = Field(
        default=None, description="The card's button, if it has one (template `cta_label`)."
    )
    cta_url: str | None = Field(
        default=None, description="Where the button leads in the product (with UTM parameters)."
    )
    sent_at: datetime | None
    read_at: datetime | None
    unread: bool


class InboxPage(BaseModel):
    user_id: str
    unread: int
    items: list[InboxItem]


class ChannelPreference(BaseModel):
    subscribed: bool
    source: str | None
    updated_at: datetime | None


class Preferences(BaseModel):
    user_id: str
    email: ChannelPreference
    sms: ChannelPreference
    in_app: ChannelPreference


class Unsubscribed(BaseModel):
    user_id: str
    channels: list[str]
    """Channels now unsubscribed by this request (empty: they already were)."""
    trial_notified: bool
    """Whether a running trial was told (an ended trial only needs the preference)."""


class EventsRecorded(BaseModel):
    recorded: int
    duplicates: int
    unmatched: int
    """Events for messages this installation did not send (another system on the account)."""


class InboxMessageNotFound(TrialNotFound):
    title = "Message not found"


@dataclass
class Deliveries:
    engine: Engine
    trials: Trials

    # -- inbox --

    async def inbox(self, user_id: str, unread_only: bool = False, limit: int = 50) -> InboxPage:
        return await asyncio.to_thread(self._inbox, user_id, unread_only, limit)

    def _inbox(self, user_id: str, unread_only: bool, limit: int) -> InboxPage:
        with Session(self.engine) as session:
            base = select(Message).where(
                col(Message.user_id) == user_id,
                col(Message.channel) == "in_app",
                col(Message.status) == "sent",
            )
            unread = len(session.exec(base.where(col(Message.read_at).is_(None))).all())
            query = base.where(col(Message.read_at).is_(None)) if unread_only else base
            rows = session.exec(
                query.order_by(
                    case((col(Message.read_at).is_(None), 0), else_=1),
                    col(Message.sent_at).desc(),
                    col(Message.key),
                ).limit(limit)
            ).all()
            return InboxPage(user_id=user_id, unread=unread, items=[_item(r) for r in rows])

    async def mark_read(self, user_id: str, message_id: str) -> InboxItem:
        """Marks an inbox message read (again: no change) and reports it as a product event,
        once, to the trial if it still runs."""
        item, first = await asyncio.to_thread(self._mark_read, user_id, message_id)
        if first:
            event = NewEvent(
                name=READ_EVENT,
                properties={"message": item.message, "message_id": item.id},
                idempotency_key=f"read:{item.id}",
            )
            with contextlib.suppress(TrialEnded, TrialNotFound):
                await self.trials.add_events(user_id, [event])
        return item

    def _mark_read(self, user_id: str, message_id: str) -> tuple[InboxItem, bool]:
        with Session(self.engine) as session:
            row = session.exec(
                select(Message).where(
                    col(Message.provider_message_id) == message_id,
                    col(Message.user_id) == user_id,
                    col(Message.channel) == "in_app",
                )
            ).first()
            if row is None:
                raise InboxMessageNotFound(f"user {user_id} has no inbox message {message_id}")
            first = row.read_at is None
            if first:
                row.read_at = utcnow()
                session.add(row)
                session.commit()
                session.refresh(row)
            return _item(row), first

    # -- preferences --

    async def preferences(self, user_id: str) -> Preferences:
        found = await asyncio.to_thread(preferences_of, self.engine, user_id)
        return Preferences(
            user_id=user_id,
            **{channel: ChannelPreference.model_validate(v) for channel, v in found.items()},
        )

    async def unsubscribe(
        self, user_id: str, channel: UnsubscribeChannel, source: str
    ) -> Unsubscribed:
        """Records the opt-out, then tells the trial if it runs. Works for ended trials too: the
        preference is what later sends (win-back) check."""
        changed = await asyncio.to_thread(
            set_subscribed, self.engine, user_id, [channel], subscribed=False, source=source
        )
        if not changed:
            # Nothing new: the trial already knows (repeated POSTs of one link add no signal).
            return Unsubscribed(user_id=user_id, channels=changed, trial_notified=False)
        notified = True
        try:
            await self.trials.notify_unsubscribe(user_id, UnsubscribeCommand(channel=channel))
        except (TrialEnded, TrialNotFound):
            notified = False
        return Unsubscribed(user_id=user_id, channels=changed, trial_notified=notified)

    # -- provider events --

    async def record(self, events: Sequence[ProviderEvent]) -> EventsRecorded:
        """Stores each provider event once (replays are counted, not applied twice), updates
        the message it is about, and applies opt-outs (bounce, spam report, unsubscribe, STOP)."""
        outcome, opt_outs, opt_ins = await asyncio.to_thread(self._record, events)
        for user_id, channel, source in opt_outs:
            await self.unsubscribe(user_id, channel, source)  # type: ignore[arg-type]
        for user_id, channel, source in opt_ins:
            await asyncio.to_thread(
                set_subscribed, self.engine, user_id, [channel], subscribed=True, source=source
            )
        return outcome

    def _record(
        self, events: Sequence[ProviderEvent]
    ) -> tuple[EventsRecorded, list[tuple[str, str, str]], list[tuple[str, str, str]]]:
        recorded = duplicates = unmatched = 0
        opt_outs: list[tuple[str, str, str]] = []
        opt_ins: list[tuple[str, str, str]] = []
        with Session(self.engine) as session:
            for event in events:
                if session.get(MessageEvent, event.id) is not None:
                    duplicates += 1
                    continue
                message = _message_for(session, event)
                session.add(
                    MessageEvent(
                        id=event.id,
                        provider=event.provider,
                        message_key=message.key if message else event.message_key,
                        provider_message_id=event.provider_message_id,
                        type=event.type,
                        at=event.at,
                        payload=event.payload,
                    )
                )
                try:
                    session.flush()
                except IntegrityError:
                    # The same event arrived concurrently: the other request recorded it.
                    session.rollback()
                    duplicates += 1
                    continue
                recorded += 1
                user_id = message.user_id if message else None
                if message is not None:
                    if message.provider_message_id is None and event.provider_message_id:
                        message.provider_message_id = event.provider_message_id
                    if event.type not in ("stop", "start", "reply"):
                        message.delivery_status = event.type
                    session.add(message)
                elif event.type in ("stop", "start") and event.recipient:
                    user_id = _user_by_phone(session, event.recipient)
                if user_id is None:
                    unmatched += 1
                    continue
                change = OPT_OUTS.get((event.provider, event.type))
                if change:
                    opt_outs.append((user_id, *change))
                change = OPT_INS.get((event.provider, event.type))
                if change:
                    opt_ins.append((user_id, *change))
            session.commit()
        outcome = EventsRecorded(recorded=recorded, duplicates=duplicates, unmatched=unmatched)
        return outcome, opt_outs, opt_ins


def _message_for(session: Session, event: ProviderEvent) -> Message | None:
    if event.message_key:
        row = session.get(Message, event.message_key)
        if row is not None:
            return row
    if event.provider_message_id:
        return session.exec(
            select(Message).where(col(Message.provider_message_id) == event.provider_message_id)
        ).first()
    return None


def _user_by_phone(session: Session, phone: str) -> str | None:
    """The user an SMS reply came from: the trial with that number, newest first."""
    exact = session.exec(
        select(Trial.user_id).where(col(Trial.phone) == phone).order_by(col(Trial.signup_at).desc())
    ).first()
    if exact is not None:
        return exact
    # Numbers given with spaces or dashes at signup: compare digits.
    digits = "".join(ch for ch in phone if ch.isdigit())
    for trial in session.exec(
        select(Trial).where(col(Trial.phone).is_not(None)).order_by(col(Trial.signup_at).desc())
    ):
        if trial.phone and "".join(ch for ch in trial.phone if ch.isdigit()) == digits:
            return trial.user_id
    return None


def _item(row: Message) -> InboxItem:
    return InboxItem(
        id=row.provider_message_id or "",
        message=row.message,
        title=row.subject,
        text=row.text,
        html=row.html,
        cta_label=row.cta_label,
        cta_url=row.cta_url if row.cta_label else None,
        sent_at=row.sent_at,
        read_at=row.read_at,
        unread=row.read_at is None,
    )

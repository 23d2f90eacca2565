"""Rendering and sending messages, and assigning success-call agents.

A send is effectively once: the message row with its unique idempotency key is written before
the provider is called, and a retried activity finds the row instead of sending again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from icalendar import Calendar, Event, vCalAddress, vText
from pydantic import BaseModel
from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from trialpath.delivery import Attachment, DeliveryError, OutgoingMessage, Provider
from trialpath.models import AgentAssignment, AgentCursor, CsTask, Message, utcnow
from trialpath.templating import Product, Renderer, TemplateProblem, message_context

ICS_MESSAGES = frozenset({"call_invite", "call_booked", "call_rescheduled"})


class Recipient(BaseModel):
    name: str
    email: str
    phone: str | None = None
    locale: str = "en"
    timezone: str = "UTC"
    company: str = ""


class TrialFacts(BaseModel):
    day: int
    days_left: int
    ends_on: date
    activated: bool
    activation_progress: int
    extended_days: int = 0
    plan: str | None = None


class CallFacts(BaseModel):
    at: datetime | None
    agent: str | None
    duration_minutes: int
    version: int


class SendMessageInput(BaseModel):
    workflow_id: str
    user_id: str
    occurrence: str
    message: str
    channel: str
    category: str
    persona: str | None
    recipient: Recipient
    trial: TrialFacts
    call: CallFacts | None = None
    alert: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"{self.workflow_id}:{self.occurrence}/{self.channel}"


class SendResult(BaseModel):
    key: str
    channel: str
    template: str
    content_hash: str
    status: str
    provider_message_id: str | None = None


class AssignAgentInput(BaseModel):
    workflow_id: str
    agents: list[str]


class CsTaskInput(BaseModel):
    key: str
    user_id: str
    agent: str | None
    reason: str


class MessagingActivities:
    def __init__(
        self,
        engine: Engine,
        renderer: Renderer,
        providers: Mapping[str, Provider],
        product: Product,
        sender: str,
    ) -> None:
        self.engine = engine
        self.renderer = renderer
        self.providers = providers
        self.product = product
        self.sender = sender

    @activity.defn(name="send_message")
    def send_message(self, request: SendMessageInput) -> SendResult:
        key = request.key
        with Session(self.engine) as session:
            row = session.get(Message, key)
            if row is not None and row.status in ("sent", "failed"):
                return _result(row)
        if row is None:
            row = self._write_row(request)
        return self._deliver(request, row)

    def _write_row(self, request: SendMessageInput) -> Message:
        context = self._context(request)
        try:
            rendered = self.renderer.render(
                request.channel,
                request.message,
                request.persona,
                request.recipient.locale,
                context,
            )
        except TemplateProblem as err:
            raise ApplicationError(str(err), type="TemplateError", non_retryable=True) from err
        row = Message(
            key=request.key,
            workflow_id=request.workflow_id,
            user_id=request.user_id,
            step=f"{request.occurrence}/{request.channel}",
            message=request.message,
            channel=request.channel,
            category=request.category,
            persona=request.persona,
            locale=request.recipient.locale,
            recipient=self._address(request),
            subject=rendered.subject or rendered.title,
            html=rendered.html,
            text=rendered.text,
            template=rendered.template,
            content_hash=rendered.content_hash,
            provider=self._provider(request.channel).name,
        )
        with Session(self.engine) as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                # Another attempt wrote it first: use that row, never a second one.
                session.rollback()
                existing = session.get(Message, request.key)
                assert existing is not None
                return existing
            session.refresh(row)
        return row

    def _deliver(self, request: SendMessageInput, row: Message) -> SendResult:
        outgoing = self._outgoing(request, row)
        try:
            receipt = self._provider(request.channel).deliver(outgoing)
        except DeliveryError as err:
            if not err.permanent:
                raise
            self._finish(row.key, status="failed", error=str(err))
            raise ApplicationError(str(err), type="DeliveryRejected", non_retryable=True) from err
        return self._finish(row.key, status="sent", provider_message_id=receipt.message_id)

    def _finish(self, key: str, **changes: Any) -> SendResult:
        with Session(self.engine) as session:
            row = session.get(Message, key)
            assert row is not None
            for name, value in changes.items():
                setattr(row, name, value)
            if changes.get("status") == "sent":
                row.sent_at = utcnow()
            session.add(row)
            session.commit()
            session.refresh(row)
            return _result(row)

    def _provider(self, channel: str) -> Provider:
        return self.providers[channel]

    def _address(self, request: SendMessageInput) -> str:
        if request.channel == "email":
            return request.recipient.email
        if request.channel == "sms":
            return request.recipient.phone or ""
        if request.channel == "support":
            return self.product.support_email
        return request.user_id

    def _context(self, request: SendMessageInput) -> dict[str, Any]:
        call = request.call
        return message_context(
            product=self.product,
            channel=request.channel,
            message=request.message,
            user=request.recipient.model_dump(),
            persona=request.persona,
            trial=request.trial.model_dump(),
            call=call.model_dump() if call else None,
            alert=request.alert,
        )

    def _outgoing(self, request: SendMessageInput, row: Message) -> OutgoingMessage:
        context = self._context(request)
        headers: dict[str, str] = {}
        if row.category == "marketing" and row.channel == "email":
            headers["List-Unsubscribe"] = f"<{context['links']['unsubscribe']}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        attachments: tuple[Attachment, ...] = ()
        if request.message in ICS_MESSAGES and request.channel == "email" and request.call:
            attachments = (
                Attachment("invite.ics", "text/calendar", call_invitation(request, self.product)),
            )
        title = row.subject if row.channel == "in_app" else ""
        return OutgoingMessage(
            key=row.key,
            channel=row.channel,
            category=row.category,
            sender=self.sender,
            recipient=row.recipient,
            subject=row.subject,
            html=row.html,
            text=row.text,
            title=title,
            headers=headers,
            attachments=attachments,
        )

    @activity.defn(name="assign_agent")
    def assign_agent(self, request: AssignAgentInput) -> str:
        """Round-robin over the agents, shared by all trials; the same trial always gets the
        same answer, however often the activity is retried."""
        if not request.agents:
            raise ApplicationError("no CS agents configured", non_retryable=True)
        for _ in range(5):
            with Session(self.engine) as session:
                existing = session.get(AgentAssignment, request.workflow_id)
                if existing is not None:
                    assigned: str = existing.agent
                    return assigned
                # One atomic increment (SQLite and PostgreSQL alike): concurrent trials never
                # read the same position.
                taken: int | None = session.execute(
                    update(AgentCursor)
                    .where(col(AgentCursor.id) == 1)
                    .values(position=col(AgentCursor.position) + 1)
                    .returning(col(AgentCursor.position))
                ).scalar()
                if taken is None:
                    session.add(AgentCursor(id=1, position=0))
                else:
                    agent: str = request.agents[(taken - 1) % len(request.agents)]
                    session.add(AgentAssignment(workflow_id=request.workflow_id, agent=agent))
                try:
                    session.commit()
                except IntegrityError:
                    # Another trial created the cursor row first, or this trial's own retry
                    # assigned it meanwhile: look again.
                    session.rollback()
                    continue
                if taken is not None:
                    return agent
        raise ApplicationError("could not assign an agent after 5 attempts")

    @activity.defn(name="open_cs_task")
    def open_cs_task(self, request: CsTaskInput) -> None:
        with Session(self.engine) as session:
            if session.get(CsTask, request.key) is None:
                session.add(
                    CsTask(
                        key=request.key,
                        user_id=request.user_id,
                        agent=request.agent,
                        reason=request.reason,
                    )
                )
                session.commit()


def _result(row: Message) -> SendResult:
    return SendResult(
        key=row.key,
        channel=row.channel,
        template=row.template,
        content_hash=row.content_hash,
        status=row.status,
        provider_message_id=row.provider_message_id,
    )


def call_invitation(request: SendMessageInput, product: Product) -> bytes:
    """An iCalendar invitation; the same UID with a higher SEQUENCE updates it in calendars."""
    assert request.call is not None and request.call.at is not None
    cal = Calendar()
    cal.add("prodid", "-//Trialpath//success call//EN")
    cal.add("version", "2.0")
    cal.add("method", "REQUEST")
    event = Event()
    event.add("uid", f"{request.workflow_id}-success-call@trialpath")
    event.add("sequence", request.call.version)
    event.add("dtstamp", utcnow())
    event.add("dtstart", request.call.at)
    event.add("dtend", request.call.at + timedelta(minutes=request.call.duration_minutes))
    agent = request.call.agent or "our team"
    event.add("summary", f"{product.name} onboarding call with {agent}")
    event.add("description", f"A {request.call.duration_minutes}-minute call to get you set up.")
    organizer = vCalAddress(f"mailto:{product.support_email}")
    organizer.params["cn"] = vText(f"{agent} ({product.name})")
    event["organizer"] = organizer
    attendee = vCalAddress(f"mailto:{request.recipient.email}")
    attendee.params["cn"] = vText(request.recipient.name)
    attendee.params["role"] = vText("REQ-PARTICIPANT")
    event.add("attendee", attendee, encode=False)
    cal.add_component(event)
    data: bytes = cal.to_ical()
    return data

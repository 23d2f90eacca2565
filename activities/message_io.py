"""What the messaging activities take and give back: a send's request (recipient, trial and
call facts), a step's channels, a send's result, a template failure for support."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel

TEMPLATE_BROKEN = "template_broken"
"""A step result's status when its template could not be rendered: nothing written or sent."""


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
    activated_day: int | None = None
    """The trial day the user activated on (not the day this message goes out)."""


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
    max_attempts: int = 0
    """The workflow's retry limit for this send (0: none); the last attempt records failure."""
    unless_read: str | None = None
    """The key of an in-app message: if the user has read it, this copy is not sent (it is
    recorded as skipped). A journey fact the workflow cannot know: the database has it."""

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
    error: str | None = None


class ChannelPlan(BaseModel):
    """One channel of a step: its retry limit, and where it falls back when it fails for good."""

    channel: str
    max_attempts: int = 0
    """Provider calls before the channel is settled (0: no limit); set when it has a fallback."""
    fallback: str | None = None
    """The channel sent instead when this one is settled `failed` (SMS → email)."""


class SendStepInput(BaseModel):
    """Every channel of one step of the journey, sent by one activity."""

    message: SendMessageInput
    """What the channels share; its `channel` and `max_attempts` are replaced by each plan's."""
    channels: list[ChannelPlan]

    def send(self, channel: str, max_attempts: int = 0) -> SendMessageInput:
        return self.message.model_copy(update={"channel": channel, "max_attempts": max_attempts})


class TemplateFailure(BaseModel):
    """A message that could not be rendered at send time, for support to look at."""

    workflow_id: str
    user_id: str
    occurrence: str
    message: str
    channel: str
    error: str
    attempt: int
    retry_at: datetime | None
    """When the step is tried again; None: given up."""
    gave_up: str | None = None
    """Why the step is given up without a further attempt (it went stale meanwhile)."""

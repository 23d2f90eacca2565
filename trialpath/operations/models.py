"""Trialpath's own database: trials, events, stage changes, messages (the outbox), CS work."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel

from trialpath.operations.sealing import SealedJSON, SealedString


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database: SQLite stores no zone and gives back
    naive values, which are UTC by construction here."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _ts(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UtcDateTime(), nullable=nullable))


def _sealed(column: str, default: str | None = None, *, required: bool = False) -> Any:
    """A column of personal data, encrypted at rest when TRIALPATH_ENCRYPT_AT_REST is set
    (trialpath/operations/sealing.py); NULL allowed when its default is None."""
    if required:
        return Field(sa_column=Column(SealedString(column), nullable=False))
    return Field(default=default, sa_column=Column(SealedString(column), nullable=default is None))


def _sealed_json(column: str) -> Any:
    return Field(default_factory=dict, sa_column=Column(SealedJSON(column), nullable=False))


class TrialBase(SQLModel):
    user_id: str = Field(primary_key=True, max_length=128)
    workflow_id: str = Field(index=True, max_length=140)
    persona: str | None = Field(default=None, index=True)
    stage: str = Field(default="qualifying", index=True)
    urgency: str | None = None
    activated: bool = False
    experiment_arm: str = "default"
    cs_owner: str | None = None
    converted_plan: str | None = None
    mrr: float | None = None


class Trial(TrialBase, table=True):
    """One row per trial, kept current by the workflow; survives the workflow's completion."""

    __tablename__ = "trials"

    name: str | None = _sealed("trials.name")
    email: str | None = _sealed("trials.email")
    phone: str | None = _sealed("trials.phone")
    locale: str = "en"
    timezone: str = "UTC"
    company: str | None = None
    signup_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    seconds_per_day: float = Field(default=86400.0, sa_column_kwargs={"server_default": "86400"})
    """The trial's clock: real seconds per journey day (86400: real time; the demo's are a few
    seconds). Durations read from the other timestamps are scaled by it into journey time."""
    activated_at: datetime | None = _ts()
    trial_ends_at: datetime | None = _ts()
    converted_at: datetime | None = _ts()
    ended_at: datetime | None = _ts()
    status: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """The last `status` query answer, so a trial can be read after its workflow is gone."""
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )
    erased_at: datetime | None = _ts()
    """When the user's personal data was erased: nothing writes it back afterwards."""
    persona_source: str | None = Field(default=None, max_length=20)
    """How the persona was known: signup, qualifier, inferred, defaulted (None: not yet)."""
    persona_at: datetime | None = _ts()
    source: str | None = Field(default=None, index=True, max_length=100)
    """Where the user came from, as the KPIs group it (`Acquisition.channel`); None: not
    given (trials started before it was recorded)."""
    utm_source: str | None = Field(default=None, max_length=200)
    utm_medium: str | None = Field(default=None, max_length=200)
    utm_campaign: str | None = Field(default=None, max_length=200)
    referrer: str | None = Field(default=None, max_length=500)
    landing_page: str | None = Field(default=None, max_length=500)
    journey_version: int | None = Field(default=None, index=True)
    """The stored journey version (`journey_versions.id`) the trial runs; None: started before
    versions were recorded."""


class JourneyVersion(SQLModel, table=True):
    """A journey definition some trial has run, stored once per content: what `trialpath journey
    versions|show|diff` read, and what `journey migrate` moves trials to."""

    __tablename__ = "journey_versions"

    id: int | None = Field(default=None, primary_key=True)
    content_hash: str = Field(unique=True, max_length=64)
    """SHA-256 of the definition's canonical JSON: the same rules, the same version, whatever
    the file's comments or layout."""
    label: str = Field(max_length=100)
    """The file's own `version` string (several versions may share one when it was not bumped)."""
    definition: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    source: str | None = Field(default=None, max_length=500)
    """Where it was loaded from the first time (a path)."""
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )


class TrialEvent(SQLModel, table=True):
    """A product action reported for a trial user (the KPI tables read these)."""

    __tablename__ = "trial_events"

    id: str = Field(primary_key=True, max_length=200)
    user_id: str = Field(index=True, max_length=128)
    name: str = Field(index=True, max_length=100)
    occurred_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    recorded_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )
    counted: bool = True
    """False for events older than the trial: recorded, but not counted toward activation."""
    properties: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class StageChange(SQLModel, table=True):
    __tablename__ = "stage_changes"
    __table_args__ = (UniqueConstraint("user_id", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(index=True, max_length=128)
    seq: int
    """Position in the trial's stage history: a retried write never duplicates a change."""
    from_stage: str | None = None
    to_stage: str
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))


class Message(SQLModel, table=True):
    """Every message the journey sends, written before the provider is called (the outbox)."""

    __tablename__ = "messages"

    key: str = Field(primary_key=True, max_length=300)
    """Idempotency key `{workflow_id}:{step}/{channel}`: one row, one send, whatever retries."""
    workflow_id: str = Field(index=True, max_length=140)
    user_id: str = Field(index=True, max_length=128)
    step: str
    message: str = Field(index=True)
    channel: str = Field(index=True)
    category: str
    persona: str | None = None
    locale: str = "en"
    recipient: str = _sealed("messages.recipient", required=True)
    subject: str = _sealed("messages.subject", "")
    html: str = _sealed("messages.html", "")
    text: str = _sealed("messages.text", "")
    template: str
    content_hash: str
    status: str = "pending"
    """pending (row written, not handed to the provider), sending (handed over, outcome not
    known yet), sent, failed (refused for good), skipped (the user opted out meanwhile),
    unknown (the last attempt allowed timed out and the provider could not be asked: not sent
    again, nor on a fallback channel, so it is never sent twice)."""
    provider: str = "outbox"
    provider_message_id: str | None = Field(default=None, index=True, max_length=200)
    error: str | None = _sealed("messages.error")
    attempts: int = 0
    """Times the provider was called for this row."""
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )
    attempted_at: datetime | None = _ts()
    sent_at: datetime | None = _ts()
    delivery_status: str | None = None
    """The provider's last word after sending: delivered, bounce, open, click, undelivered..."""
    read_at: datetime | None = _ts()
    """In-app messages: when the user read it."""
    updated_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(
            UtcDateTime(), nullable=False, default=utcnow, onupdate=utcnow, index=True
        ),
    )
    """When the row last changed (sent, delivered, read): what `trialpath export` cuts on."""
    cta_label: str | None = None
    """The button of an in-app message (front matter `cta_label`); None: no button."""
    cta_url: str | None = Field(default=None, max_length=2000)
    """Where the button leads: `cta_path` in the product, with its UTM parameters."""


class MessageEvent(SQLModel, table=True):
    """What a provider reported about a sent message (webhooks), once per provider event."""

    __tablename__ = "message_events"

    id: str = Field(primary_key=True, max_length=200)
    """The provider's event id (SendGrid `sg_event_id`, Twilio `MessageSid:status`)."""
    provider: str
    message_key: str | None = Field(default=None, index=True, max_length=300)
    provider_message_id: str | None = Field(default=None, index=True, max_length=200)
    type: str
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    payload: dict[str, Any] = _sealed_json("message_events.payload")
    recorded_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )


class Preference(SQLModel, table=True):
    """Whether a user accepts marketing messages on a channel (no row: yes)."""

    __tablename__ = "preferences"

    user_id: str = Field(primary_key=True, max_length=128)
    channel: str = Field(primary_key=True, max_length=20)
    subscribed: bool = True
    source: str
    """api, link (one-click unsubscribe), bounce, spamreport, provider (SendGrid unsubscribe),
    stop (an SMS STOP reply), cli."""
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )


class AgentCursor(SQLModel, table=True):
    """Round-robin position over the CS agents, shared by every trial."""

    __tablename__ = "agent_cursor"

    id: int = Field(default=1, primary_key=True)
    position: int = 0


class AgentAssignment(SQLModel, table=True):
    __tablename__ = "agent_assignments"

    workflow_id: str = Field(primary_key=True, max_length=140)
    agent: str
    assigned_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )


class Agent(SQLModel, table=True):
    """A success-call agent's calendar settings, seeded from the journey's `[call] agents` the
    first time they are needed; edited with `trialpath agents` or /v1/agents afterwards."""

    __tablename__ = "agents"

    name: str = Field(primary_key=True, max_length=64)
    timezone: str = Field(max_length=64)
    hours_start: str = Field(max_length=5)
    """HH:MM, in the agent's time zone."""
    hours_end: str = Field(max_length=5)
    days: str = Field(max_length=27)
    """The working weekdays, comma-separated: mon,tue,wed,thu,fri."""
    daily_capacity: int
    active: bool = True
    """False: removed; offered no new calls, the calls already booked keep them."""
    bookings: int = 0
    """Bumped by every booking in the transaction that takes the slot: two bookings for the
    same agent wait for each other (the row's lock), so neither misses the other's call."""
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )


class CallSlot(SQLModel, table=True):
    """A success call an agent is booked for: the time is taken until the row is deleted (the
    call moved or the trial ended before it)."""

    __tablename__ = "call_slots"
    __table_args__ = (
        UniqueConstraint("agent", "start_at"),
        UniqueConstraint("workflow_id", "request"),
    )

    id: int | None = Field(default=None, primary_key=True)
    agent: str = Field(index=True, max_length=64)
    start_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False, index=True))
    end_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    workflow_id: str = Field(index=True, max_length=140)
    request: int
    """The trial's calendar request that took it: a retried request finds its slot again."""
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )


class CsTask(SQLModel, table=True):
    """Work for support: opened by the journey (a stalled B2B or urgent trial, an activated
    user whose activity dropped), listed, claimed, snoozed and closed with an outcome by
    support (`trialpath.support.tasks`). The outcome goes back to the trial's workflow."""

    __tablename__ = "cs_tasks"

    key: str = Field(primary_key=True, max_length=300)
    """`<workflow id>:<journey occurrence>`: one task per alert, however often it is retried."""
    user_id: str = Field(index=True, max_length=128)
    workflow_id: str | None = Field(default=None, max_length=140)
    kind: str = Field(default="stalled", max_length=40)
    """stalled, inactive, no_show, call_unassigned (`journey.TaskKind`)."""
    agent: str | None = None
    """The trial's CS owner when the task was opened."""
    owner: str | None = Field(default=None, index=True, max_length=100)
    """Whose task it is: the trial's CS owner at first, whoever claims it then; None: nobody's."""
    reason: str
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )
    done: bool = Field(default=False, index=True)
    """Closed."""
    claimed_at: datetime | None = _ts()
    snoozed_until: datetime | None = _ts()
    """Out of the open queue until then."""
    closed_at: datetime | None = _ts()
    outcome: str | None = Field(default=None, max_length=40)
    """How it was closed (`journey.TaskOutcome`)."""
    note: str | None = _sealed("cs_tasks.note")
    """Support's words on closing (may name the person: sealed at rest, cleared on erasure)."""
    updated_at: datetime | None = _ts()


class PendingSignal(SQLModel, table=True):
    """A signal accepted by the API and not yet confirmed delivered to its workflow.

    Written in the same transaction as the event it carries, so an accepted event reaches the
    workflow even if Temporal is briefly unreachable: a background task retries until it is.
    """

    __tablename__ = "pending_signals"

    id: int | None = Field(default=None, primary_key=True)
    workflow_id: str = Field(index=True, max_length=140)
    signal: str
    payload: dict[str, Any] = _sealed_json("pending_signals.payload")
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )
    attempts: int = 0
    delivered_at: datetime | None = _ts()
    failed: bool = False
    """Given up: the trial ended or vanished before delivery."""
    last_error: str | None = None


class IdempotencyRecord(SQLModel, table=True):
    """The answer to a POST sent with an `Idempotency-Key`, replayed for the same request."""

    __tablename__ = "idempotency_records"

    key: str = Field(primary_key=True, max_length=64)
    """sha256 of the API key and the Idempotency-Key header: keys are scoped per client."""
    user_id: str | None = Field(default=None, index=True, max_length=128)
    """The user the request was about (erasure deletes the stored answer with the rest)."""
    request_hash: str = Field(max_length=64)
    status_code: int | None = None
    """None while the first request is being processed."""
    body: str | None = _sealed("idempotency_records.body")
    content_type: str | None = None
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )


class AuditEntry(SQLModel, table=True):
    """One write to Trialpath (an API key's request, a CLI command): who, what, about whom,
    when, with what result. Holds no personal data: the user id is replaced by a pseudonym
    when the user is erased (`trialpath.operations.erasure`)."""

    __tablename__ = "audit_entries"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False, index=True)
    )
    actor: str = Field(index=True, max_length=100)
    """The API key's name, or `cli:<login>` for a command run on a server."""
    role: str = Field(max_length=20)
    action: str = Field(index=True, max_length=40)
    user_id: str | None = Field(default=None, index=True, max_length=128)
    status: int
    """The HTTP status answered (the CLI's too: 200 done, else the problem's status)."""
    detail: str | None = Field(default=None, max_length=200)
    """What the result was in a few words (the problem's title), never a request body."""

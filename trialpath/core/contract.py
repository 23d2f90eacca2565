"""The workflow contract: names and JSON payloads that support staff and other services rely on.

Every payload is plain JSON a person can type in the Temporal UI or CLI. Renaming anything here
breaks running workflows and their callers.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from temporalio.common import SearchAttributeKey

from trialpath.core.definition import (
    CHALLENGES,
    PERSONAS,
    URGENCIES,
    Challenge,
    JourneyDefinition,
    Persona,
    Urgency,
)

WORKFLOW_TYPE = "TrialWorkflow"

# The search attributes the workflow keeps, as Temporal's visibility, the API and support read
# them (their types are registered by `trialpath.operations.temporal`).
TRIAL_STAGE = SearchAttributeKey.for_keyword("TrialStage")
PERSONA = SearchAttributeKey.for_keyword("Persona")
ACTIVATED = SearchAttributeKey.for_bool("Activated")
TRIAL_ENDS_AT = SearchAttributeKey.for_datetime("TrialEndsAt")
EXPERIMENT_ARM = SearchAttributeKey.for_keyword("ExperimentArm")
CS_OWNER = SearchAttributeKey.for_keyword("CsOwner")
NEEDS_ATTENTION = SearchAttributeKey.for_keyword_list("NeedsAttention")
JOURNEY_VERSION = SearchAttributeKey.for_keyword("JourneyVersion")
SEARCH_ATTRIBUTES = (TRIAL_STAGE, PERSONA, ACTIVATED, TRIAL_ENDS_AT, EXPERIMENT_ARM, CS_OWNER)
DEFAULT_TASK_QUEUE = "trialpath"

SIGNAL_EVENT = "event"
SIGNAL_EVENTS = "events"
MAX_EVENTS_PER_SIGNAL = 100
SIGNAL_CALL_BOOKED = "call_booked"
SIGNAL_CALL_RESCHEDULED = "call_rescheduled"
SIGNAL_CALL_COMPLETED = "call_completed"
SIGNAL_CALL_NO_SHOW = "call_no_show"
SIGNAL_EXTEND_TRIAL = "extend_trial"
SIGNAL_CONVERTED = "converted"
SIGNAL_CANCEL = "cancel"
SIGNAL_UNSUBSCRIBE = "unsubscribe"
SIGNAL_TASK_CLOSED = "task_closed"
UPDATE_QUALIFY = "qualify"
UPDATE_MOVE_JOURNEY = "move_journey"
QUERY_STATUS = "status"
QUERY_MOVE_PROBLEMS = "move_problems"

Stage = Literal[
    "qualifying", "onboarding", "activated", "converting", "converted", "expired", "cancelled"
]
STAGES: tuple[Stage, ...] = (
    "qualifying",
    "onboarding",
    "activated",
    "converting",
    "converted",
    "expired",
    "cancelled",
)
TERMINAL_STAGES: frozenset[str] = frozenset({"converted", "expired", "cancelled"})
Locale = Literal["en", "fr"]
UnsubscribeChannel = Literal["email", "sms", "in_app", "all"]

# One spelling for Python's `re` and the ECMA-262 regexes of JSON Schema (`\s` differs between
# them, so control characters and the BOM are named).
_EMAIL_CHARACTER = r"[^@\s\x00-\x1f\x7f-\x9f\ufeff]"
_EMAIL_LIKE = re.compile(rf"{_EMAIL_CHARACTER}+@{_EMAIL_CHARACTER}+\.{_EMAIL_CHARACTER}+")
_USER_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
USER_ID_PATTERN = f"^{_USER_ID.pattern}$"
EMAIL_PATTERN = f"^{_EMAIL_LIKE.pattern}$"


WORKFLOW_ID_PREFIX = "trial-"


def workflow_id_for(user_id: str) -> str:
    return f"{WORKFLOW_ID_PREFIX}{user_id}"


def check_user_id(user_id: str) -> str:
    """User ids are opaque; an email address is refused so it never ends up in a workflow id."""
    if not 1 <= len(user_id) <= 128:
        # Before any pattern: the cost of checking never grows with what a caller sends.
        raise ValueError(f"user_id must be 1-128 characters long, got {len(user_id)}")
    if _EMAIL_LIKE.fullmatch(user_id):
        raise ValueError("user_id looks like an email address; use the product's opaque user id")
    if not _USER_ID.fullmatch(user_id):
        raise ValueError(
            "user_id must be 1-128 characters of letters, digits, '.', '_', ':' or '-'"
        )
    return user_id


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Qualification(_Payload):
    """Qualifier answers; at signup any of them may be missing (the qualifier is optional)."""

    role: Persona | None = None
    challenge: Challenge | None = None
    urgency: Urgency | None = None


class QualifyInput(_Payload):
    """Payload of the `qualify` update. Values are checked by the update validator so that a
    wrong answer is refused with a message naming the allowed values."""

    role: str
    challenge: str
    urgency: str

    def problems(self) -> list[str]:
        found = []
        for field, allowed in (
            ("role", PERSONAS),
            ("challenge", CHALLENGES),
            ("urgency", URGENCIES),
        ):
            value = getattr(self, field)
            if value not in allowed:
                found.append(f"{field} {value!r} is not one of {', '.join(allowed)}")
        return found


class QualifyResult(_Payload):
    persona: Persona


class JourneyVersionRef(_Payload):
    """A stored journey version (`journey_versions`, trialpath/operations/versions.py): its number,
    the SHA-256 of its canonical JSON, and the file's own `version` string."""

    id: int
    content_hash: str
    label: str

    @property
    def name(self) -> str:
        return f"v{self.id}"


class MoveJourney(_Payload):
    """Input of the `move_journey` update (and the `move_problems` query): the version to move
    the trial to, with its definition."""

    version: JourneyVersionRef
    definition: JourneyDefinition


class MoveResult(_Payload):
    moved_from: str | None
    """The version left (`v2`), None if the trial's was not known."""
    moved_to: str


class Acquisition(_Payload):
    """Where the user came from, as the product saw it at signup (UTM parameters of the landing
    URL, the referring page, the plan or landing page). Split the KPIs by it (`by=source`)."""

    utm_source: str | None = Field(default=None, min_length=1, max_length=200)
    utm_medium: str | None = Field(default=None, min_length=1, max_length=200)
    utm_campaign: str | None = Field(default=None, min_length=1, max_length=200)
    referrer: str | None = Field(default=None, min_length=1, max_length=500)
    """The referring page's URL (only its host names the source)."""
    landing_page: str | None = Field(default=None, min_length=1, max_length=500)
    """The page the user signed up from (e.g. the plan page: `/pricing/team`)."""

    def channel(self) -> str:
        """The source the KPIs group by: `utm_source` (lower case), else the referrer's host
        (without `www.`), else `direct`."""
        if self.utm_source:
            return self.utm_source.strip().lower()[:100] or DIRECT
        if self.referrer:
            host = urlsplit(self.referrer if "//" in self.referrer else f"//{self.referrer}")
            name = (host.hostname or "").removeprefix("www.")
            if name:
                return name[:100]
        return DIRECT


DIRECT = "direct"
"""The source of a signup that names none."""


class TrialProfile(_Payload):
    """Who the trial is for. Personal data lives here, never in ids or search attributes."""

    user_id: str
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=320)
    phone: str | None = None
    locale: Locale = "en"
    timezone: str = "UTC"
    company: str = ""
    signup_at: AwareDatetime | None = None
    """Defaults to the moment the workflow starts."""
    qualification: Qualification | None = None
    trial_days: int | None = Field(default=None, ge=1, le=365)
    seconds_per_day: float = Field(default=86400.0, gt=0)
    """The accelerated clock: real seconds per journey day, fixed for the trial's life."""
    source: Acquisition | None = None
    """Where the user came from (None: not given)."""

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        return check_user_id(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not _EMAIL_LIKE.fullmatch(value):
            raise ValueError("email is not an email address")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"timezone {value!r} is not an IANA time zone") from err
        return value


class _Relayed(_Payload):
    accepted_at: AwareDatetime | None = None
    """When the API (or CLI) accepted the command. The workflow applies the signal at that
    time, however late it gets to it; absent (older senders), at the time it processes it."""


class EventSignal(_Relayed):
    name: str = Field(min_length=1, max_length=100)
    occurred_at: AwareDatetime | None = None
    properties: dict[str, Any] = {}
    id: str | None = Field(default=None, max_length=200)


class EventsSignal(_Relayed):
    """Several events of one trial in one signal (the API relays a request's events so): one
    Temporal action instead of one per event. Each is applied as the `event` signal would; the
    batch's `accepted_at` stands for an event's own when it has none."""

    events: list[EventSignal] = Field(min_length=1, max_length=MAX_EVENTS_PER_SIGNAL)


class CallBooked(_Relayed):
    at: AwareDatetime
    agent: str | None = None


class CallRescheduled(_Relayed):
    at: AwareDatetime


class CallCompleted(_Relayed):
    notes: str | None = None


class CallNoShow(_Relayed):
    pass


class ExtendTrial(_Relayed):
    days: int = Field(ge=1, le=365)


class Converted(_Relayed):
    plan: str = Field(min_length=1, max_length=100)
    mrr: float | None = Field(default=None, ge=0)


class Cancel(_Relayed):
    reason: str | None = None


class Unsubscribe(_Relayed):
    channel: UnsubscribeChannel


class TaskClosed(_Relayed):
    """Support closed a task opened by the trial: its key, why it was opened, the outcome."""

    task: str = Field(min_length=1, max_length=300)
    kind: str = Field(min_length=1, max_length=40)
    outcome: str = Field(min_length=1, max_length=40)


class CallStatus(_Payload):
    state: Literal["none", "scheduled", "booked", "completed", "no_show"]
    at: datetime | None
    agent: str | None


class SentStatus(_Payload):
    key: str
    channel: str
    template: str
    at: datetime
    day: int
    message: str = ""
    """The journey's message (`drip_webhooks`); empty in the status of older trials."""
    due: datetime | None = None
    """When it was due: later than `at` when it waited for the send window or daily cap."""


class TrialStatus(_Payload):
    """Answer of the `status` query (times are wall-clock UTC)."""

    user_id: str
    persona: Persona | None
    stage: Stage
    activated: bool
    activated_at: datetime | None
    trial_ends_at: datetime
    next_wakeup: datetime | None
    call: CallStatus
    sent: list[SentStatus]
    events_seen: dict[str, int]
    urgency: Urgency | None = None
    unsubscribed: list[str] = []
    trial_day: int = 0
    ends_on: date | None = None
    needs_attention: list[str] = []
    """Why a human should look now (the `NeedsAttention` search attribute)."""
    open_tasks: dict[str, str] = {}
    """Support tasks opened for this trial and not closed: key → kind."""
    journey_version: str | None = None
    """The stored journey version the trial runs (`v3`); None for trials started before."""
    skipped: list[str] = []
    """Steps given up without being sent (gone stale, done already, off the path)."""
    summary: str = ""

"""What callers of the trial operations send and get back: the commands (validated at the
edge: the API's request bodies, the CLI's options), the answers, and the problems an operation
reports, which the API maps to HTTP statuses and the CLI to messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from trialpath.core.contract import (
    EMAIL_PATTERN,
    USER_ID_PATTERN,
    Acquisition,
    Locale,
    Qualification,
    TrialProfile,
    UnsubscribeChannel,
    check_user_id,
)
from trialpath.core.definition import Challenge, Persona, Urgency
from trialpath.delivery.preferences import SURVEY_SCALES

MAX_EVENTS_PER_REQUEST = 100


# --- Problems --------------------------------------------------------------------------------


class TrialProblem(Exception):
    """Base of the errors an operation reports to its caller."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidRequest(TrialProblem):
    status = 422
    title = "Invalid request"


class TrialNotFound(TrialProblem):
    status = 404
    title = "Trial not found"


class TrialConflict(TrialProblem):
    status = 409
    title = "Conflict"


class TrialEnded(TrialConflict):
    title = "Trial has ended"


class Unavailable(TrialProblem):
    status = 503
    title = "Temporarily unavailable"


# --- Commands --------------------------------------------------------------------------------


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        # U+0000 ends strings in C and PostgreSQL refuses it in text; a lone surrogate (JSON
        # allows "\ud800") has no UTF-8 form to store or send. Refused here, in any field or
        # property, rather than failing where it is stored or rendered.
        problem = unstorable(data)
        if problem is not None:
            raise ValueError(problem)
        return data


def unstorable(value: Any, depth: int = 0) -> str | None:
    """What makes `value` (text, or JSON holding text) unstorable, or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return "text may not contain the NUL character (U+0000)"
        try:
            value.encode()
        except UnicodeEncodeError:
            return "text may not contain lone surrogates (U+D800 to U+DFFF)"
        return None
    if depth > 32:  # JSON nested deeper is stored as JSON, escaped
        return None
    items: list[Any] = []
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple):
        items = list(value)
    for item in items:
        problem = unstorable(item, depth + 1)
        if problem is not None:
            return problem
    return None


class StartTrial(Command):
    # The patterns are the validators' rules, stated for clients and API tools; the validators
    # still decide (after bounding the length) and say what is wrong in their own words.
    user_id: str = Field(
        description="The product's opaque user id (never an email address).",
        json_schema_extra={"pattern": USER_ID_PATTERN, "minLength": 1, "maxLength": 128},
    )
    email: str = Field(
        json_schema_extra={"pattern": EMAIL_PATTERN, "minLength": 3, "maxLength": 320}
    )
    name: str = Field(min_length=1, max_length=200)
    """How messages greet the user (required: a trial without it was refused all along)."""
    phone: str | None = None
    locale: Locale = "en"
    timezone: str = "UTC"
    company: str = ""
    trial_days: int | None = Field(default=None, ge=1, le=365)
    qualification: Qualification | None = None
    source: Acquisition | None = None
    """Where the user came from: UTM parameters, referrer, landing page (KPIs `by=source`)."""

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        return check_user_id(value)

    def profile(self, seconds_per_day: float) -> TrialProfile:
        # No signup time: the workflow takes its own start time, the clock its timers run on.
        return TrialProfile(**self.model_dump(exclude_none=False), seconds_per_day=seconds_per_day)


COMPARED_ON_RESTART = (
    "email",
    "name",
    "phone",
    "locale",
    "timezone",
    "company",
    "trial_days",
    "qualification",
)


class TrialCreated(BaseModel):
    user_id: str
    workflow_id: str
    run_id: str | None
    signup_at: datetime
    """When the trial started (as seen by the API for a new one; the workflow's start time for
    an existing one)."""
    persona: Persona | None
    trial: StartTrial


class QualifyCommand(Command):
    role: Persona
    challenge: Challenge
    urgency: Urgency


class NewEvent(Command):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    occurred_at: AwareDatetime | None = None
    properties: dict[str, Any] = {}
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class EventResult(BaseModel):
    id: str
    name: str
    duplicate: bool
    counted: bool = True
    """False: the trial had ended (or ended as this event was sent): stored for the KPIs
    after the trial (retention, upsell, referral), not counted toward activation."""


class EventsAccepted(BaseModel):
    accepted: int
    duplicates: int
    events: list[EventResult]


class CallCommand(Command):
    # Stated in the schema too (JSON Schema's if/then): a booked or rescheduled call has a time.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {
                "properties": {"action": {"enum": ["booked", "rescheduled"]}},
                "required": ["action"],
            },
            "then": {"required": ["at"], "properties": {"at": {"type": "string"}}},
        }
    )

    action: Literal["booked", "rescheduled", "completed", "no_show"]
    at: AwareDatetime | None = None
    agent: str | None = Field(default=None, max_length=100)
    notes: str | None = Field(default=None, max_length=5000)


class ExtensionCommand(Command):
    days: int = Field(ge=1, le=60)


class ConversionCommand(Command):
    plan: str = Field(min_length=1, max_length=100)
    mrr: float | None = Field(default=None, ge=0)


class UnsubscribeCommand(Command):
    channel: UnsubscribeChannel


class SurveyAnswer(Command):
    # Stated in the schema too: a CSAT score is 1 to 5.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {
                "properties": {"survey": {"enum": ["csat", "onboarding"]}},
                "required": ["survey"],
            },
            "then": {"properties": {"score": {"maximum": SURVEY_SCALES["csat"]}}},
        }
    )

    survey: Literal["csat", "ces", "onboarding"] = Field(
        description="csat: after the success call; onboarding: the onboarding as a whole (CSAT "
        "at activation or the trial's end); ces: effort, after the first value."
    )
    score: int = Field(ge=1, le=7, description="csat and onboarding: 1 to 5; ces: 1 to 7.")
    comment: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _in_scale(self) -> SurveyAnswer:
        top = SURVEY_SCALES[self.survey]
        if self.score > top:
            raise ValueError(f"a {self.survey} score is 1 to {top}")
        return self


class SurveyRecorded(BaseModel):
    user_id: str
    survey: str
    score: int
    duplicate: bool
    """The user had already answered this survey: the first answer is kept."""


class Accepted(BaseModel):
    user_id: str
    accepted: Literal[True] = True
    signal: str


class Erased(BaseModel):
    user_id: str
    cancelled: bool
    erased: bool
    history_deleted: bool = False
    """Whether Temporal deleted the workflow history too (servers without that API keep it
    until their retention period ends)."""
    erased_rows: dict[str, int] = {}
    """What this call wiped, per store (`trials`, `messages`, `outbox files`...)."""
    runs_deleted: int = 0
    """Workflow runs whose history this call deleted (continue-as-new makes several)."""
    history_pending: int = 0
    """Runs Temporal had not finished deleting when this call stopped waiting for it
    (`TRIALPATH_ERASE_WAIT_SECONDS`): call again later to confirm."""
    nothing_left: bool = False
    """True when there was nothing left to erase (a repeated call)."""


class TrialSummary(BaseModel):
    user_id: str
    workflow_id: str
    running: bool
    stage: str | None
    persona: str | None
    activated: bool | None
    trial_ends_at: datetime | None
    cs_owner: str | None
    started_at: datetime | None


class TrialPage(BaseModel):
    items: list[TrialSummary]
    next_page_token: str | None

"""The journey definition: a TOML file validated here, loaded once per trial.

Running trials keep the definition they loaded at start (it travels in workflow state), so an
edit to the file only changes trials started afterwards.
"""

from __future__ import annotations

import re
import tomllib
from datetime import time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Persona = Literal["technical", "business", "executive"]
Urgency = Literal["this_week", "this_month", "evaluating"]
Challenge = Literal["integrations", "team_coordination", "strategic_oversight"]
Channel = Literal["email", "sms", "in_app", "support"]
Category = Literal["marketing", "transactional"]
ArmName = Literal["personalized", "generic", "holdout"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
"""personalized: each persona's own path; generic: one path for everyone; holdout:
transactional messages only (no onboarding emails at all)."""

PERSONAS: tuple[Persona, ...] = ("technical", "business", "executive")
URGENCIES: tuple[Urgency, ...] = ("this_week", "this_month", "evaluating")
CHALLENGES: tuple[Challenge, ...] = ("integrations", "team_coordination", "strategic_oversight")
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
GLOBAL_HOLDOUT = "global_holdout"
"""The arm of the trials held out of the whole journey (`[holdout]`): no onboarding at all."""
HOLDOUT_ARMS = ("holdout", GLOBAL_HOLDOUT)
"""Arms that get transactional messages only: the experiment's holdout and the global one."""
ARMS: tuple[str, ...] = ("default", "personalized", "generic", "holdout", GLOBAL_HOLDOUT)
"""Every arm a trial can be in: `default` when the journey runs no experiment."""
AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._'-]{0,63}$")
"""An agent's name: 1 to 64 letters, digits, '.', '_', "'" or '-' (it is a path segment)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Strict):
    start: time
    end: time

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError("send_window.end must be after send_window.start")
        return self


class AgentHours(_Strict):
    """An agent's working hours, in the agent's time zone."""

    start: time = time(9, 0)
    end: time = time(17, 0)

    @model_validator(mode="after")
    def _ordered(self) -> AgentHours:
        if self.end <= self.start:
            raise ValueError("hours.end must be after hours.start")
        return self


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"timezone {value!r} is not an IANA time zone") from err
    return value


class CallAgent(_Strict):
    """Someone who takes success calls: when they work (their own time zone) and how many
    calls a day they take. A plain name (older journeys) works 09:00-17:00 UTC, Monday to
    Friday, 8 calls a day."""

    name: str
    timezone: str = "UTC"
    hours: AgentHours = AgentHours()
    days: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
    daily_capacity: int = Field(default=8, ge=1, le=96)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not AGENT_NAME.fullmatch(value):
            raise ValueError(
                f"agent name {value!r}: 1 to 64 letters, digits, '.', '_', \"'\" or '-'"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("days")
    @classmethod
    def _days(cls, value: tuple[Weekday, ...]) -> tuple[Weekday, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError("days needs at least one weekday, each once")
        return value


class ActivationRule(_Strict):
    """Activated once every `require[event] >= count`, counting events within `within_days`."""

    within_days: float = Field(gt=0)
    require: dict[str, int]

    @field_validator("require")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        if not value or any(count < 1 for count in value.values()):
            raise ValueError("activation.require needs at least one event with a count >= 1")
        return value


UNLESS_READ_MAX_HOURS = 14 * 24.0


def _unless_read_problem(channels: tuple[Channel, ...], hours: float | None) -> str | None:
    if hours is not None and ("in_app" not in channels or len(set(channels)) < 2):
        return (
            "unless_read_hours needs in_app and another channel: the in-app copy goes first, "
            "the others follow unless it was read"
        )
    return None


class DripStep(_Strict):
    message: str
    day: int = Field(ge=0)
    skip_if: tuple[str, ...] = ()
    channels: tuple[Channel, ...] = ("email", "in_app")
    unless_read_hours: float | None = Field(default=None, gt=0, le=UNLESS_READ_MAX_HOURS)
    """In-app first (rules 4): the other channels follow this many hours later, unless the user
    read the in-app copy meanwhile (then they are skipped, and recorded as such)."""

    @model_validator(mode="after")
    def _unless_read(self) -> DripStep:
        problem = _unless_read_problem(self.channels, self.unless_read_hours)
        if problem:
            raise ValueError(f"drip step {self.message}: {problem}")
        return self


class PersonaPath(_Strict):
    label: str
    milestone: str
    activation: ActivationRule
    drip: tuple[DripStep, ...]

    @model_validator(mode="after")
    def _in_day_order(self) -> PersonaPath:
        # A trial takes the first step it has not done yet: a step listed after a later day
        # would wait behind it, silently late.
        for before, after in zip(self.drip, self.drip[1:], strict=False):
            if after.day < before.day:
                raise ValueError(
                    f"drip steps go in the order of their days: {after.message} (day "
                    f"{after.day}) is listed after {before.message} (day {before.day})"
                )
        names = [step.message for step in self.drip]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"a drip step is listed twice: {', '.join(twice)}")
        return self

    def steps(self) -> dict[str, int]:
        """The persona's onboarding steps, each event with the count it needs: the events
        its activation rule requires, then its milestone (once) if not among them. The
        checklist shows them; onboarding completion asks each done once."""
        return {
            **self.activation.require,
            self.milestone: self.activation.require.get(self.milestone, 1),
        }


class ChecklistItem(_Strict):
    """How the onboarding checklist shows one event: a label and where in the product to do it."""

    label: str = Field(min_length=1, max_length=120)
    path: str = Field(default="/", min_length=1, max_length=500)

    @field_validator("path")
    @classmethod
    def _in_product(cls, value: str) -> str:
        if not value.startswith(("/", "https://", "http://")) or value.startswith("//"):
            raise ValueError("a checklist path starts with / (or is a full http(s) URL)")
        return value


class MessageSpec(_Strict):
    channels: tuple[Channel, ...]
    category: Category
    immediate: bool = False
    fallback: Channel | None = None
    """Channel used instead of `sms` when the user has no phone number, and instead of any
    channel whose send failed `fallback_after_attempts` times or was refused."""
    unless_read_hours: float | None = Field(default=None, gt=0, le=UNLESS_READ_MAX_HOURS)
    """In-app first (rules 4): the other channels follow this many hours later, unless the user
    read the in-app copy meanwhile (then they are skipped, and recorded as such)."""

    @model_validator(mode="after")
    def _unless_read(self) -> MessageSpec:
        problem = _unless_read_problem(self.channels, self.unless_read_hours)
        if problem:
            raise ValueError(problem)
        return self


class StallRule(_Strict):
    days: float = Field(gt=0)
    alert_after_days: float = Field(gt=0)
    max_nudges: int = Field(ge=0)
    key_events: tuple[str, ...]
    """The progress events: one of them ends a stall (a login alone is not progress)."""
    inactive_after_days: float | None = Field(default=None, gt=0)
    """After activation, no progress event for this many days opens a support task
    (`inactive_alert`), not a marketing nudge. None: not watched (journeys before rules 4)."""


class CallOffer(_Strict):
    """Who is offered a call with an agent (rules 4); the others get the self-serve booking
    link. A trial is offered one when its arm is one of `arms`, its persona one of `personas`,
    and its urgency one of `urgency` or (`company`) it gave a company name."""

    urgency: tuple[Urgency, ...] = URGENCIES
    personas: tuple[Persona, ...] = PERSONAS
    arms: tuple[str, ...] = ARMS
    company: bool = False
    """True: a trial with a company (B2B) is offered a call whatever its urgency."""

    @field_validator("arms")
    @classmethod
    def _arms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(ARMS))
        if unknown:
            raise ValueError(f"call.offer_to.arms: unknown arms {unknown} (known: {list(ARMS)})")
        return value


class CallRule(_Strict):
    agents: tuple[CallAgent, ...] = Field(min_length=1)
    hour: time
    """The first time of day (user's time) a call is proposed at on the urgency's day."""
    duration_minutes: int = Field(gt=0, le=480)
    day_by_urgency: dict[Urgency, int]
    window_days: int = Field(default=3, ge=1, le=30)
    """Rules 4: a call is proposed in the first free slot from the urgency's day at `hour`
    (or `lead_hours` from now, if later), within this many local days."""
    lead_hours: float = Field(default=2.0, ge=0, le=72)
    """A proposed call is at least this far away."""
    offer_to: CallOffer | None = None
    """None: every trial is offered a call (journeys written before rules 4)."""

    @field_validator("agents")
    @classmethod
    def _unique(cls, value: tuple[CallAgent, ...]) -> tuple[CallAgent, ...]:
        names = [a.name for a in value]
        if len(set(names)) != len(names):
            raise ValueError("call.agents: each agent's name once")
        return value

    @property
    def agent_names(self) -> tuple[str, ...]:
        return tuple(agent.name for agent in self.agents)

    @field_validator("day_by_urgency")
    @classmethod
    def _complete(cls, value: dict[Urgency, int]) -> dict[Urgency, int]:
        missing = set(URGENCIES) - set(value)
        if missing:
            raise ValueError(f"call.day_by_urgency lacks {sorted(missing)}")
        return value


class Inference(_Strict):
    challenge: dict[Challenge, Persona]
    events: dict[str, Persona] = {}


class Experiment(_Strict):
    """Arms with weights; each user is assigned one, deterministically from the user id."""

    name: str = Field(min_length=1)
    arms: dict[ArmName, float]
    control: ArmName = "generic"
    generic_persona: Persona = "business"
    """The path everyone in the `generic` arm follows, whatever their persona."""

    @model_validator(mode="after")
    def _valid(self) -> Experiment:
        if not self.arms or any(w < 0 for w in self.arms.values()):
            raise ValueError("experiment.arms needs at least one arm and no negative weight")
        if sum(self.arms.values()) <= 0:
            raise ValueError("experiment.arms weights must not all be zero")
        if self.control not in self.arms:
            raise ValueError(f"experiment.control {self.control!r} is not one of the arms")
        return self


class Surveys(_Strict):
    """When the journey asks for feedback (answers arrive as events)."""

    csat_after_call_hours: float = Field(default=2.0, gt=0)
    ces_after_milestone_hours: float = Field(default=1.0, gt=0)
    referral_after_conversion_days: float = Field(default=3.0, gt=0)
    csat_after_onboarding_hours: float | None = Field(default=None, gt=0, le=24 * 14)
    """Rules 5: CSAT about the whole onboarding, asked of everyone this long after activation
    (or the purchase, if that came first), or at the trial's end for those who did neither;
    None: not asked (journeys written before it)."""


class Holdout(_Strict):
    """A share of all trials held out of the whole journey (rules 5): transactional messages
    only, no call offered, whatever the experiment. Their conversion and revenue against the
    others' is what the journey adds (`incremental_*` KPIs)."""

    name: str = Field(min_length=1, max_length=100)
    """Salt of the stable hash (change it to draw a new holdout group)."""
    share: float = Field(ge=0, le=0.5)


class EndOfTrial(_Strict):
    before_days: tuple[int, ...]
    winback_days: tuple[int, ...]


REQUIRED_MESSAGES = (
    "welcome",
    "milestone",
    "activated",
    "stall_nudge",
    "support_alert",
    "call_invite",
    "call_booked",
    "call_rescheduled",
    "call_reminder_day",
    "call_reminder_hour",
    "call_rebook",
    "call_followup",
    "trial_extended",
    "welcome_paid",
)


class JourneyDefinition(_Strict):
    version: str
    trial_days: int = Field(gt=0, le=365)
    qualifier_timeout_hours: float = Field(gt=0)
    default_persona: Persona
    default_urgency: Urgency
    send_window: Window
    max_marketing_per_day: int = Field(ge=1)
    max_history_events: int = Field(ge=100)
    fallback_after_attempts: int = Field(default=3, ge=1, le=100)
    """Attempts on a channel before a message with a `fallback` uses it instead."""
    template_retry_hours: float = Field(default=1.0, gt=0)
    """A message whose template fails to render is tried again this much later."""
    template_retry_max: int = Field(default=24, ge=0)
    """Tries after the first before such a message is given up (support is alerted each time)."""
    stall: StallRule
    call: CallRule
    inference: Inference
    end_of_trial: EndOfTrial
    personas: dict[Persona, PersonaPath]
    messages: dict[str, MessageSpec]
    experiment: Experiment | None = None
    """None: everyone follows their persona's path (arm `default`)."""
    surveys: Surveys | None = None
    """None: no survey and no referral ask (journeys started before they existed)."""
    holdout: Holdout | None = None
    """None: no global holdout (only the experiment's own arms)."""
    checklist: dict[str, ChecklistItem] = {}
    """Labels and in-product paths of the onboarding checklist's steps, by event name (the
    personas' activation requirements and milestones); an event without one is shown by name."""

    @model_validator(mode="after")
    def _consistent(self) -> JourneyDefinition:
        missing = set(PERSONAS) - set(self.personas)
        if missing:
            raise ValueError(f"personas lacks {sorted(missing)}")
        needed: set[str] = set(REQUIRED_MESSAGES)
        needed |= {f"trial_ending_{d}" for d in self.end_of_trial.before_days}
        needed |= {f"winback_{d}" for d in self.end_of_trial.winback_days}
        if self.surveys is not None:
            needed |= {"survey_csat", "survey_ces", "referral_ask"}
            if self.surveys.csat_after_onboarding_hours is not None:
                needed.add("survey_onboarding")
        if self.stall.inactive_after_days is not None:
            needed.add("inactive_alert")
        lacking = needed - set(self.messages)
        if lacking:
            raise ValueError(f"messages lacks {sorted(lacking)}")
        return self

    def message(self, name: str) -> MessageSpec:
        """The spec of a named message; drip steps are marketing messages on their channels."""
        if name in self.messages:
            return self.messages[name]
        for path in self.personas.values():
            for step in path.drip:
                if step.message == name:
                    return MessageSpec(
                        channels=step.channels,
                        category="marketing",
                        unless_read_hours=step.unless_read_hours,
                    )
        raise KeyError(f"unknown message {name!r}")


class DefinitionError(ValueError):
    """The journey file is missing, not TOML, or not a valid journey."""


def load_definition(path: Path) -> JourneyDefinition:
    return parse_definition(read_journey_file(path), path)


def read_journey_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as err:
        raise DefinitionError(f"journey file {path} does not exist") from err
    except OSError as err:
        raise DefinitionError(f"journey file {path} cannot be read: {err}") from err


def parse_definition(text: bytes, path: Path) -> JourneyDefinition:
    """The definition in `text`, the contents of the journey file `path` (named in errors)."""
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise DefinitionError(f"journey file {path} is not valid TOML: {err}") from err
    try:
        return JourneyDefinition.model_validate(data)
    except ValidationError as err:
        raise DefinitionError(f"journey file {path} is invalid:\n{err}") from err

"""What a trial remembers (`TrialState` and its parts), its clock (`JourneyClock`: real time to
journey time), the steps the rules ask the workflow for (`Send`, `OfferCall`... `Step`), the
calendar helpers in the user's time zone, and the workflow's input (`TrialInput`).

Pure data: no rules (they are in `trialpath.core.journey`, which re-exports these names), no
temporalio, no I/O. Carried in workflow histories: a change here must keep old payloads valid
(new fields get defaults).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from trialpath.core.contract import JourneyVersionRef, Stage, TrialProfile
from trialpath.core.definition import Category, Channel, JourneyDefinition, Persona, Urgency

DAY = timedelta(days=1)
MAX_REMEMBERED_EVENT_IDS = 1000
JOURNEY_SPAN = timedelta(days=36500)
"""Journey times are kept within this span of signup: an accelerated clock maps a real time
far from signup to centuries away (and past `datetime`'s range)."""


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class JourneyClock(_State):
    """Maps wall-clock time to journey time. With `seconds_per_day` = 86400 they are equal; the
    demo and tests shrink days so a trial plays in a minute. Both clocks meet at signup."""

    origin: datetime
    seconds_per_day: float = 86400.0

    @property
    def scale(self) -> float:
        return 86400.0 / self.seconds_per_day

    def journey(self, real: datetime) -> datetime:
        """The journey time of a real time; bounded to `JOURNEY_SPAN` around signup, so a real
        time far from it (an old event on a fast clock) never overflows."""
        span = JOURNEY_SPAN / self.scale
        offset = min(max(real - self.origin, -span), span)
        return self.origin + offset * self.scale

    def real(self, journey: datetime) -> datetime:
        return self.origin + (journey - self.origin) / self.scale

    def real_duration(self, journey: timedelta) -> timedelta:
        return journey / self.scale


class CallState(_State):
    state: Literal["none", "scheduled", "booked", "completed", "no_show"] = "none"
    at: datetime | None = None
    agent: str | None = None
    version: int = 0
    """Bumped on every new time, so reminders and invitations are per version."""
    since: datetime | None = None
    """When the current version was set: reminders already past at that moment are skipped."""
    rebook_offered: bool = False
    chosen_by_user: bool = False
    """The user picked this time (booked or rescheduled): the journey never moves it."""
    notes: str | None = None
    completed_at: datetime | None = None
    self_serve: bool = False
    """Rules 4: sent the self-serve booking link instead of a proposed call."""
    requests: int = 0
    """Rules 4: calendar requests made so far; each is numbered, so a retried one is the same."""
    slot_version: int = 0
    """Rules 4: the call version the calendar was last asked about (an agent's slot taken for
    that time, or none free then): a newer version still needs an agent."""
    forward_from: datetime | None = None
    """Rules 4: a stalled user's call should move earlier, to a free slot from this time."""
    released: bool = False
    """Rules 4: the trial ended and its call still to come was released from the calendar."""


class Queued(_State):
    occurrence: str
    message: str
    due: datetime
    extra: dict[str, Any] = {}
    unless_read: str | None = None
    """A follow-up (rules 4): the occurrence whose in-app copy, once read, makes this one moot."""
    skip_if: list[str] = []
    stale_at: datetime | None = None
    """A follow-up is given up when the message it follows would have been (rules 4)."""


class SentItem(_State):
    key: str
    occurrence: str
    message: str
    channel: Channel
    template: str
    at: datetime
    day: int
    due: datetime | None = None
    """When the step was due: a marketing message sent later waited for the send window or
    the daily cap (`trialpath simulate` counts them)."""


class Held(_State):
    """A step whose template failed to render on some channels: retried at `retry_at`."""

    channels: list[Channel]
    retry_at: datetime
    attempts: int = 1
    counted: bool = False
    """Whether a channel already went out (and counted toward the daily marketing cap)."""
    counted_on: str | None = None
    """The local date it counted on (rules 2): a retry that day is the same message, not
    another one, so that day's cap does not hold it back."""
    in_app_first: bool = False
    """The held step is the in-app copy of a message whose other channels follow (rules 4)."""


class Conversion(_State):
    plan: str
    mrr: float | None
    at: datetime


PersonaSource = Literal["signup", "qualifier", "inferred", "defaulted"]
"""How the persona was known: answered at signup or in the qualifier, inferred from the
challenge or the events, or the default (nothing to go on; rules 4, `inferred` before)."""


class Cancellation(_State):
    reason: str | None
    at: datetime


TaskKind = Literal["stalled", "inactive", "no_show", "call_unassigned"]
"""Why a support task was opened (also a `NeedsAttention` reason while it is open)."""
TaskOutcome = Literal["reached_user", "call_booked", "no_answer", "not_a_fit", "resolved"]
"""How support closed a task."""
TASK_OUTCOMES: tuple[TaskOutcome, ...] = (
    "reached_user",
    "call_booked",
    "no_answer",
    "not_a_fit",
    "resolved",
)


class SupportOutcome(_State):
    task: str
    kind: str
    outcome: str
    at: datetime


class TrialState(_State):
    """Everything the journey knows about one trial; carried across continue-as-new."""

    user_id: str
    signup_at: datetime
    timezone: str
    has_phone: bool
    company: str
    ends_on: date
    """Last local day of the trial; the trial ends at the following local midnight."""
    qualify_deadline: datetime
    persona: Persona | None = None
    persona_source: PersonaSource | None = None
    persona_at: datetime | None = None
    role: Persona | None = None
    challenge: str | None = None
    urgency: Urgency | None = None
    extended_days: int = 0
    extensions: int = 0
    activated_at: datetime | None = None
    activated_as: Persona | None = None
    """The persona whose rule the trial activated under."""
    milestone_at: datetime | None = None
    converted: Conversion | None = None
    cancelled: Cancellation | None = None
    unsubscribed: list[str] = []
    events_seen: dict[str, int] = {}
    counted: dict[str, int] = {}
    """Events per name that happened inside the trial (those before signup or after the end
    are only in `events_seen`)."""
    earliest: dict[str, list[datetime]] = {}
    """For events named by an activation rule, the earliest occurrence times inside the trial,
    as many as any rule asks for: the N-th is when the count reached N, even if events arrive
    out of order."""
    seen_event_ids: list[str] = []
    last_key_event_at: datetime | None = None
    nudges: int = 0
    nudged_for: datetime | None = None
    nudge_done_at: datetime | None = None
    nudge_decided_at: datetime | None = None
    """When the last nudge that reached the user was decided (rules 3): what the user did
    before it is no progress since the nudge, what they did after is, however late it arrives."""
    alerted_for: datetime | None = None
    alerts: int = 0
    call: CallState = Field(default_factory=CallState)
    done: dict[str, Literal["sent", "skipped"]] = {}
    queued: list[Queued] = []
    held: dict[str, Held] = {}
    """Steps waiting to retry channels whose template could not be rendered."""
    sent: list[SentItem] = []
    marketing_days: dict[str, int] = {}
    """Marketing messages sent per local date, for the daily cap."""
    stage: Stage = "qualifying"
    arm: str = "default"
    """The experiment arm (`default` when the journey runs no experiment)."""
    """The stage last recorded by the workflow (for change detection)."""
    stage_changes: int = 0
    """How many stage changes were recorded: numbers them so a retried write is no duplicate."""
    rules: int = 1
    """The version of the rules this trial decides by (see `RULES`); 1 for trials started before
    versions were recorded."""
    nudge_delivered: bool = False
    """Whether the nudge of the current stall episode reached the user (rules 2): a support
    alert says "no key action since the stall nudge" only then."""
    abandoned: list[str] = []
    """Steps whose broken template was given up on since the workflow last looked (rules 2):
    support is told, and the list emptied, by the workflow (`take_abandoned`)."""
    tasks: dict[str, str] = {}
    """Support tasks opened for this trial and not closed yet: task key → kind."""
    support: list[SupportOutcome] = []
    """Support tasks closed, with their outcome."""
    inactive_alerted_for: datetime | None = None
    """The inactivity episode (rules 4: its last progress time) support was last told of."""
    inactive_alerts: int = 0


# --- Steps the workflow performs -------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    occurrence: str
    message: str
    category: Category
    channels: tuple[Channel, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    anchor: datetime | None = None
    """For a stall nudge or support alert: the stall episode it was decided for. Signals that
    arrive while it is being sent may move the episode on; `mark_done` records this one."""
    decided_at: datetime | None = field(default=None, compare=False)
    """When the rules asked for this send."""
    stale_at: datetime | None = field(default=None, compare=False)
    """When the message stops making sense: a broken template is not retried past it."""
    in_app_first: bool = False
    """The in-app copy of a message whose other channels follow unless it is read (rules 4):
    `mark_done` queues the follow-up."""
    unless_read: str | None = None
    """A follow-up: the occurrence whose in-app copy, if the user read it, means this send is
    skipped. The workflow asks the send activity to check (a fact of the database)."""
    due: datetime | None = field(default=None, compare=False)
    """When it was due (a held retry: when the retry was); recorded with what is sent."""


@dataclass(frozen=True)
class AssignAgent:
    """Ask for the next agent of the round-robin, then call `assign_agent`."""

    agents: tuple[str, ...]


@dataclass(frozen=True)
class OfferCall:
    """Rules 4: ask the agents' calendars (an activity), then call `apply_call_offer`.

    `purpose`: `propose` (the earliest free slot in [earliest, latest) inside the user's send
    window: the call the journey proposes), `forward` (the same, to move a stalled user's call
    earlier), `attach` (an agent free at `at`, the time the user chose; `prefer` first)."""

    request: int
    purpose: Literal["propose", "forward", "attach"]
    version: int
    """The call version when asked: an answer for an older one is not applied."""
    earliest: datetime | None = None
    latest: datetime | None = None
    at: datetime | None = None
    prefer: str | None = None


@dataclass(frozen=True)
class ReleaseCall:
    """Rules 4: free the trial's calls after `after` in the calendar (an activity), then call
    `apply_call_released`."""

    after: datetime


@dataclass(frozen=True)
class Wait:
    until: datetime | None


@dataclass(frozen=True)
class Finish:
    stage: Stage


Step = Send | AssignAgent | OfferCall | ReleaseCall | Wait | Finish


# --- Time helpers ----------------------------------------------------------------------------


def zone(state: TrialState) -> ZoneInfo:
    return ZoneInfo(state.timezone)


def local_date(state: TrialState, at: datetime) -> date:
    return at.astimezone(zone(state)).date()


def local_at(state: TrialState, day: date, at: time) -> datetime:
    """The instant `day` `at` o'clock in the user's zone, as UTC (DST-safe via zoneinfo)."""
    return datetime.combine(day, at, tzinfo=zone(state)).astimezone(ZoneInfo("UTC"))


def local_midnight(state: TrialState, day: date) -> datetime:
    return local_at(state, day, time(0, 0))


def trial_ends_at(state: TrialState) -> datetime:
    return local_midnight(state, state.ends_on + DAY)


def trial_day(state: TrialState, now: datetime) -> int:
    """Local calendar days since signup (rules 2): a user who signs up at 23:00 is on day 1
    after midnight, in their time zone. Rules 1 counted 24-hour periods."""
    if state.rules >= 2:
        return max(0, (local_date(state, now) - local_date(state, state.signup_at)).days)
    return max(0, math.floor((now - state.signup_at) / DAY))


def days_left(state: TrialState, now: datetime) -> int:
    return max(0, (state.ends_on - local_date(state, now)).days)


# --- Workflow input --------------------------------------------------------------------------


class Carried(_State):
    """What a trial carries into its next run after continue-as-new."""

    definition: JourneyDefinition
    state: TrialState
    clock: JourneyClock
    version: JourneyVersionRef | None = None
    """The stored version of `definition` (None: the trial started before versions were
    recorded)."""


class TrialInput(_State):
    """Input of `TrialWorkflow`: the profile at signup, plus the carried state on later runs."""

    profile: TrialProfile
    carried: Carried | None = None

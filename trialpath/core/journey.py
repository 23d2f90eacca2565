"""Pure journey rules: given the definition, the trial state, an input and `now`, decide.

No temporalio, no I/O, no clock: every function takes `now` (journey time, timezone-aware UTC).
The workflow calls `next_step` in a loop, performs the step it gets (a send, an agent
assignment, a request to the agents' calendars), reports back with `mark_done` / `assign_agent` /
`apply_call_offer` / `apply_call_released`, and sleeps until the returned wake-up time or until a
signal changes the state. Signals and updates go through the `apply_*` functions.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from trialpath.core import moves
from trialpath.core.contract import (
    Stage,
    TrialProfile,
    Unsubscribe,
)
from trialpath.core.definition import (
    GLOBAL_HOLDOUT,
    HOLDOUT_ARMS,
    Channel,
    JourneyDefinition,
    MessageSpec,
    Persona,
    Urgency,
)

# What a trial remembers, its clock and the steps it asks for (re-exported: `journey.Send`...).
from trialpath.core.state import (
    DAY as DAY,
    JOURNEY_SPAN as JOURNEY_SPAN,
    MAX_REMEMBERED_EVENT_IDS as MAX_REMEMBERED_EVENT_IDS,
    TASK_OUTCOMES as TASK_OUTCOMES,
    AssignAgent as AssignAgent,
    CallState as CallState,
    Cancellation as Cancellation,
    Carried as Carried,
    Conversion as Conversion,
    Finish as Finish,
    Held as Held,
    JourneyClock as JourneyClock,
    OfferCall as OfferCall,
    PersonaSource as PersonaSource,
    Queued as Queued,
    ReleaseCall as ReleaseCall,
    Send as Send,
    SentItem as SentItem,
    Step as Step,
    SupportOutcome as SupportOutcome,
    TaskKind as TaskKind,
    TaskOutcome as TaskOutcome,
    TrialInput as TrialInput,
    TrialState as TrialState,
    Wait as Wait,
    days_left as days_left,
    local_at as local_at,
    local_date as local_date,
    local_midnight as local_midnight,
    trial_day as trial_day,
    trial_ends_at as trial_ends_at,
    zone as zone,
)

RULES = 5
"""The version of these rules a new trial starts with (`TrialState.rules`). A fix that changes
what the rules decide applies from the version that brings it, so a trial that started before
keeps deciding as its history did (the workflow picks the version behind `workflow.patched`).
2: stall and alert bookkeeping on delivery, held retries within their day and never silently
stale, activation by `occurred_at` after the end, call signals checked against time,
transactional messages never wait for the qualifier, local calendar trial days, the day-before
reminder at the same local time.
3: the welcome counts in the daily marketing cap; a held step whose reason to go out is gone
(conversion, cancellation, the stage moved on) is given up and support told; queued messages
about the trial or a call to come are stale once the trial has ended, and a no-show after the
end is not offered a rebook; a late event that shows the rule was met earlier moves
`activated_at` earlier; a key event after the nudge was decided is progress since the nudge.
4: a message with `unless_read_hours` goes in-app first, and its other channels follow that much
later unless the in-app copy was read meanwhile (the send activity checks, and records the copy
it did not send as skipped); success calls in the agents' calendars: a call is proposed in an
agent's free slot (inside the agent's hours and the user's send window, never double-booking),
only to the trials the journey offers one (`[call] offer_to`); the others, and those for whom
no slot is free, get the self-serve booking link (support is told of the latter); a time the
user chooses gets an agent free then; a call still to come is released when the trial converts
or is cancelled; an activated user with no progress for `stall.inactive_after_days` gets a
support task, not a nudge; a persona nobody answered and nothing hinted at is `defaulted`."""

# Lower is more important when two marketing messages compete for the same day.
PRIORITY_END_OF_TRIAL = 0
PRIORITY_ACTIVATED = 1
PRIORITY_NUDGE = 2
PRIORITY_DRIP = 3


# --- Start -----------------------------------------------------------------------------------


def start(
    defn: JourneyDefinition, profile: TrialProfile, signup_at: datetime, rules: int = RULES
) -> TrialState:
    """The state of a trial at signup (qualifier answers at signup already applied)."""
    tz = ZoneInfo(profile.timezone)
    days = profile.trial_days or defn.trial_days
    state = TrialState(
        user_id=profile.user_id,
        signup_at=signup_at,
        timezone=profile.timezone,
        has_phone=bool(profile.phone),
        company=profile.company,
        ends_on=signup_at.astimezone(tz).date() + timedelta(days=days),
        qualify_deadline=signup_at + timedelta(hours=defn.qualifier_timeout_hours),
        arm=assign_arm(defn, profile.user_id, rules),
        rules=rules,
    )
    answers = profile.qualification
    if answers is not None:
        state.role = answers.role
        state.challenge = answers.challenge
        state.urgency = answers.urgency
        if answers.role is not None:
            _set_persona(defn, state, answers.role, "signup", signup_at)
    return state


def assign_arm(defn: JourneyDefinition, user_id: str, rules: int = RULES) -> str:
    """The user's arm: under rules 5, the global holdout first (a stable hash of its name and
    the user id below its share); then the experiment's arm, a stable hash of the experiment
    name and the user id mapped onto the arms' weights. The same user always lands in the same
    arm."""
    holdout = defn.holdout
    if holdout is not None and rules >= 5 and holdout.share > 0:
        digest = hashlib.sha256(f"holdout:{holdout.name}:{user_id}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 < holdout.share:
            return GLOBAL_HOLDOUT
    experiment = defn.experiment
    if experiment is None:
        return "default"
    digest = hashlib.sha256(f"{experiment.name}:{user_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(experiment.arms.values())
    for arm, weight in experiment.arms.items():
        if point < weight:
            return arm
        point -= weight
    return next(reversed(experiment.arms))  # pragma: no cover  (rounding at the very top)


def path_persona(defn: JourneyDefinition, state: TrialState) -> Persona | None:
    """Whose path the messages follow: the user's persona, except in the `generic` arm."""
    return moves.path_of(defn, state.persona, state.arm)


# --- Stage -----------------------------------------------------------------------------------


def converting_from(defn: JourneyDefinition, state: TrialState) -> datetime:
    first = max(defn.end_of_trial.before_days, default=0)
    return local_midnight(state, state.ends_on - timedelta(days=first))


def stage_of(defn: JourneyDefinition, state: TrialState, now: datetime) -> Stage:
    if state.cancelled is not None:
        return "cancelled"
    if state.converted is not None:
        return "converted"
    if state.persona is None:
        return "qualifying"
    if now >= trial_ends_at(state):
        return "expired"
    if now >= converting_from(defn, state):
        return "converting"
    if state.activated_at is not None:
        return "activated"
    return "onboarding"


def is_ended(state: TrialState) -> bool:
    return state.cancelled is not None or state.converted is not None


# --- Persona ---------------------------------------------------------------------------------


def has_persona_evidence(defn: JourneyDefinition, state: TrialState) -> bool:
    """Whether `infer_persona` has something to go on (a challenge, persona-typed events)
    rather than falling back on the default persona."""
    return state.challenge in defn.inference.challenge or any(
        defn.inference.events.get(name) is not None for name in state.events_seen
    )


def infer_persona(defn: JourneyDefinition, state: TrialState) -> Persona:
    """From the challenge if it was answered, else from the persona-typed events seen so far
    (the persona with most such events; ties broken alphabetically), else the default."""
    if state.challenge in defn.inference.challenge:
        return defn.inference.challenge[state.challenge]
    votes: dict[Persona, int] = {}
    for name, count in state.events_seen.items():
        persona = defn.inference.events.get(name)
        if persona is not None:
            votes[persona] = votes.get(persona, 0) + count
    if votes:
        return max(sorted(votes), key=lambda p: votes[p])
    return defn.default_persona


def _set_persona(
    defn: JourneyDefinition,
    state: TrialState,
    persona: Persona,
    source: PersonaSource,
    now: datetime,
) -> None:
    state.persona = persona
    state.persona_source = source
    if state.persona_at is None:
        state.persona_at = now
    _check_milestone(defn, state, now)
    _check_activation(defn, state, now)


def apply_qualification(
    defn: JourneyDefinition,
    state: TrialState,
    role: Persona,
    challenge: str,
    urgency: Urgency,
    now: datetime,
) -> Persona:
    state.role = role
    state.challenge = challenge
    state.urgency = urgency
    _set_persona(defn, state, role, "qualifier", now)
    return role


def effective_urgency(defn: JourneyDefinition, state: TrialState) -> Urgency:
    return state.urgency or defn.default_urgency


# --- Events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventOutcome:
    accepted: bool
    """False for a duplicate id."""
    counted: bool
    """Whether it counts toward activation (inside the trial window)."""
    activated_now: bool = False


def apply_event(
    defn: JourneyDefinition,
    state: TrialState,
    name: str,
    occurred_at: datetime,
    event_id: str | None,
    now: datetime,
) -> EventOutcome:
    if event_id is not None:
        if event_id in state.seen_event_ids:
            return EventOutcome(accepted=False, counted=False)
        state.seen_event_ids.append(event_id)
        del state.seen_event_ids[:-MAX_REMEMBERED_EVENT_IDS]
    occurred_at = min(occurred_at, now)
    state.events_seen[name] = state.events_seen.get(name, 0) + 1
    inside = state.signup_at <= occurred_at < trial_ends_at(state)
    if not inside or is_ended(state):
        return EventOutcome(accepted=True, counted=False)
    state.counted[name] = state.counted.get(name, 0) + 1
    keep = max((p.activation.require.get(name, 0) for p in defn.personas.values()), default=0)
    if keep:
        times = state.earliest.setdefault(name, [])
        bisect.insort(times, occurred_at)
        del times[keep:]
    nudged = _nudge_cutoff(state)
    if (
        name in defn.stall.key_events
        and (state.last_key_event_at is None or occurred_at > state.last_key_event_at)
        # What the user did before the nudge that went out is no progress since it (rules 2):
        # arriving late, it must not open a new stall episode.
        and not (nudged is not None and occurred_at <= nudged)
    ):
        state.last_key_event_at = occurred_at
    was_activated = state.activated_at is not None
    _check_milestone(defn, state, now)
    _check_activation(defn, state, now)
    return EventOutcome(
        accepted=True,
        counted=True,
        activated_now=not was_activated and state.activated_at is not None,
    )


def activation_progress(defn: JourneyDefinition, state: TrialState) -> int:
    """Percent of the activation rule reached (each required count capped at its target)."""
    if state.persona is None:
        return 0
    rule = defn.personas[state.persona].activation
    if state.activated_at is not None:
        return 100
    deadline = state.signup_at + timedelta(days=rule.within_days)
    reached = sum(
        min(sum(1 for t in state.earliest.get(event, []) if t < deadline), need)
        for event, need in rule.require.items()
    )
    return math.floor(100 * reached / sum(rule.require.values()))


def activation_time(
    defn: JourneyDefinition, state: TrialState, persona: Persona
) -> datetime | None:
    """When the persona's rule became true: the latest of the moments each required count was
    reached, provided all are strictly within `within_days` of signup; None if not (yet)."""
    rule = defn.personas[persona].activation
    deadline = state.signup_at + timedelta(days=rule.within_days)
    reached: list[datetime] = []
    for event, need in rule.require.items():
        times = state.earliest.get(event, [])
        if len(times) < need or times[need - 1] >= deadline:
            return None
        reached.append(times[need - 1])
    return max(reached)


def _nudge_cutoff(state: TrialState) -> datetime | None:
    """Up to when what the user did is no progress since the last nudge that went out: its
    delivery (rules 2), its decision (rules 3: an event between the two counts, however late it
    arrives). None before rules 2."""
    if state.rules < 2:
        return None
    return state.nudge_decided_at if state.rules >= 3 else state.nudge_done_at


def _check_activation(defn: JourneyDefinition, state: TrialState, now: datetime) -> None:
    if state.persona is None or is_ended(state):
        return
    if state.activated_at is not None:
        if state.rules >= 3:
            # An event arriving late can show the rule the trial activated under was met
            # earlier than first thought.
            found = activation_time(defn, state, state.activated_as or state.persona)
            if found is not None and found < state.activated_at:
                state.activated_at = found
        return
    # Rules 2: decided by when the events happened (inside the rule's window), not by when
    # they arrived; proof that arrives after the end still activates.
    if now >= trial_ends_at(state) and state.rules < 2:
        return
    state.activated_at = activation_time(defn, state, state.persona)
    if state.activated_at is not None:
        state.activated_as = state.persona


def _check_milestone(defn: JourneyDefinition, state: TrialState, now: datetime) -> None:
    if state.persona is None or state.milestone_at is not None or is_ended(state):
        return
    if now >= trial_ends_at(state):
        return
    milestone = defn.personas[state.persona].milestone
    if state.counted.get(milestone):
        state.milestone_at = now
        _enqueue(state, "milestone", "milestone", now)


# --- Other signals ---------------------------------------------------------------------------


def _enqueue(
    state: TrialState,
    occurrence: str,
    message: str,
    due: datetime,
    extra: dict[str, Any] | None = None,
    *,
    unless_read: str | None = None,
    skip_if: Iterable[str] = (),
    stale_at: datetime | None = None,
) -> None:
    if occurrence in state.done or any(q.occurrence == occurrence for q in state.queued):
        return
    state.queued.append(
        Queued(
            occurrence=occurrence,
            message=message,
            due=due,
            extra=extra or {},
            unless_read=unless_read,
            skip_if=list(skip_if),
            stale_at=stale_at,
        )
    )


def _new_call_time(state: TrialState, message: str, at: datetime, now: datetime) -> None:
    state.call.at = at
    state.call.version += 1
    state.call.since = now
    _enqueue(state, f"{message}.{state.call.version}", message, now)


def call_problem(state: TrialState, action: str, at: datetime | None, now: datetime) -> str | None:
    """Why a call signal cannot be true at `now` (rules 2), or None: a call booked or moved
    into the past or past the trial's end, marked completed or missed before it starts."""
    ends = trial_ends_at(state)
    if action in ("booked", "rescheduled") and at is not None:
        if at <= now:
            return f"the call time {at.isoformat()} is in the past"
        if at >= ends:
            return (
                f"the call time {at.isoformat()} is after the trial ends ({ends.isoformat()}); "
                "extend the trial first"
            )
    if action in ("completed", "no_show") and state.call.at is not None and now < state.call.at:
        return (
            f"the call is at {state.call.at.isoformat()}: it cannot be "
            f"{'completed' if action == 'completed' else 'missed'} before it starts "
            "(reschedule it first if it happened earlier)"
        )
    return None


def _refused_by_time(state: TrialState, action: str, at: datetime | None, now: datetime) -> bool:
    return state.rules >= 2 and call_problem(state, action, at, now) is not None


def apply_call_booked(state: TrialState, at: datetime, agent: str | None, now: datetime) -> bool:
    if is_ended(state) or state.call.state == "completed":
        return False
    if _refused_by_time(state, "booked", at, now):
        return False
    if agent:
        state.call.agent = agent
    state.call.state = "booked"
    state.call.chosen_by_user = True
    _new_call_time(state, "call_booked", at, now)
    return True


def apply_call_rescheduled(state: TrialState, at: datetime, now: datetime) -> bool:
    if is_ended(state) or state.call.state not in ("scheduled", "booked", "no_show"):
        return False
    if _refused_by_time(state, "rescheduled", at, now):
        return False
    if state.call.state == "no_show":
        state.call.state = "booked"
    state.call.chosen_by_user = True
    _new_call_time(state, "call_rescheduled", at, now)
    return True


def apply_call_completed(state: TrialState, notes: str | None, now: datetime) -> bool:
    if state.call.state not in ("scheduled", "booked", "no_show") or is_ended(state):
        return False
    if _refused_by_time(state, "completed", None, now):
        return False
    state.call.state = "completed"
    state.call.notes = notes
    state.call.completed_at = now
    _enqueue(state, "call_followup", "call_followup", now)
    return True


def apply_call_no_show(state: TrialState, now: datetime) -> bool:
    if state.call.state not in ("scheduled", "booked") or is_ended(state):
        return False
    if _refused_by_time(state, "no_show", None, now):
        return False
    state.call.state = "no_show"
    if state.rules >= 3 and now >= trial_ends_at(state):
        return True  # Recorded; a rebook the trial no longer has room for is not offered.
    if not state.call.rebook_offered:
        state.call.rebook_offered = True
        _enqueue(state, "call_rebook", "call_rebook", now)
    return True


def apply_extension(state: TrialState, days: int, now: datetime) -> bool:
    """Moves the end of the trial, and with it every end-of-trial message not sent yet. An
    expired trial reopens from today."""
    if is_ended(state):
        return False
    today = local_date(state, now)
    base = state.ends_on if trial_ends_at(state) > now else today
    state.ends_on = base + timedelta(days=days)
    state.extended_days += days
    state.extensions += 1
    _enqueue(state, f"trial_extended.{state.extensions}", "trial_extended", now)
    return True


def apply_conversion(state: TrialState, plan: str, mrr: float | None, now: datetime) -> bool:
    if is_ended(state):
        return False
    state.converted = Conversion(plan=plan, mrr=mrr, at=now)
    state.queued = []
    _enqueue(state, "welcome_paid", "welcome_paid", now)
    return True


def apply_cancel(state: TrialState, reason: str | None, now: datetime) -> bool:
    if is_ended(state):
        return False
    state.cancelled = Cancellation(reason=reason, at=now)
    state.queued = []
    return True


def apply_unsubscribe(state: TrialState, request: Unsubscribe) -> bool:
    channels = ["email", "sms", "in_app"] if request.channel == "all" else [request.channel]
    added = [c for c in channels if c not in state.unsubscribed]
    state.unsubscribed.extend(added)
    return bool(added)


# --- Deciding the next step ------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    occurrence: str
    message: str
    due: datetime
    priority: int = PRIORITY_DRIP
    extra: dict[str, Any] = field(default_factory=dict)
    stale_at: datetime | None = None
    """After this instant the message no longer makes sense and is skipped."""
    skip_if: tuple[str, ...] = ()
    unless_read: str | None = None


def channels_for(
    defn: JourneyDefinition, state: TrialState, spec: MessageSpec
) -> tuple[Channel, ...]:
    """The channels a message actually goes to: SMS only with a phone number (else its
    fallback), and marketing never to an unsubscribed channel, nor to the holdout arm."""
    if spec.category == "marketing" and state.arm in HOLDOUT_ARMS:
        return ()
    chosen: list[Channel] = []
    for channel in spec.channels:
        if channel == "sms" and not state.has_phone:
            if spec.fallback is None:
                continue
            channel = spec.fallback
        if spec.category == "marketing" and channel in state.unsubscribed:
            continue
        if channel not in chosen:
            chosen.append(channel)
    return tuple(chosen)


def next_send_time(
    defn: JourneyDefinition,
    state: TrialState,
    due: datetime,
    now: datetime,
    counted_on: str | None = None,
    window: bool = True,
) -> datetime:
    """First instant at or after `due` inside the user's send window (any time of day without
    `window`: immediate messages) on a local day whose marketing cap is not reached
    (`counted_on`: a day the message itself already counted on, open to it whatever its cap)."""
    hours = defn.send_window
    at = max(due, now)
    day = local_date(state, at)
    for _ in range(400):
        if window:
            opens = local_at(state, day, hours.start)
            closes = local_at(state, day, hours.end)
        else:
            opens, closes = local_midnight(state, day), local_midnight(state, day + DAY)
        capped = (
            state.marketing_days.get(day.isoformat(), 0) >= defn.max_marketing_per_day
            and day.isoformat() != counted_on
        )
        if not capped and at < closes:
            return max(at, opens)
        day += DAY
        at = max(at, local_midnight(state, day))
    raise RuntimeError("no send slot found within 400 days")  # pragma: no cover


def _call_candidates(defn: JourneyDefinition, state: TrialState, now: datetime) -> list[_Candidate]:
    call = state.call
    if call.state not in ("scheduled", "booked") or call.at is None or call.since is None:
        return []
    found = []
    for message, before in (("call_reminder_day", DAY), ("call_reminder_hour", timedelta(hours=1))):
        due = call.at - before
        if message == "call_reminder_day" and state.rules >= 2:
            # The previous local day at the same local time, not 24 hours (DST).
            local = call.at.astimezone(zone(state))
            due = local_at(state, local.date() - DAY, local.time())
        if call.since <= due:
            found.append(_Candidate(f"{message}.{call.version}", message, due, stale_at=call.at))
    return found


def _trial_candidates(
    defn: JourneyDefinition, state: TrialState, now: datetime
) -> list[_Candidate]:
    """Welcome, activation, stall, drip and end-of-trial messages while the trial runs, or the
    win-back messages once it has expired."""
    assert state.persona is not None and state.persona_at is not None
    found: list[_Candidate] = []
    ends = trial_ends_at(state)
    eot = defn.end_of_trial
    if now >= ends:
        wins = sorted(eot.winback_days)
        for i, d in enumerate(wins):
            due = local_midnight(state, state.ends_on + timedelta(days=d))
            stale = (
                local_midnight(state, state.ends_on + timedelta(days=wins[i + 1]))
                if i + 1 < len(wins)
                else None
            )
            found.append(
                _Candidate(
                    f"winback_{d}", f"winback_{d}", due, PRIORITY_END_OF_TRIAL, stale_at=stale
                )
            )
        return found

    found.append(_Candidate("welcome", "welcome", state.persona_at, PRIORITY_END_OF_TRIAL))
    befores = sorted(eot.before_days, reverse=True)
    for i, d in enumerate(befores):
        due = local_midnight(state, state.ends_on - timedelta(days=d))
        stale = (
            local_midnight(state, state.ends_on - timedelta(days=befores[i + 1]))
            if i + 1 < len(befores)
            else ends
        )
        found.append(
            _Candidate(
                f"trial_ending_{d}", f"trial_ending_{d}", due, PRIORITY_END_OF_TRIAL, stale_at=stale
            )
        )
    if state.activated_at is not None:
        found.append(
            _Candidate(
                "activated", "activated", state.activated_at, PRIORITY_ACTIVATED, stale_at=ends
            )
        )
        found.extend(_inactive_candidates(defn, state, ends))
    else:
        found.extend(_stall_candidates(defn, state))
    if now < converting_from(defn, state):
        drip = _next_drip(defn, state)
        if drip is not None:
            found.append(drip)
    return found


def _survey_candidates(defn: JourneyDefinition, state: TrialState) -> list[_Candidate]:
    """CSAT after the success call, CES after the first-value milestone (while the trial
    runs), the referral ask after the purchase."""
    surveys = defn.surveys
    if surveys is None or state.cancelled is not None:
        return []
    found: list[_Candidate] = []
    ends = trial_ends_at(state)
    onboarding = _onboarding_survey(defn, state)
    if onboarding is not None:
        found.append(onboarding)
    if state.converted is None:
        if state.call.completed_at is not None:
            due = state.call.completed_at + timedelta(hours=surveys.csat_after_call_hours)
            found.append(_Candidate("survey_csat", "survey_csat", due, stale_at=ends))
        if state.milestone_at is not None:
            due = state.milestone_at + timedelta(hours=surveys.ces_after_milestone_hours)
            found.append(_Candidate("survey_ces", "survey_ces", due, stale_at=ends))
    else:
        due = state.converted.at + timedelta(days=surveys.referral_after_conversion_days)
        found.append(_Candidate("referral_ask", "referral_ask", due))
    return found


ONBOARDING_SURVEY = "survey_onboarding"
ONBOARDING_SURVEY_STALE = timedelta(days=3)


def _onboarding_survey(defn: JourneyDefinition, state: TrialState) -> _Candidate | None:
    """Rules 5: CSAT about the onboarding as a whole, for everyone (holdouts included: it is a
    question, not onboarding): `csat_after_onboarding_hours` after activation or the purchase,
    whichever came first, or at the trial's end for users who did neither. Given up three days
    after it was due (a late question is answered by few, and about something else)."""
    surveys = defn.surveys
    if state.rules < 5 or surveys is None or surveys.csat_after_onboarding_hours is None:
        return None
    delay = timedelta(hours=surveys.csat_after_onboarding_hours)
    moments = [state.activated_at, state.converted.at if state.converted else None]
    reached = [at for at in moments if at is not None]
    due = min(reached) + delay if reached else trial_ends_at(state)
    return _Candidate(
        ONBOARDING_SURVEY, ONBOARDING_SURVEY, due, stale_at=due + ONBOARDING_SURVEY_STALE
    )


def _stall_anchor(state: TrialState) -> datetime:
    assert state.persona_at is not None
    if state.last_key_event_at is None:
        return state.persona_at
    return max(state.persona_at, state.last_key_event_at)


def _stall_candidates(defn: JourneyDefinition, state: TrialState) -> list[_Candidate]:
    rule = defn.stall
    anchor = _stall_anchor(state)
    if state.nudged_for != anchor:
        if state.nudges >= rule.max_nudges:
            return []
        due = anchor + timedelta(days=rule.days)
        return [_Candidate(f"stall_nudge.{state.nudges + 1}", "stall_nudge", due, PRIORITY_NUDGE)]
    if state.alerted_for == anchor or state.nudge_done_at is None:
        return []
    due = state.nudge_done_at + timedelta(days=rule.alert_after_days)
    return [_Candidate(f"support_alert.{state.alerts + 1}", "support_alert", due, PRIORITY_NUDGE)]


def _inactive_anchor(state: TrialState) -> datetime:
    """The last sign of progress after activation: the activation, or a later progress event."""
    assert state.activated_at is not None
    if state.last_key_event_at is None:
        return state.activated_at
    return max(state.activated_at, state.last_key_event_at)


def _inactive_candidates(
    defn: JourneyDefinition, state: TrialState, ends: datetime
) -> list[_Candidate]:
    """Rules 4: an activated user with no progress event for `stall.inactive_after_days` is a
    drop in activity; support gets a task (one per episode), the user no marketing nudge."""
    days = defn.stall.inactive_after_days
    if state.rules < 4 or days is None or state.activated_at is None:
        return []
    if state.arm in HOLDOUT_ARMS:
        return []  # Nobody steps in: the holdout measures the journey against no onboarding.
    anchor = _inactive_anchor(state)
    if state.inactive_alerted_for == anchor:
        return []
    due = anchor + timedelta(days=days)
    return [
        _Candidate(
            f"inactive_alert.{state.inactive_alerts + 1}",
            "inactive_alert",
            due,
            PRIORITY_NUDGE,
            stale_at=ends,
        )
    ]


def inactive_context(defn: JourneyDefinition, state: TrialState, now: datetime) -> dict[str, Any]:
    """Context of an inactivity alert: always a support task, for the trial's CS owner."""
    anchor = _inactive_anchor(state)
    return {
        "reason": "no progress event since activation",
        "kind": "inactive",
        "user_id": state.user_id,
        "persona": state.persona,
        "urgency": effective_urgency(defn, state),
        "days_inactive": math.floor((now - anchor) / DAY),
        "activated_day": trial_day(state, state.activated_at) if state.activated_at else None,
        "cs_task": True,
        "agent": state.call.agent or "",
    }


def _next_drip(defn: JourneyDefinition, state: TrialState) -> _Candidate | None:
    persona = path_persona(defn, state)
    assert persona is not None
    signup_day = local_date(state, state.signup_at)
    for step in defn.personas[persona].drip:
        occurrence = f"drip.{step.message}"
        if occurrence in state.done:
            continue
        due = local_midnight(state, signup_day + timedelta(days=step.day))
        return _Candidate(
            occurrence,
            step.message,
            due,
            PRIORITY_DRIP,
            stale_at=due + timedelta(days=3),
            skip_if=step.skip_if,
        )
    return None


def alert_context(defn: JourneyDefinition, state: TrialState, now: datetime) -> dict[str, Any]:
    """Context of a support alert; a CS task is opened for B2B (company given) or urgent users."""
    urgency = effective_urgency(defn, state)
    return {
        "reason": "no key action since the stall nudge",
        "kind": "stalled",
        "user_id": state.user_id,
        "persona": state.persona,
        "urgency": urgency,
        "days_stalled": math.floor((now - _stall_anchor(state)) / DAY),
        "cs_task": bool(state.company) or urgency == "this_week",
        "agent": state.call.agent or "",
    }


def next_step(defn: JourneyDefinition, state: TrialState, now: datetime) -> Step:
    """What the workflow does next. Applies internal transitions (persona inference, stale
    and skipped messages) to `state` on the way."""
    while True:
        step = _decide(defn, state, now)
        if step is not None:
            return step


def _needs_agent(state: TrialState) -> bool:
    call = state.call
    return call.state == "none" or (call.agent is None and call.state in ("scheduled", "booked"))


def _before_persona(defn: JourneyDefinition, state: TrialState, now: datetime) -> Step:
    """While the qualifier is awaited (rules 2): transactional messages (a booked call's
    confirmation, an extension) go out at once; marketing waits for the persona."""
    wake = [state.qualify_deadline]
    for q in state.queued:
        spec = defn.message(q.message)
        if spec.category == "marketing" or q.occurrence in state.done:
            continue
        held = state.held.get(q.occurrence)
        due = max(q.due, held.retry_at) if held else q.due
        if due > now:
            wake.append(due)
            continue
        channels = channels_for(defn, state, spec)
        if held is not None:
            channels = tuple(c for c in channels if c in held.channels)
        if not channels:
            _skip(state, q.occurrence)
            return _before_persona(defn, state, now)
        return Send(q.occurrence, q.message, spec.category, channels, dict(q.extra))
    return Wait(min(wake))


def _decide(defn: JourneyDefinition, state: TrialState, now: datetime) -> Step | None:
    """One pass; None when it skipped messages, so the next pass sees what comes after them."""
    if state.rules >= 4:
        calendar = _calendar_step(defn, state, now)
        if calendar is not None:
            return calendar
    if state.cancelled is not None:
        for occurrence in list(state.held) if state.rules >= 3 else []:
            _skip(state, occurrence)  # Given up, and support told.
        return Finish("cancelled")
    if state.persona is None and state.converted is None:
        if now < state.qualify_deadline:
            if state.rules >= 2:
                return _before_persona(defn, state, now)
            return Wait(state.qualify_deadline)
        # Rules 4 tell a guess from the default: the qualifier's friction is measured by it.
        guessed = state.rules < 4 or has_persona_evidence(defn, state)
        source: PersonaSource = "inferred" if guessed else "defaulted"
        _set_persona(defn, state, infer_persona(defn, state), source, now)
        if state.rules >= 4:
            return None  # Decide again: the calendar comes first now the persona is known.

    candidates = [
        _Candidate(
            q.occurrence,
            q.message,
            q.due,
            extra=q.extra,
            stale_at=now if _off_path(defn, state, q) else _queued_stale_at(state, q),
            skip_if=tuple(q.skip_if),
            unless_read=q.unless_read,
        )
        for q in state.queued
    ]
    candidates.extend(_survey_candidates(defn, state))
    if state.converted is None:
        if state.rules < 4 and _needs_agent(state) and now < trial_ends_at(state):
            return AssignAgent(defn.call.agent_names)
        candidates.extend(_call_candidates(defn, state, now))
        candidates.extend(_trial_candidates(defn, state, now))

    skipped = False
    if state.rules >= 3:
        # A held step whose reason to go out is gone (a conversion, the stage moved on, the
        # episode closed): given up, and support told, rather than held forever.
        offered = {cand.occurrence for cand in candidates}
        for occurrence in [o for o in state.held if o not in offered]:
            _skip(state, occurrence)
            skipped = True
    wake: list[datetime] = []
    ready: list[tuple[int, datetime, _Candidate, MessageSpec]] = []
    for cand in candidates:
        if cand.occurrence in state.done:
            continue
        spec = defn.message(cand.message)
        if cand.stale_at is not None and now >= cand.stale_at:
            _skip(state, cand.occurrence)
            if cand.message == "stall_nudge" and state.rules >= 2:
                _after_nudge(state, now, _stall_anchor(state), delivered=False)
            skipped = True
            continue
        held = state.held.get(cand.occurrence)
        due = max(cand.due, held.retry_at) if held else cand.due
        capped_immediate = spec.category == "marketing" and spec.immediate and state.rules >= 3
        if (spec.category == "marketing" and not spec.immediate) or capped_immediate:
            counted_on = held.counted_on if held is not None and state.rules >= 2 else None
            at = next_send_time(defn, state, due, now, counted_on, window=not spec.immediate)
            if cand.stale_at is not None and at >= cand.stale_at:
                if now >= cand.due:
                    # No slot before it goes stale: wait for the stale time to skip it.
                    wake.append(cand.stale_at)
                else:
                    wake.append(cand.due)
                continue
        else:
            at = max(due, now)
        if at > now:
            wake.append(at)
            continue
        ready.append((cand.priority, cand.due, cand, spec))

    ready.sort(key=lambda item: (item[0], item[1]))
    for _, _, cand, spec in ready:
        if cand.skip_if and any(state.events_seen.get(e) for e in cand.skip_if):
            _skip(state, cand.occurrence)
            skipped = True
            continue
        channels = channels_for(defn, state, spec)
        held = state.held.get(cand.occurrence)
        if held is not None:
            channels = tuple(c for c in channels if c in held.channels)
        in_app_first = False
        if cand.unless_read is not None:
            channels = tuple(c for c in channels if c != "in_app")
        elif (
            state.rules >= 4
            and spec.unless_read_hours is not None
            and "in_app" in channels
            and len(channels) > 1
        ):
            # In-app first; the other channels are queued when it is done (`mark_done`).
            channels, in_app_first = ("in_app",), True
        if not channels:
            _skip(state, cand.occurrence)
            if cand.message == "stall_nudge":
                _after_nudge(state, now, _stall_anchor(state), delivered=False)
            skipped = True
            continue
        extra = dict(cand.extra)
        anchor = None
        if cand.message in ("stall_nudge", "support_alert"):
            anchor = _stall_anchor(state)
        if cand.message == "support_alert":
            extra = alert_context(defn, state, now)
        if cand.message == "inactive_alert":
            anchor = _inactive_anchor(state)
            extra = inactive_context(defn, state, now)
        return Send(
            cand.occurrence,
            cand.message,
            spec.category,
            channels,
            extra,
            anchor=anchor,
            stale_at=cand.stale_at,
            decided_at=now,
            in_app_first=in_app_first or (held is not None and held.in_app_first),
            unless_read=cand.unless_read,
            due=max(cand.due, held.retry_at) if held else cand.due,
        )

    if skipped:
        return None
    if state.converted is not None:
        # Still to come after the purchase (the referral ask): wait for it, then finish.
        return Wait(min(wake)) if wake else Finish("converted")
    stage = stage_of(defn, state, now)
    ends = trial_ends_at(state)
    if stage == "expired" and not wake and not state.queued:
        return Finish("expired")
    for boundary in (converting_from(defn, state), ends):
        if boundary > now:
            wake.append(boundary)
    return Wait(min(wake) if wake else None)


TRIAL_PATH_QUEUED = (
    "milestone",
    "trial_extended",
    "call_self_serve",
    "call_invite",
    "call_booked",
    "call_rescheduled",
    "call_rebook",
)
"""Queued messages about the trial and a call still to come: stale once the trial has ended
(rules 3), a held retry included. The follow-up of a call that took place still goes out."""


def _queued_stale_at(state: TrialState, queued: Queued) -> datetime | None:
    if queued.unless_read is not None:
        ends = trial_ends_at(state)
        return min(queued.stale_at, ends) if queued.stale_at is not None else ends
    if state.rules >= 3 and queued.message.startswith(TRIAL_PATH_QUEUED):
        return trial_ends_at(state)
    return None


def _off_path(defn: JourneyDefinition, state: TrialState, queued: Queued) -> bool:
    """A follow-up of a drip step that is no longer on the user's path (their persona changed
    since the in-app copy went): moot, like the rest of that path."""
    if queued.unless_read is None or not queued.unless_read.startswith("drip."):
        return False
    persona = path_persona(defn, state)
    return persona is None or all(s.message != queued.message for s in defn.personas[persona].drip)


FOLLOW_UP_SUFFIX = ".unless_read"


def follow_up_of(occurrence: str) -> str:
    """The occurrence of the copies that follow an in-app message unless it is read."""
    return occurrence + FOLLOW_UP_SUFFIX


def _follow_up_stale_at(defn: JourneyDefinition, state: TrialState, step: Send) -> datetime:
    """When the copies that follow an in-app message stop making sense: when the message itself
    would have (a drip step three days after its day, and once the trial is converting), and
    at the end of the trial in any case."""
    limits = [trial_ends_at(state)]
    if step.stale_at is not None:
        limits.append(step.stale_at)
    if step.occurrence.startswith("drip."):
        limits.append(converting_from(defn, state))
    return min(limits)


def skip_if_of(defn: JourneyDefinition, message: str) -> tuple[str, ...]:
    """The events whose being seen skips this drip step (none for other messages)."""
    for path in defn.personas.values():
        for step in path.drip:
            if step.message == message:
                return step.skip_if
    return ()


def _skip(state: TrialState, occurrence: str) -> None:
    held = state.held.pop(occurrence, None)
    state.done[occurrence] = "sent" if held is not None and held.counted else "skipped"
    state.queued = [q for q in state.queued if q.occurrence != occurrence]
    if held is not None and state.rules >= 2 and set(held.channels):
        # Gone stale while its broken template waited for a retry: support hears of it.
        state.abandoned.append(occurrence)


def take_abandoned(state: TrialState) -> list[str]:
    """The steps given up while their template was broken since the last call (rules 2)."""
    found, state.abandoned = state.abandoned, []
    return found


def _after_nudge(
    state: TrialState,
    now: datetime,
    anchor: datetime | None = None,
    delivered: bool = True,
    decided_at: datetime | None = None,
) -> None:
    state.nudges += 1
    if state.rules >= 2:
        # The episode the nudge was decided for, not one a signal opened while it was sent.
        state.nudged_for = anchor if anchor is not None else _stall_anchor(state)
        state.nudge_delivered = delivered
        state.nudge_done_at = now if delivered else None
        if delivered:
            state.nudge_decided_at = decided_at or now
        return
    state.nudged_for = _stall_anchor(state)
    state.nudge_done_at = now


@dataclass(frozen=True)
class Delivered:
    channel: Channel
    key: str
    template: str


def mark_done(
    defn: JourneyDefinition,
    state: TrialState,
    step: Send,
    delivered: Iterable[Delivered],
    now: datetime,
    broken: Iterable[Channel] = (),
) -> None:
    """Records a performed send and what follows from it (cap, stall bookkeeping, moving the
    call forward after a support alert).

    `broken`: channels whose template could not be rendered. The step is held and those
    channels are tried again `template_retry_hours` later (a fixed template then goes out),
    up to `template_retry_max` times; the channels that went out are not sent again."""
    if state.rules >= 2:
        _mark_done(defn, state, step, list(delivered), now, list(broken))
        return
    delivered = list(delivered)
    broken = [c for c in broken if c not in {d.channel for d in delivered}]
    held = state.held.get(step.occurrence)
    already_counted = held is not None and held.counted
    attempts = held.attempts if held is not None else 0
    if broken and attempts < defn.template_retry_max:
        state.held[step.occurrence] = Held(
            channels=broken,
            retry_at=now + timedelta(hours=defn.template_retry_hours),
            attempts=attempts + 1,
            counted=already_counted or bool(delivered),
        )
    else:
        state.held.pop(step.occurrence, None)
        state.done[step.occurrence] = "sent" if delivered or already_counted else "skipped"
        state.queued = [q for q in state.queued if q.occurrence != step.occurrence]
    day = trial_day(state, now)
    for item in delivered:
        state.sent.append(
            SentItem(
                key=item.key,
                occurrence=step.occurrence,
                message=step.message,
                channel=item.channel,
                template=item.template,
                at=now,
                day=day,
                due=step.due,
            )
        )
    if delivered and step.category == "marketing" and not already_counted:
        key = local_date(state, now).isoformat()
        state.marketing_days[key] = state.marketing_days.get(key, 0) + 1
    if held is not None:
        return  # A retry: what follows from the step already happened the first time.
    if step.message == "stall_nudge":
        _after_nudge(state, now)
    elif step.message == "support_alert":
        state.alerts += 1
        state.alerted_for = _stall_anchor(state)
        _bring_call_forward(defn, state, now)


def _mark_done(
    defn: JourneyDefinition,
    state: TrialState,
    step: Send,
    delivered: list[Delivered],
    now: datetime,
    broken: list[Channel],
) -> None:
    """`mark_done` under rules 2: a broken step is held for a retry only if the retry comes
    before the message goes stale (else it is given up at once, and support is told so); a
    retry counts toward the cap of its own day once; what follows from a nudge or an alert
    happens when it first reaches someone (or is given up), for the episode it was meant for."""
    broken = [c for c in broken if c not in {d.channel for d in delivered}]
    held = state.held.get(step.occurrence)
    counted_on = held.counted_on if held is not None else None
    reached = held is not None and held.counted
    attempts = held.attempts if held is not None else 0
    today = local_date(state, now).isoformat()
    if delivered and step.category == "marketing" and counted_on != today:
        # Once per local day it goes out on: a retry on its first day is the same message.
        state.marketing_days[today] = state.marketing_days.get(today, 0) + 1
        counted_on = today
    retry_at = now + timedelta(hours=defn.template_retry_hours)
    retry = (
        bool(broken)
        and attempts < defn.template_retry_max
        and (step.stale_at is None or retry_at < step.stale_at)
    )
    if retry:
        state.held[step.occurrence] = Held(
            channels=broken,
            retry_at=retry_at,
            attempts=attempts + 1,
            counted=reached or bool(delivered),
            counted_on=counted_on,
            in_app_first=step.in_app_first,
        )
    else:
        state.held.pop(step.occurrence, None)
        state.done[step.occurrence] = "sent" if delivered or reached else "skipped"
        state.queued = [q for q in state.queued if q.occurrence != step.occurrence]
        spec = defn.message(step.message)
        if step.in_app_first and spec.unless_read_hours is not None:
            # The other channels follow, unless the user reads the in-app copy meanwhile (the
            # send activity checks when they are due). Also when the in-app copy could not be
            # delivered: then nobody can have read it, and the message still reaches the user.
            _enqueue(
                state,
                follow_up_of(step.occurrence),
                step.message,
                now + timedelta(hours=spec.unless_read_hours),
                unless_read=step.occurrence,
                skip_if=skip_if_of(defn, step.message),
                stale_at=_follow_up_stale_at(defn, state, step),
            )
    day = trial_day(state, now)
    for item in delivered:
        state.sent.append(
            SentItem(
                key=item.key,
                occurrence=step.occurrence,
                message=step.message,
                channel=item.channel,
                template=item.template,
                at=now,
                day=day,
                due=step.due,
            )
        )
    first_reach = bool(delivered) and not reached
    given_up = not retry and not delivered and not reached
    if not (first_reach or given_up):
        return  # Held with nothing out yet, or a retry of a step that already reached someone.
    if step.message == "stall_nudge":
        _after_nudge(state, now, step.anchor, first_reach, step.decided_at)
    elif step.message == "support_alert" and first_reach:
        state.alerts += 1
        state.alerted_for = step.anchor if step.anchor is not None else _stall_anchor(state)
        _bring_call_forward(defn, state, now)
    elif step.message == "support_alert":
        # Support never got it: the episode is closed anyway (template failure alerts told
        # support), so it is not retried forever.
        state.alerted_for = step.anchor if step.anchor is not None else _stall_anchor(state)
    elif step.message == "inactive_alert":
        state.inactive_alerts += 1
        state.inactive_alerted_for = step.anchor if step.anchor is not None else None


def held_retry_at(state: TrialState, occurrence: str) -> datetime | None:
    """When a held step is tried again; None if it is not held (sent, or given up)."""
    held = state.held.get(occurrence)
    return held.retry_at if held is not None else None


def _bring_call_forward(defn: JourneyDefinition, state: TrialState, now: datetime) -> None:
    """A stalled user should not wait days for the call we proposed: move it to tomorrow."""
    call = state.call
    if call.state != "scheduled" or call.at is None or call.chosen_by_user:
        return
    tomorrow = local_at(state, local_date(state, now) + DAY, defn.call.hour)
    if call.at > tomorrow:
        if state.rules >= 4:
            call.forward_from = tomorrow  # To a free slot of the calendar (`_calendar_step`).
            return
        _new_call_time(state, "call_rescheduled", tomorrow, now)


def call_time(defn: JourneyDefinition, state: TrialState) -> datetime:
    """The proposed success call: day set by urgency, at the configured local hour, never after
    the trial's last day."""
    day = local_date(state, state.signup_at) + timedelta(
        days=defn.call.day_by_urgency[effective_urgency(defn, state)]
    )
    return local_at(state, min(day, state.ends_on), defn.call.hour)


def assign_agent(defn: JourneyDefinition, state: TrialState, agent: str, now: datetime) -> None:
    """Gives the success call its agent; proposes a time unless the user already booked one."""
    if state.call.state != "none":
        state.call.agent = state.call.agent or agent
        return
    state.call.state = "scheduled"
    state.call.agent = agent
    _new_call_time(state, "call_invite", max(call_time(defn, state), now + timedelta(hours=2)), now)


# --- Success calls in the agents' calendars (rules 4) ---------------------------------------


def offers_call(defn: JourneyDefinition, state: TrialState) -> bool:
    """Whether the journey offers this trial a call with an agent (`[call] offer_to`); the
    others get the self-serve booking link."""
    if state.arm == GLOBAL_HOLDOUT:
        return False  # held out of the whole journey, the call included
    rule = defn.call.offer_to
    if rule is None:
        return True
    if state.arm not in rule.arms or (state.persona and state.persona not in rule.personas):
        return False
    return effective_urgency(defn, state) in rule.urgency or (rule.company and bool(state.company))


def call_window(
    defn: JourneyDefinition, state: TrialState, now: datetime
) -> tuple[datetime, datetime]:
    """Where the proposed call is looked for: from the urgency's day at `hour` (never after the
    trial's last day), or `lead_hours` from now if later, for `window_days` local days, never
    past the end of the trial. Empty (start >= end) when the trial has no room left."""
    rule = defn.call
    day = local_date(state, state.signup_at) + timedelta(
        days=rule.day_by_urgency[effective_urgency(defn, state)]
    )
    first = max(
        local_at(state, min(day, state.ends_on), rule.hour),
        now + timedelta(hours=rule.lead_hours),
    )
    last = local_midnight(state, local_date(state, first) + timedelta(days=rule.window_days))
    return first, min(last, trial_ends_at(state))


def _calendar_step(defn: JourneyDefinition, state: TrialState, now: datetime) -> Step | None:
    """What the calendar needs before anything else is decided: an agent for a time the user
    chose, a proposed call, a stalled user's call moved earlier, a released call once the
    trial ended. May send the trial down the self-serve path instead (returns None then)."""
    call = state.call
    if is_ended(state):
        if call.requests and not call.released:
            return ReleaseCall(after=now)
        return None
    if (
        call.state in ("scheduled", "booked")
        and call.at is not None
        and call.at > now
        and call.version != call.slot_version
    ):
        return OfferCall(call.requests + 1, "attach", call.version, at=call.at, prefer=call.agent)
    if call.forward_from is not None:
        earliest = max(call.forward_from, now + timedelta(hours=defn.call.lead_hours))
        if call.state == "scheduled" and not call.chosen_by_user and call.at and earliest < call.at:
            return OfferCall(
                call.requests + 1,
                "forward",
                call.version,
                earliest=earliest,
                latest=call.at,
                prefer=call.agent,
            )
        call.forward_from = None
    if (
        call.state == "none"
        and not call.self_serve
        and state.persona is not None
        and now < trial_ends_at(state)
    ):
        if state.arm == GLOBAL_HOLDOUT:
            # Held out of the whole journey: no call, nor the link to book one.
            state.call.self_serve = True
            return None
        if not offers_call(defn, state):
            _self_serve(defn, state, now)
            return None
        earliest, latest = call_window(defn, state, now)
        if earliest >= latest:
            _self_serve(defn, state, now, unassigned="no room left in the trial for a call")
            return None
        return OfferCall(call.requests + 1, "propose", call.version, earliest, latest)
    return None


def _self_serve(
    defn: JourneyDefinition, state: TrialState, now: datetime, unassigned: str | None = None
) -> None:
    """The self-serve path: the booking link goes to the user (their booking comes back as
    `call_booked`); with `unassigned`, the trial should have had a call and support is told."""
    state.call.self_serve = True
    if "call_self_serve" in defn.messages:
        _enqueue(state, "call_self_serve", "call_self_serve", now)
    if unassigned is not None:
        _tell_unassigned(defn, state, now, unassigned)


def _tell_unassigned(defn: JourneyDefinition, state: TrialState, now: datetime, why: str) -> None:
    if "call_unassigned" not in defn.messages:
        return
    call = state.call
    _enqueue(
        state,
        f"call_unassigned.{call.requests}",
        "call_unassigned",
        now,
        {
            "reason": "call unassigned",
            "why": why,
            "user_id": state.user_id,
            "persona": state.persona or "",
            "urgency": effective_urgency(defn, state),
            "at": call.at.isoformat() if call.at is not None else "",
            "cs_task": True,
            "agent": "",
        },
    )


def apply_call_offer(
    defn: JourneyDefinition,
    state: TrialState,
    step: OfferCall,
    agent: str | None,
    at: datetime | None,
    now: datetime,
) -> None:
    """Applies the calendar's answer to `step`: a proposed call with its agent and time, a
    call moved earlier, an agent for the user's time; or, none free, the self-serve path (a
    proposal) or support told (a time the user chose). An answer for a call that changed
    meanwhile is not applied: the next step asks again for the call as it is now."""
    call = state.call
    call.requests = max(call.requests, step.request)
    if step.purpose == "forward":
        call.forward_from = None
    if step.version != call.version or is_ended(state):
        return
    if agent is not None:
        # Support's alert that nobody had the call is no longer true: given up if still queued.
        for queued in [q for q in state.queued if q.message == "call_unassigned"]:
            _skip(state, queued.occurrence)
    if step.purpose == "propose":
        if call.state != "none":
            return
        if agent is None or at is None:
            _self_serve(defn, state, now, unassigned="no agent has a free slot in the window")
            return
        call.state = "scheduled"
        call.agent = agent
        _new_call_time(state, "call_invite", at, now)
        call.slot_version = call.version
    elif step.purpose == "forward":
        if agent is not None and at is not None and call.at is not None and at < call.at:
            call.agent = agent
            _new_call_time(state, "call_rescheduled", at, now)
            call.slot_version = call.version
    else:
        call.slot_version = call.version
        call.agent = agent
        if agent is None:
            _tell_unassigned(defn, state, now, "no agent is free at the time the user chose")


def apply_call_released(state: TrialState) -> None:
    state.call.released = True


# --- Support tasks ---------------------------------------------------------------------------


def open_task(state: TrialState, key: str, kind: str) -> None:
    """A support task was opened for this trial (the workflow calls it once the row exists)."""
    if not any(s.task == key for s in state.support):
        state.tasks[key] = kind


def apply_task_closed(state: TrialState, key: str, kind: str, outcome: str, now: datetime) -> bool:
    """Support closed a task with an outcome; False if it was already recorded."""
    if any(s.task == key for s in state.support):
        return False
    state.tasks.pop(key, None)
    state.support.append(SupportOutcome(task=key, kind=kind, outcome=outcome, at=now))
    return True


NeedsAttention = Literal["stalled", "inactive", "no_show", "template_broken", "call_unassigned"]
ATTENTION: tuple[NeedsAttention, ...] = get_args(NeedsAttention)


def needs_attention(defn: JourneyDefinition, state: TrialState, now: datetime) -> list[str]:
    """Why a human should look at this trial now (the `NeedsAttention` search attribute): an
    open support task (its kind), a missed call not rebooked, a message held by a broken
    template. Empty when nothing waits for a human."""
    reasons = set(state.tasks.values())
    running = not is_ended(state) and now < trial_ends_at(state)
    if running and state.call.state == "no_show":
        reasons.add("no_show")
    if state.held:
        reasons.add("template_broken")
    return sorted(reasons)


# --- Reading the state -----------------------------------------------------------------------


def summary(defn: JourneyDefinition, state: TrialState, now: datetime) -> str:
    """One paragraph for support staff (Temporal UI current details)."""
    stage = stage_of(defn, state, now)
    parts = [f"Trial of user {state.user_id}, day {trial_day(state, now)}, stage **{stage}**."]
    if state.persona:
        path = defn.personas[state.persona]
        parts.append(f"Persona {state.persona} ({state.persona_source}): {path.label}.")
        if state.activated_at:
            parts.append(f"Activated on day {trial_day(state, state.activated_at)}.")
        else:
            parts.append(f"Activation progress {activation_progress(defn, state)}%.")
    else:
        parts.append("Waiting for the qualifier answers.")
    if state.call.state != "none" and state.call.at:
        parts.append(
            f"Success call {state.call.state} with {state.call.agent or 'no agent yet'} "
            f"on {state.call.at.astimezone(zone(state)):%Y-%m-%d %H:%M} ({state.timezone})."
        )
    parts.append(f"Trial ends {state.ends_on.isoformat()}; {len(state.sent)} messages sent.")
    if state.tasks:
        parts.append(
            f"Needs a human: {len(state.tasks)} open support task(s) "
            f"({', '.join(sorted(set(state.tasks.values())))})."
        )
    if state.unsubscribed:
        parts.append(f"Unsubscribed from {', '.join(state.unsubscribed)}.")
    return " ".join(parts)

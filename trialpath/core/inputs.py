"""What an input does to a trial's state: the qualifier's answers and the persona they set,
product events and activation, the call, extension, conversion, cancellation and unsubscribe
signals, and support tasks opened and closed. Also the queue these inputs and the rules add
messages to (`enqueue`) and drop them from (`skip_step`).

Pure functions over the definition and the state at `now` (journey time); the workflow calls
them as `journey.apply_*` (`trialpath.core.journey` re-exports them).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from trialpath.core.contract import Unsubscribe
from trialpath.core.definition import (
    JourneyDefinition,
    Persona,
    Urgency,
)
from trialpath.core.reading import (
    is_ended,
)
from trialpath.core.state import (
    MAX_REMEMBERED_EVENT_IDS,
    Cancellation,
    Conversion,
    PersonaSource,
    Queued,
    SupportOutcome,
    TrialState,
    local_date,
    trial_ends_at,
)

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


def set_persona(
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
    set_persona(defn, state, role, "qualifier", now)
    return role


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
        enqueue(state, "milestone", "milestone", now)


# --- Other signals ---------------------------------------------------------------------------


def enqueue(
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


def new_call_time(state: TrialState, message: str, at: datetime, now: datetime) -> None:
    state.call.at = at
    state.call.version += 1
    state.call.since = now
    enqueue(state, f"{message}.{state.call.version}", message, now)


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
    new_call_time(state, "call_booked", at, now)
    return True


def apply_call_rescheduled(state: TrialState, at: datetime, now: datetime) -> bool:
    if is_ended(state) or state.call.state not in ("scheduled", "booked", "no_show"):
        return False
    if _refused_by_time(state, "rescheduled", at, now):
        return False
    if state.call.state == "no_show":
        state.call.state = "booked"
    state.call.chosen_by_user = True
    new_call_time(state, "call_rescheduled", at, now)
    return True


def apply_call_completed(state: TrialState, notes: str | None, now: datetime) -> bool:
    if state.call.state not in ("scheduled", "booked", "no_show") or is_ended(state):
        return False
    if _refused_by_time(state, "completed", None, now):
        return False
    state.call.state = "completed"
    state.call.notes = notes
    state.call.completed_at = now
    enqueue(state, "call_followup", "call_followup", now)
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
        enqueue(state, "call_rebook", "call_rebook", now)
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
    enqueue(state, f"trial_extended.{state.extensions}", "trial_extended", now)
    return True


def apply_conversion(state: TrialState, plan: str, mrr: float | None, now: datetime) -> bool:
    if is_ended(state):
        return False
    state.converted = Conversion(plan=plan, mrr=mrr, at=now)
    state.queued = []
    enqueue(state, "welcome_paid", "welcome_paid", now)
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


def skip_step(state: TrialState, occurrence: str) -> None:
    held = state.held.pop(occurrence, None)
    state.done[occurrence] = "sent" if held is not None and held.counted else "skipped"
    state.queued = [q for q in state.queued if q.occurrence != occurrence]
    if held is not None and state.rules >= 2 and set(held.channels):
        # Gone stale while its broken template waited for a retry: support hears of it.
        state.abandoned.append(occurrence)


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

"""Reading a trial's state: its stage, whose path its messages follow, its urgency, how far it is
from activation, why a human should look at it, and the summary support staff read.

Pure functions (no temporalio, no I/O, no clock) that the other rule modules build on;
`trialpath.core.journey` re-exports them.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Literal, get_args

from trialpath.core import moves
from trialpath.core.contract import Stage
from trialpath.core.definition import (
    JourneyDefinition,
    Persona,
    Urgency,
)
from trialpath.core.state import (
    TrialState,
    local_midnight,
    trial_day,
    trial_ends_at,
    zone,
)


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


def effective_urgency(defn: JourneyDefinition, state: TrialState) -> Urgency:
    return state.urgency or defn.default_urgency


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

"""The success call: its proposed time and agent (rules 1-3 assign an agent round-robin), and
from rules 4 the agents' calendars: who is offered a call, the window it is offered in, the step
that asks the calendars for a slot (`calendar_step`), and what their answer does (a slot, or the
self-serve link and support told).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from trialpath.core.definition import (
    GLOBAL_HOLDOUT,
    JourneyDefinition,
)
from trialpath.core.inputs import (
    enqueue,
    new_call_time,
    skip_step,
)
from trialpath.core.reading import (
    effective_urgency,
    is_ended,
)
from trialpath.core.state import (
    DAY,
    OfferCall,
    ReleaseCall,
    Step,
    TrialState,
    local_at,
    local_date,
    local_midnight,
    trial_ends_at,
)


def bring_call_forward(defn: JourneyDefinition, state: TrialState, now: datetime) -> None:
    """A stalled user should not wait days for the call we proposed: move it to tomorrow."""
    call = state.call
    if call.state != "scheduled" or call.at is None or call.chosen_by_user:
        return
    tomorrow = local_at(state, local_date(state, now) + DAY, defn.call.hour)
    if call.at > tomorrow:
        if state.rules >= 4:
            call.forward_from = tomorrow  # To a free slot of the calendar (`calendar_step`).
            return
        new_call_time(state, "call_rescheduled", tomorrow, now)


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
    new_call_time(state, "call_invite", max(call_time(defn, state), now + timedelta(hours=2)), now)


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


def calendar_step(defn: JourneyDefinition, state: TrialState, now: datetime) -> Step | None:
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
        enqueue(state, "call_self_serve", "call_self_serve", now)
    if unassigned is not None:
        _tell_unassigned(defn, state, now, unassigned)


def _tell_unassigned(defn: JourneyDefinition, state: TrialState, now: datetime, why: str) -> None:
    if "call_unassigned" not in defn.messages:
        return
    call = state.call
    enqueue(
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
            skip_step(state, queued.occurrence)
    if step.purpose == "propose":
        if call.state != "none":
            return
        if agent is None or at is None:
            _self_serve(defn, state, now, unassigned="no agent has a free slot in the window")
            return
        call.state = "scheduled"
        call.agent = agent
        new_call_time(state, "call_invite", at, now)
        call.slot_version = call.version
    elif step.purpose == "forward":
        if agent is not None and at is not None and call.at is not None and at < call.at:
            call.agent = agent
            new_call_time(state, "call_rescheduled", at, now)
            call.slot_version = call.version
    else:
        call.slot_version = call.version
        call.agent = agent
        if agent is None:
            _tell_unassigned(defn, state, now, "no agent is free at the time the user chose")


def apply_call_released(state: TrialState) -> None:
    state.call.released = True

"""Pure journey rules: given the definition, the trial state, an input and `now`, decide.

No temporalio, no I/O, no clock: every function takes `now` (journey time, timezone-aware UTC).
The workflow calls `next_step` in a loop, performs the step it gets (a send, an agent
assignment, a request to the agents' calendars), reports back with `mark_done` / `assign_agent` /
`apply_call_offer` / `apply_call_released`, and sleeps until the returned wake-up time or until a
signal changes the state. Signals and updates go through the `apply_*` functions.

This module starts a trial and chooses its next step; the rest of the rules live beside it, and
are re-exported here so the workflow and the tools read them as `journey.X`:
- `trialpath.core.state`: what a trial remembers, its clock and the steps;
- `trialpath.core.reading`: the stage, the summary, what needs a human;
- `trialpath.core.inputs`: what signals and updates do to the state;
- `trialpath.core.candidates`: the messages that could go out next, their channels and time;
- `trialpath.core.calls`: the success call, its agent and the agents' calendars;
- `trialpath.core.outcomes`: what a step's outcome does (`mark_done`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from trialpath.core.calls import (
    apply_call_offer as apply_call_offer,
    apply_call_released as apply_call_released,
    assign_agent as assign_agent,
    calendar_step,
    call_time as call_time,
    call_window as call_window,
    offers_call as offers_call,
)
from trialpath.core.candidates import (
    PRIORITY_ACTIVATED as PRIORITY_ACTIVATED,
    PRIORITY_DRIP as PRIORITY_DRIP,
    PRIORITY_END_OF_TRIAL as PRIORITY_END_OF_TRIAL,
    PRIORITY_NUDGE as PRIORITY_NUDGE,
    Candidate,
    alert_context as alert_context,
    call_candidates,
    channels_for as channels_for,
    inactive_anchor,
    inactive_context as inactive_context,
    next_send_time as next_send_time,
    stall_anchor,
    survey_candidates,
    trial_candidates,
)
from trialpath.core.contract import TrialProfile
from trialpath.core.definition import (
    GLOBAL_HOLDOUT,
    JourneyDefinition,
    MessageSpec,
)
from trialpath.core.inputs import (
    EventOutcome as EventOutcome,
    apply_call_booked as apply_call_booked,
    apply_call_completed as apply_call_completed,
    apply_call_no_show as apply_call_no_show,
    apply_call_rescheduled as apply_call_rescheduled,
    apply_cancel as apply_cancel,
    apply_conversion as apply_conversion,
    apply_event as apply_event,
    apply_extension as apply_extension,
    apply_qualification as apply_qualification,
    apply_task_closed as apply_task_closed,
    apply_unsubscribe as apply_unsubscribe,
    call_problem as call_problem,
    has_persona_evidence as has_persona_evidence,
    infer_persona as infer_persona,
    open_task as open_task,
    set_persona,
    skip_step,
)
from trialpath.core.outcomes import (
    FOLLOW_UP_SUFFIX as FOLLOW_UP_SUFFIX,
    Delivered as Delivered,
    after_nudge,
    follow_up_of as follow_up_of,
    held_retry_at as held_retry_at,
    mark_done as mark_done,
    skip_if_of as skip_if_of,
)
from trialpath.core.reading import (
    ATTENTION as ATTENTION,
    NeedsAttention as NeedsAttention,
    activation_progress as activation_progress,
    converting_from as converting_from,
    effective_urgency as effective_urgency,
    is_ended as is_ended,
    needs_attention as needs_attention,
    path_persona as path_persona,
    stage_of as stage_of,
    summary as summary,
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

RULES = 6
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
support task, not a nudge; a persona nobody answered and nothing hinted at is `defaulted`.
5: the onboarding CSAT and the global holdout.
6: support's alert that a call has no agent (`call_unassigned`) goes stale when the trial
ends, as the messages about a call still to come do."""


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
            set_persona(defn, state, answers.role, "signup", signup_at)
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


# --- Deciding the next step ------------------------------------------------------------------


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
            skip_step(state, q.occurrence)
            return _before_persona(defn, state, now)
        return Send(q.occurrence, q.message, spec.category, channels, dict(q.extra))
    return Wait(min(wake))


def _decide(defn: JourneyDefinition, state: TrialState, now: datetime) -> Step | None:
    """One pass; None when it skipped messages, so the next pass sees what comes after them."""
    if state.rules >= 4:
        calendar = calendar_step(defn, state, now)
        if calendar is not None:
            return calendar
    if state.cancelled is not None:
        for occurrence in list(state.held) if state.rules >= 3 else []:
            skip_step(state, occurrence)  # Given up, and support told.
        return Finish("cancelled")
    if state.persona is None and state.converted is None:
        if now < state.qualify_deadline:
            if state.rules >= 2:
                return _before_persona(defn, state, now)
            return Wait(state.qualify_deadline)
        # Rules 4 tell a guess from the default: the qualifier's friction is measured by it.
        guessed = state.rules < 4 or has_persona_evidence(defn, state)
        source: PersonaSource = "inferred" if guessed else "defaulted"
        set_persona(defn, state, infer_persona(defn, state), source, now)
        if state.rules >= 4:
            return None  # Decide again: the calendar comes first now the persona is known.

    candidates = [
        Candidate(
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
    candidates.extend(survey_candidates(defn, state))
    if state.converted is None:
        if state.rules < 4 and _needs_agent(state) and now < trial_ends_at(state):
            return AssignAgent(defn.call.agent_names)
        candidates.extend(call_candidates(defn, state, now))
        candidates.extend(trial_candidates(defn, state, now))

    skipped = False
    if state.rules >= 3:
        # A held step whose reason to go out is gone (a conversion, the stage moved on, the
        # episode closed): given up, and support told, rather than held forever.
        offered = {cand.occurrence for cand in candidates}
        for occurrence in [o for o in state.held if o not in offered]:
            skip_step(state, occurrence)
            skipped = True
    wake: list[datetime] = []
    ready: list[tuple[int, datetime, Candidate, MessageSpec]] = []
    for cand in candidates:
        if cand.occurrence in state.done:
            continue
        spec = defn.message(cand.message)
        if cand.stale_at is not None and now >= cand.stale_at:
            skip_step(state, cand.occurrence)
            if cand.message == "stall_nudge" and state.rules >= 2:
                after_nudge(state, now, stall_anchor(state), delivered=False)
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
            skip_step(state, cand.occurrence)
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
            skip_step(state, cand.occurrence)
            if cand.message == "stall_nudge":
                after_nudge(state, now, stall_anchor(state), delivered=False)
            skipped = True
            continue
        extra = dict(cand.extra)
        anchor = None
        if cand.message in ("stall_nudge", "support_alert"):
            anchor = stall_anchor(state)
        if cand.message == "support_alert":
            extra = alert_context(defn, state, now)
        if cand.message == "inactive_alert":
            anchor = inactive_anchor(state)
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


CALL_ALERTS_QUEUED = ("call_unassigned",)
"""Support's alerts about a call still to come: stale once the trial has ended too (rules 6).
Before, one that waited behind other messages (a held retry, slow sends) went out after the
end, about a call that could no longer take place."""


def _queued_stale_at(state: TrialState, queued: Queued) -> datetime | None:
    if queued.unless_read is not None:
        ends = trial_ends_at(state)
        return min(queued.stale_at, ends) if queued.stale_at is not None else ends
    if state.rules >= 3 and queued.message.startswith(TRIAL_PATH_QUEUED):
        return trial_ends_at(state)
    if state.rules >= 6 and queued.message.startswith(CALL_ALERTS_QUEUED):
        return trial_ends_at(state)
    return None


def _off_path(defn: JourneyDefinition, state: TrialState, queued: Queued) -> bool:
    """A follow-up of a drip step that is no longer on the user's path (their persona changed
    since the in-app copy went): moot, like the rest of that path."""
    if queued.unless_read is None or not queued.unless_read.startswith("drip."):
        return False
    persona = path_persona(defn, state)
    return persona is None or all(s.message != queued.message for s in defn.personas[persona].drip)


def take_abandoned(state: TrialState) -> list[str]:
    """The steps given up while their template was broken since the last call (rules 2)."""
    found, state.abandoned = state.abandoned, []
    return found

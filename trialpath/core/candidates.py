"""The messages that could go out next, each a `Candidate` with its due time, priority and
staleness: the queue, the drip of the trial's path, the call's reminders, the end of the trial,
surveys, stall nudges and support alerts. Also the channels a message goes to (`channels_for`)
and the time a marketing message may take (`next_send_time`: the user's send window, the daily
cap, the quiet days). `journey.next_step` chooses among the candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from trialpath.core.definition import (
    HOLDOUT_ARMS,
    Channel,
    JourneyDefinition,
    MessageSpec,
)
from trialpath.core.reading import (
    converting_from,
    effective_urgency,
    path_persona,
)
from trialpath.core.state import (
    DAY,
    TrialState,
    local_at,
    local_date,
    local_midnight,
    trial_day,
    trial_ends_at,
    zone,
)

# Lower is more important when two marketing messages compete for the same day.
PRIORITY_END_OF_TRIAL = 0
PRIORITY_ACTIVATED = 1
PRIORITY_NUDGE = 2
PRIORITY_DRIP = 3


# --- Deciding the next step ------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
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


def call_candidates(defn: JourneyDefinition, state: TrialState, now: datetime) -> list[Candidate]:
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
            found.append(Candidate(f"{message}.{call.version}", message, due, stale_at=call.at))
    return found


def trial_candidates(defn: JourneyDefinition, state: TrialState, now: datetime) -> list[Candidate]:
    """Welcome, activation, stall, drip and end-of-trial messages while the trial runs, or the
    win-back messages once it has expired."""
    assert state.persona is not None and state.persona_at is not None
    found: list[Candidate] = []
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
                Candidate(
                    f"winback_{d}", f"winback_{d}", due, PRIORITY_END_OF_TRIAL, stale_at=stale
                )
            )
        return found

    found.append(Candidate("welcome", "welcome", state.persona_at, PRIORITY_END_OF_TRIAL))
    befores = sorted(eot.before_days, reverse=True)
    for i, d in enumerate(befores):
        due = local_midnight(state, state.ends_on - timedelta(days=d))
        stale = (
            local_midnight(state, state.ends_on - timedelta(days=befores[i + 1]))
            if i + 1 < len(befores)
            else ends
        )
        found.append(
            Candidate(
                f"trial_ending_{d}", f"trial_ending_{d}", due, PRIORITY_END_OF_TRIAL, stale_at=stale
            )
        )
    if state.activated_at is not None:
        found.append(
            Candidate(
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


def survey_candidates(defn: JourneyDefinition, state: TrialState) -> list[Candidate]:
    """CSAT after the success call, CES after the first-value milestone (while the trial
    runs), the referral ask after the purchase."""
    surveys = defn.surveys
    if surveys is None or state.cancelled is not None:
        return []
    found: list[Candidate] = []
    ends = trial_ends_at(state)
    onboarding = _onboarding_survey(defn, state)
    if onboarding is not None:
        found.append(onboarding)
    if state.converted is None:
        if state.call.completed_at is not None:
            due = state.call.completed_at + timedelta(hours=surveys.csat_after_call_hours)
            found.append(Candidate("survey_csat", "survey_csat", due, stale_at=ends))
        if state.milestone_at is not None:
            due = state.milestone_at + timedelta(hours=surveys.ces_after_milestone_hours)
            found.append(Candidate("survey_ces", "survey_ces", due, stale_at=ends))
    else:
        due = state.converted.at + timedelta(days=surveys.referral_after_conversion_days)
        found.append(Candidate("referral_ask", "referral_ask", due))
    return found


ONBOARDING_SURVEY = "survey_onboarding"
ONBOARDING_SURVEY_STALE = timedelta(days=3)


def _onboarding_survey(defn: JourneyDefinition, state: TrialState) -> Candidate | None:
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
    return Candidate(
        ONBOARDING_SURVEY, ONBOARDING_SURVEY, due, stale_at=due + ONBOARDING_SURVEY_STALE
    )


def stall_anchor(state: TrialState) -> datetime:
    assert state.persona_at is not None
    if state.last_key_event_at is None:
        return state.persona_at
    return max(state.persona_at, state.last_key_event_at)


def _stall_candidates(defn: JourneyDefinition, state: TrialState) -> list[Candidate]:
    rule = defn.stall
    anchor = stall_anchor(state)
    if state.nudged_for != anchor:
        if state.nudges >= rule.max_nudges:
            return []
        due = anchor + timedelta(days=rule.days)
        return [Candidate(f"stall_nudge.{state.nudges + 1}", "stall_nudge", due, PRIORITY_NUDGE)]
    if state.alerted_for == anchor or state.nudge_done_at is None:
        return []
    due = state.nudge_done_at + timedelta(days=rule.alert_after_days)
    return [Candidate(f"support_alert.{state.alerts + 1}", "support_alert", due, PRIORITY_NUDGE)]


def inactive_anchor(state: TrialState) -> datetime:
    """The last sign of progress after activation: the activation, or a later progress event."""
    assert state.activated_at is not None
    if state.last_key_event_at is None:
        return state.activated_at
    return max(state.activated_at, state.last_key_event_at)


def _inactive_candidates(
    defn: JourneyDefinition, state: TrialState, ends: datetime
) -> list[Candidate]:
    """Rules 4: an activated user with no progress event for `stall.inactive_after_days` is a
    drop in activity; support gets a task (one per episode), the user no marketing nudge."""
    days = defn.stall.inactive_after_days
    if state.rules < 4 or days is None or state.activated_at is None:
        return []
    if state.arm in HOLDOUT_ARMS:
        return []  # Nobody steps in: the holdout measures the journey against no onboarding.
    anchor = inactive_anchor(state)
    if state.inactive_alerted_for == anchor:
        return []
    due = anchor + timedelta(days=days)
    return [
        Candidate(
            f"inactive_alert.{state.inactive_alerts + 1}",
            "inactive_alert",
            due,
            PRIORITY_NUDGE,
            stale_at=ends,
        )
    ]


def inactive_context(defn: JourneyDefinition, state: TrialState, now: datetime) -> dict[str, Any]:
    """Context of an inactivity alert: always a support task, for the trial's CS owner."""
    anchor = inactive_anchor(state)
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


def _next_drip(defn: JourneyDefinition, state: TrialState) -> Candidate | None:
    persona = path_persona(defn, state)
    assert persona is not None
    signup_day = local_date(state, state.signup_at)
    for step in defn.personas[persona].drip:
        occurrence = f"drip.{step.message}"
        if occurrence in state.done:
            continue
        due = local_midnight(state, signup_day + timedelta(days=step.day))
        return Candidate(
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
        "days_stalled": math.floor((now - stall_anchor(state)) / DAY),
        "cs_task": bool(state.company) or urgency == "this_week",
        "agent": state.call.agent or "",
    }

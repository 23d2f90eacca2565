"""What a step's outcome does to the state (`mark_done`): messages delivered, partly delivered or
held by a broken template until its retry, the in-app follow-ups a message queues, and the stall
nudge's bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from trialpath.core.calls import (
    bring_call_forward,
)
from trialpath.core.candidates import (
    stall_anchor,
)
from trialpath.core.definition import (
    Channel,
    JourneyDefinition,
)
from trialpath.core.inputs import (
    enqueue,
)
from trialpath.core.reading import (
    converting_from,
)
from trialpath.core.state import (
    Held,
    Send,
    SentItem,
    TrialState,
    local_date,
    trial_day,
    trial_ends_at,
)

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


def after_nudge(
    state: TrialState,
    now: datetime,
    anchor: datetime | None = None,
    delivered: bool = True,
    decided_at: datetime | None = None,
) -> None:
    state.nudges += 1
    if state.rules >= 2:
        # The episode the nudge was decided for, not one a signal opened while it was sent.
        state.nudged_for = anchor if anchor is not None else stall_anchor(state)
        state.nudge_delivered = delivered
        state.nudge_done_at = now if delivered else None
        if delivered:
            state.nudge_decided_at = decided_at or now
        return
    state.nudged_for = stall_anchor(state)
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
        after_nudge(state, now)
    elif step.message == "support_alert":
        state.alerts += 1
        state.alerted_for = stall_anchor(state)
        bring_call_forward(defn, state, now)


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
            enqueue(
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
        after_nudge(state, now, step.anchor, first_reach, step.decided_at)
    elif step.message == "support_alert" and first_reach:
        state.alerts += 1
        state.alerted_for = step.anchor if step.anchor is not None else stall_anchor(state)
        bring_call_forward(defn, state, now)
    elif step.message == "support_alert":
        # Support never got it: the episode is closed anyway (template failure alerts told
        # support), so it is not retried forever.
        state.alerted_for = step.anchor if step.anchor is not None else stall_anchor(state)
    elif step.message == "inactive_alert":
        state.inactive_alerts += 1
        state.inactive_alerted_for = step.anchor if step.anchor is not None else None


def held_retry_at(state: TrialState, occurrence: str) -> datetime | None:
    """When a held step is tried again; None if it is not held (sent, or given up)."""
    held = state.held.get(occurrence)
    return held.retry_at if held is not None else None

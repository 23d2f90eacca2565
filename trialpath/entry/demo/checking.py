"""Checking each sample user's trial, once over, against its expectation: what differed, one
phrase each."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from trialpath.core.contract import TrialStatus
from trialpath.core.definition import GLOBAL_HOLDOUT, HOLDOUT_ARMS, JourneyDefinition
from trialpath.core.journey import FOLLOW_UP_SUFFIX, assign_arm
from trialpath.entry.demo.playing import Played, Tracked, clock_of
from trialpath.entry.demo.scripts import Expected

LATE_AFTER_DAYS = 1.0
"""A command (call outcome, conversion, extension, cancellation, unsubscribe, survey) sent more
than this many journey days after its scripted moment did not play as scripted: the check says
so, whatever the outcome. Events carry their scripted moment (`occurred_at`), as a backend
reporting what users did does, so they count when they happened however late they arrive."""


def message_of(sent_key: str) -> tuple[str, str]:
    """(message, channel) of a sent key `trial-u:drip.drip_webhooks/email`,
    `trial-u:stall_nudge.1/in_app`: drip prefix, repeat number and the follow-up of an in-app
    message (`drip.drip_roi_calculator.unless_read/email`) dropped."""
    step = sent_key.rpartition(":")[2]  # user ids may hold ':', steps never do
    occurrence, _, channel = step.rpartition("/")
    name = occurrence.removeprefix("drip.").removesuffix(FOLLOW_UP_SUFFIX)
    head, dot, tail = name.rpartition(".")
    if dot and tail.isdigit():
        name = head
    return name, channel


def _matches(spec: str, sent: set[tuple[str, str]]) -> bool:
    name, _, channel = spec.partition("/")
    return any(n == name and (not channel or c == channel) for n, c in sent)


def differences(
    expected: Expected,
    status: TrialStatus,
    *,
    signup_at: datetime,
    timezone: str,
    seconds_per_day: float,
    definition: JourneyDefinition,
    arm: str,
    played: Sequence[Played] = (),
) -> list[str]:
    """What differs between a trial's final status (and how its script played) and its
    expectation, one phrase each; empty when it ended as scripted."""
    found: list[str] = []
    for p in played:
        if p.problem is not None:
            found.append(f"{p.what}: {p.problem}")
        elif not p.dated and p.late / seconds_per_day > LATE_AFTER_DAYS:
            found.append(f"{p.what}: sent {p.late / seconds_per_day:.1f} days late")
    if status.stage != expected.stage:
        found.append(f"stage {status.stage}, expected {expected.stage}")
    if status.persona != expected.persona:
        found.append(f"persona {status.persona or 'none'}, expected {expected.persona}")
    day = None
    if status.activated_at is not None:
        day = (status.activated_at - signup_at).total_seconds() / seconds_per_day
    if expected.activated_by is None and day is not None:
        found.append(f"activated on day {day:.1f}, expected never")
    elif expected.activated_by is not None and day is None:
        found.append(f"not activated, expected by day {expected.activated_by:g}")
    elif expected.activated_by is not None and day is not None and day > expected.activated_by:
        found.append(f"activated on day {day:.1f}, expected by day {expected.activated_by:g}")
    sent = {message_of(s.key) for s in status.sent}
    for spec in expected.sent:
        name = spec.partition("/")[0]
        if arm in HOLDOUT_ARMS and (
            definition.message(name).category == "marketing"
            or name == "support_alert"
            or (arm == GLOBAL_HOLDOUT and name.startswith("call_"))  # no call at all
        ):
            continue
        if not _matches(spec, sent):
            found.append(f"no {spec} sent")
    for spec in expected.not_sent:
        if _matches(spec, sent):
            found.append(f"{spec} sent")
    if expected.trial_days is not None and status.ends_on is not None:
        start = signup_at.astimezone(ZoneInfo(timezone)).date()
        days = (status.ends_on - start).days
        if days != expected.trial_days:
            found.append(f"a {days}-day trial, expected {expected.trial_days}")
    return found


def check(item: Tracked, seconds_per_day: float, definition: JourneyDefinition) -> list[str]:
    """The verdict on one tracked user (its expectation against its last status)."""
    arm = assign_arm(definition, item.user_id)
    expected = item.user.expect
    if expected is None:
        return []
    if item.status is None:
        return [f"no status ({item.error or 'never answered'})"]
    return differences(
        expected,
        item.status,
        signup_at=item.signup_at,
        timezone=item.user.timezone,
        seconds_per_day=clock_of(item, seconds_per_day),
        definition=definition,
        arm=arm,
        played=item.played,
    )

"""Sample users and the message contexts built for them: what previews and template checks render.

Every value is fixed, dates included, so a message renders the same way on every run. The
samples differ where templates branch or break: a missing company, a one-word name, accents
outside the GSM-7 alphabet (SMS length), a time zone far from Paris, activation or not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from trialpath.messages.templating import Product, message_context

TRIAL_ENDS_ON = date(2026, 12, 9)
_ENDING = re.compile(r"trial_ending_(\d+)")
_WINBACK = re.compile(r"winback_(\d+)")


@dataclass(frozen=True)
class SampleUser:
    key: str
    label: str
    """One line a marketer reads in the sample selector."""
    name: str
    company: str
    phone: str | None
    timezone: str
    day: int
    days_left: int
    activated: bool
    activation_progress: int
    call_agent: str
    call_at: datetime
    """Every call message goes out once the journey has reserved a call, so each sample has one
    for those."""
    booked: bool = True
    """False: no call reserved yet, so the other messages get no `call` (as for most users)."""

    @property
    def first_name(self) -> str:
        return self.name.split()[0]


SAMPLE_USERS: dict[str, SampleUser] = {
    sample.key: sample
    for sample in (
        SampleUser(
            key="ada",
            label="Ada Lovelace · Analytical Engines · activated · call booked · no phone",
            name="Ada Lovelace",
            company="Analytical Engines",
            phone=None,
            timezone="Europe/Paris",
            day=3,
            days_left=11,
            activated=True,
            activation_progress=100,
            call_agent="Camille",
            call_at=datetime(2026, 11, 27, 9, 0, tzinfo=UTC),
        ),
        SampleUser(
            key="sam",
            label="Sam · no company · phone number · not activated · no call yet",
            name="Sam",
            company="",
            phone="+447700900123",
            timezone="Europe/London",
            day=5,
            days_left=9,
            activated=False,
            activation_progress=0,
            call_agent="Samir",
            call_at=datetime(2026, 11, 28, 14, 30, tzinfo=UTC),
            booked=False,
        ),
        SampleUser(
            key="zoe",
            label="Zoë Ó Briain · long company name, accents · New York time · half-way",
            name="Zoë Ó Briain-Castellanos",
            company="Ōtaki Coöperative Dairies and Regional Distribution Ltd",
            phone="+16465550123",
            timezone="America/New_York",
            day=8,
            days_left=6,
            activated=False,
            activation_progress=50,
            call_agent="Julia",
            call_at=datetime(2026, 12, 1, 15, 0, tzinfo=UTC),
        ),
    )
}


ALERT_MESSAGES = ("support_alert", "inactive_alert", "call_unassigned")
"""Internal alerts to support: the only messages given `alert.*` facts, as in the worker."""


def sample_alert(
    message: str, user_id: str, persona: str, agent: str, cs_task: bool, chosen_at: str = ""
) -> dict[str, Any] | None:
    """The `alert` facts the journey gives a support alert (`journey.alert_context`,
    `journey.inactive_context`, an unassigned call: `chosen_at`, the time the user chose, if
    any); None for every other message, so a template using `alert.*` elsewhere shows its
    error in checks and previews instead of looking fine."""
    if message == "call_unassigned":
        return {
            "reason": "call unassigned",
            "why": "no agent is free at the time the user chose"
            if chosen_at
            else "no agent has a free slot in the window",
            "user_id": user_id,
            "persona": persona,
            "urgency": "this_week",
            "at": chosen_at,
            "cs_task": True,
            "agent": "",
        }
    if message == "support_alert":
        return {
            "reason": "no key action since the stall nudge",
            "kind": "stalled",
            "user_id": user_id,
            "persona": persona,
            "urgency": "this_week",
            "days_stalled": 3,
            "cs_task": cs_task,
            "agent": agent,
        }
    if message == "inactive_alert":
        return {
            "reason": "no progress event since activation",
            "kind": "inactive",
            "user_id": user_id,
            "persona": persona,
            "urgency": "this_month",
            "days_inactive": 4,
            "activated_day": 2,
            "cs_task": True,
            "agent": agent,
        }
    return None


def sample_user(sample: str | SampleUser) -> SampleUser:
    if isinstance(sample, SampleUser):
        return sample
    try:
        return SAMPLE_USERS[sample]
    except KeyError:
        known = ", ".join(SAMPLE_USERS)
        raise KeyError(f"unknown sample {sample!r}; choose one of {known}") from None


def _trial(user: SampleUser, message: str) -> dict[str, Any]:
    """The sample's trial, adjusted to what the journey guarantees when it sends `message`."""
    trial: dict[str, Any] = {
        "day": user.day,
        "days_left": user.days_left,
        "ends_on": TRIAL_ENDS_ON,
        "activated": user.activated,
        "activation_progress": user.activation_progress,
        "activated_day": user.day if user.activated else None,
        "extended_days": 0,
        "plan": None,
    }
    if ending := _ENDING.fullmatch(message):
        trial["days_left"] = int(ending.group(1))
    elif _WINBACK.fullmatch(message):
        trial["days_left"] = 0
    elif message == "activated":
        trial.update(activated=True, activation_progress=100, activated_day=user.day)
    elif message == "trial_extended":
        trial.update(extended_days=7, days_left=user.days_left + 7)
    elif message == "welcome_paid":
        trial["plan"] = "team"
    return trial


def sample_context(
    product: Product,
    channel: str,
    message: str,
    persona: str | None,
    locale: str,
    sample: str | SampleUser,
    *,
    unsubscribe_url: str | None = None,
) -> dict[str, Any]:
    """The template variables for `message` sent to a sample user (or its key) in `locale`."""
    user = sample_user(sample)
    return message_context(
        product=product,
        channel=channel,
        message=message,
        user={
            "name": user.name,
            "company": user.company,
            "locale": locale,
            "timezone": user.timezone,
        },
        persona=persona,
        trial=_trial(user, message),
        call=(
            {"at": user.call_at, "agent": user.call_agent, "duration_minutes": 30}
            if user.booked or message.startswith("call_")
            else None
        ),
        alert=sample_alert(
            message, f"sample-{user.key}", persona or "business", user.call_agent, True
        ),
        unsubscribe_url=unsubscribe_url,
    )

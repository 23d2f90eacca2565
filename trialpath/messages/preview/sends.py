"""What the journey sends a persona: each message on each of its channels, grouped by message,
with when it goes and why a fallback channel is used."""

from __future__ import annotations

from dataclasses import dataclass

from trialpath.core.definition import JourneyDefinition, Persona

CHANNEL_LABELS = {"email": "Email", "in_app": "In-app", "sms": "SMS", "support": "Support alert"}


@dataclass(frozen=True)
class Send:
    message: str
    channel: str
    category: str
    note: str = ""
    """Why this channel is used, when it is not obvious (a fallback channel)."""


@dataclass(frozen=True)
class Group:
    message: str
    category: str
    when: str
    sends: tuple[Send, ...]


def journey_groups(defn: JourneyDefinition, persona: Persona) -> list[Group]:
    """Every message a user of `persona` can receive, on each of its channels, file order
    first and then the persona's drip by day."""
    groups = []
    for name, spec in defn.messages.items():
        sends = _sends(name, spec.channels, spec.category, spec.unless_read_hours)
        if spec.fallback and spec.fallback not in spec.channels:
            primary = " or ".join(CHANNEL_LABELS[c] for c in spec.channels if c != "in_app")
            note = f"sent instead of {primary} to users without a phone or when it fails"
            sends.append(Send(name, spec.fallback, spec.category, note))
        when = "sent at once" if spec.immediate else "sent in the send window"
        groups.append(Group(name, spec.category, when, tuple(sends)))
    for step in defn.personas[persona].drip:
        skip = f", skipped after {', '.join(step.skip_if)}" if step.skip_if else ""
        sends = _sends(step.message, step.channels, "marketing", step.unless_read_hours)
        groups.append(Group(step.message, "marketing", f"drip, day {step.day}{skip}", tuple(sends)))
    return groups


def _sends(
    message: str, channels: tuple[str, ...], category: str, unless_read_hours: float | None
) -> list[Send]:
    """A message's sends; with `unless_read_hours`, the channels that wait for the in-app copy
    say so."""
    note = ""
    if unless_read_hours is not None:
        note = f"sent {unless_read_hours:g} h after the in-app message, unless the user read it"
    return [
        Send(message, channel, category, note if channel != "in_app" else "")
        for channel in channels
    ]


def drip_owner(defn: JourneyDefinition, message: str) -> str | None:
    """The persona whose drip includes `message`, None for messages everyone can receive."""
    if message in defn.messages:
        return None
    for persona, path in defn.personas.items():
        if any(step.message == message for step in path.drip):
            return persona
    return None

"""Moving a running trial to another journey version: whether it can, and what changes for it.

Pure functions over a definition and a trial's state (no I/O, no clock): the workflow's
`migrate_journey` update refuses a move `problems` finds, and `trialpath journey plan` uses
`upcoming` on what the database knows of each running trial to show the effect before anyone
moves anything.

What a move keeps and changes (the workflow continues as new with the new definition and the
same state):
- every step already done stays done (`drip.<message>` and the others): nothing is sent twice;
- the next drip step is the first of the new path not done yet, due on its day; one whose day is
  over by up to three days goes out at once, as it would have (the journey's stale rule), older
  ones are skipped;
- the rules version (`TrialState.rules`) is the trial's own: how decisions are made stays.

A trial cannot move (it keeps its version) when its current drip step, the last one it was sent,
is not on its path in the new version (there is no place to resume from), or when a message it
holds or has queued is not in the new version (a template retry or an in-app follow-up would
have nothing to send).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trialpath.core.definition import JourneyDefinition, Persona

DRIP = "drip."


def path_of(defn: JourneyDefinition, persona: str | None, arm: str) -> Persona | None:
    """Whose drip a trial follows: its persona, except in the `generic` arm (the rules'
    `journey.path_persona`, and the plan's reading of the stored fields)."""
    if arm == "generic" and defn.experiment is not None:
        return defn.experiment.generic_persona
    return persona  # type: ignore[return-value]


def drip_days(defn: JourneyDefinition, path: Persona | None) -> dict[str, int]:
    if path is None:
        return {}
    return {step.message: step.day for step in defn.personas[path].drip}


def current_step(done: list[str], old: JourneyDefinition, path: Persona | None) -> str | None:
    """The trial's current drip step: the last step of its path it was sent or skipped, in
    the path's order (None: none yet)."""
    finished = {occurrence[len(DRIP) :] for occurrence in done if occurrence.startswith(DRIP)}
    last = None
    for message in drip_days(old, path):
        if message in finished:
            last = message
    return last


def problems(
    new: JourneyDefinition,
    *,
    persona: str | None,
    arm: str,
    current: str | None,
    pending: list[str],
    old: JourneyDefinition | None = None,
) -> list[str]:
    """Why a trial cannot move to `new` (empty: it can). `pending`: messages it holds for a
    retry or has queued."""
    found = []
    old_path = path_of(old, persona, arm) if old is not None else None
    path = path_of(new, persona, arm)
    if current is not None and current not in drip_days(new, path):
        where = f"the {path} path" if path else "its path"
        found.append(f"its current step {current!r} is not on {where} in the new version")
    if old_path is not None and path is not None and old_path != path and current is not None:
        found.append(f"its path changes from {old_path} to {path}")
    missing = sorted({m for m in pending if m not in new.messages and m not in _all_drip(new)})
    if missing:
        found.append(f"it has {', '.join(missing)} waiting, which the new version does not send")
    return found


def message_of(occurrence: str) -> str:
    """The message an occurrence sends: `drip.drip_automate` → `drip_automate`,
    `stall_nudge.2` → `stall_nudge`, `trial_ending_3` → itself."""
    if occurrence.startswith(DRIP):
        return occurrence[len(DRIP) :]
    return occurrence.split(".", 1)[0]


def _all_drip(defn: JourneyDefinition) -> set[str]:
    return {step.message for path in defn.personas.values() for step in path.drip}


Change = Literal["same", "changed", "appears", "disappears"]


@dataclass(frozen=True)
class Upcoming:
    message: str
    day: int | None
    """Trial day it is due on; None for messages with no fixed day."""
    channels: tuple[str, ...]


@dataclass(frozen=True)
class Difference:
    message: str
    change: Change
    before: Upcoming | None
    after: Upcoming | None


def upcoming(
    defn: JourneyDefinition, path: Persona | None, day: int, done: set[str]
) -> dict[str, Upcoming]:
    """The messages with a day that a trial on `day` (its trial day) of `path` still has ahead:
    drip steps not done, due today or later, and the end-of-trial reminders."""
    ahead: dict[str, Upcoming] = {}
    if path is not None:
        for step in defn.personas[path].drip:
            if step.message not in done and step.day >= day:
                ahead[step.message] = Upcoming(step.message, step.day, step.channels)
    for before in defn.end_of_trial.before_days:
        message = f"trial_ending_{before}"
        due = defn.trial_days - before
        spec = defn.messages.get(message)
        if spec is not None and due >= day and message not in done:
            ahead[message] = Upcoming(message, due, spec.channels)
    return ahead


def compare(before: dict[str, Upcoming], after: dict[str, Upcoming]) -> list[Difference]:
    """Message by message: what appears, disappears or changes (day or channels)."""
    found = []
    for message in [*before, *(m for m in after if m not in before)]:
        a, b = before.get(message), after.get(message)
        if a is None:
            change: Change = "appears"
        elif b is None:
            change = "disappears"
        elif (a.day, a.channels) != (b.day, b.channels):
            change = "changed"
        else:
            change = "same"
        found.append(Difference(message, change, a, b))
    return found

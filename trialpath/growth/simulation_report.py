"""What a simulation did to its population (`trialpath simulate`'s report), from the trials'
final statuses: read, compared with another journey or a saved report, checked.

What the report counts, per persona (as the trial ended) and arm:
- messages sent per step (the journey's message) and channel, and per user;
- marketing messages held: by the send window (due outside it, sent when it opened) or by the
  daily cap (sent on a later local day than the window allowed);
- steps skipped without being sent: gone stale (no slot before they stopped making sense, or
  the trial moved on), or done already (a drip step's `skip_if` event was seen);
- success calls booked per agent and day (the agent's local day, from their calendars);
- the funnel: signed up, activated, converted.
And the journey's checks: drip steps no simulated user reached, local days on which a user got
more marketing messages than `max_marketing_per_day`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from trialpath.core.contract import TrialStatus
from trialpath.core.definition import HOLDOUT_ARMS, JourneyDefinition
from trialpath.core.journey import assign_arm, skip_if_of
from trialpath.entry.demo import ScriptedUser

if TYPE_CHECKING:
    from trialpath.growth.simulate import Played


class ReportError(ValueError):
    """A saved report that cannot be read back."""


@dataclass
class Group:
    """What the journey did to the trials of one persona and arm."""

    trials: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    """`step/channel` → messages sent."""
    held_window: int = 0
    held_cap: int = 0
    stale: Counter[str] = field(default_factory=Counter)
    done_already: Counter[str] = field(default_factory=Counter)
    held_out: Counter[str] = field(default_factory=Counter)
    """Skipped because the arm is a holdout (no onboarding messages)."""
    funnel: Counter[str] = field(default_factory=Counter)

    @property
    def sent(self) -> int:
        return sum(self.messages.values())

    def per_user(self) -> float:
        return self.sent / self.trials if self.trials else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "messages": self.sent,
            "messages_per_user": round(self.per_user(), 2),
            "by_step_and_channel": dict(sorted(self.messages.items())),
            "held_by_send_window": self.held_window,
            "held_by_daily_cap": self.held_cap,
            "stale_skips": dict(sorted(self.stale.items())),
            "skipped_as_done": dict(sorted(self.done_already.items())),
            "skipped_by_holdout": dict(sorted(self.held_out.items())),
            "funnel": {step: self.funnel[step] for step in FUNNEL},
        }


FUNNEL = ("signed_up", "activated", "converted")


@dataclass
class Simulation:
    journey: str
    version: str
    population: int
    seed: int
    seconds: float
    replayed: int
    groups: dict[str, Group]
    """`persona/arm` → group."""
    calls: Counter[str]
    """`agent/YYYY-MM-DD` (the day in the agent's time zone) → calls booked."""
    unreachable: list[str]
    """`persona/step`: drip steps no simulated user of the persona got."""
    over_cap: list[str]
    """`user/local day/n`: more marketing messages on a day than the daily cap allows."""
    start: datetime

    @property
    def trials_per_second(self) -> float:
        return self.population / self.seconds if self.seconds else 0.0

    def messages_per_user(self) -> float:
        sent = sum(g.sent for g in self.groups.values())
        return sent / self.population if self.population else 0.0

    def by_persona(self) -> dict[str, Group]:
        """The groups merged over arms."""
        merged: dict[str, Group] = {}
        for key, group in self.groups.items():
            persona = key.split("/")[0]
            into = merged.setdefault(persona, Group())
            into.trials += group.trials
            into.messages.update(group.messages)
            into.held_window += group.held_window
            into.held_cap += group.held_cap
            into.stale.update(group.stale)
            into.done_already.update(group.done_already)
            into.held_out.update(group.held_out)
            into.funnel.update(group.funnel)
        return merged

    def problems(self) -> list[str]:
        found = [f"step never reached: {s}" for s in self.unreachable]
        found += [f"daily cap broken: {o}" for o in self.over_cap]
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "journey": self.journey,
            "version": self.version,
            "population": self.population,
            "seed": self.seed,
            "started": self.start.isoformat(),
            "seconds": round(self.seconds, 1),
            "trials_per_second": round(self.trials_per_second, 2),
            "parts_replayed": self.replayed,
            "messages_per_user": round(self.messages_per_user(), 2),
            "groups": {k: g.as_dict() for k, g in sorted(self.groups.items())},
            "calls_per_agent_and_day": dict(sorted(self.calls.items())),
            "unreachable_steps": self.unreachable,
            "over_cap": self.over_cap,
        }


def from_dict(data: dict[str, Any]) -> Simulation:
    """A report saved with `--format json` (the `journey` part of a comparison too)."""
    data = data.get("journey", data) if "against" in data else data
    try:
        groups = {
            key: Group(
                trials=g["trials"],
                messages=Counter(g["by_step_and_channel"]),
                held_window=g["held_by_send_window"],
                held_cap=g["held_by_daily_cap"],
                stale=Counter(g["stale_skips"]),
                done_already=Counter(g.get("skipped_as_done", {})),
                held_out=Counter(g.get("skipped_by_holdout", {})),
                funnel=Counter(g["funnel"]),
            )
            for key, g in data["groups"].items()
        }
        return Simulation(
            journey=data["journey"],
            version=data["version"],
            population=data["population"],
            seed=data["seed"],
            seconds=data["seconds"],
            replayed=data.get("parts_replayed", 0),
            groups=groups,
            calls=Counter(data.get("calls_per_agent_and_day", {})),
            unreachable=list(data.get("unreachable_steps", [])),
            over_cap=list(data.get("over_cap", [])),
            start=datetime.fromisoformat(data["started"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ReportError(f"not a saved simulation report (missing or bad {err})") from err


@dataclass
class Difference:
    what: str
    journey: float
    against: float
    problem: bool = False

    @property
    def changed(self) -> bool:
        return round(self.journey, 2) != round(self.against, 2)


def _rates(group: Group) -> list[tuple[str, float]]:
    n = group.trials or 1
    return [
        ("messages per user", group.sent / n),
        ("activated %", 100 * group.funnel["activated"] / n),
        ("converted %", 100 * group.funnel["converted"] / n),
        ("held by the send window, per user", group.held_window / n),
        ("held by the daily cap, per user", group.held_cap / n),
        ("stale skips per user", sum(group.stale.values()) / n),
    ]


def compare(journey: Simulation, against: Simulation) -> dict[str, list[Difference]]:
    """Per persona (arms merged): the rates, then messages per user of each step and channel,
    side by side. Doubling the messages per user is a problem."""
    mine, theirs = journey.by_persona(), against.by_persona()
    found: dict[str, list[Difference]] = {}
    for persona in sorted(set(mine) | set(theirs)):
        a, b = mine.get(persona, Group()), theirs.get(persona, Group())
        rows = [
            Difference(label, x, y) for (label, x), (_, y) in zip(_rates(a), _rates(b), strict=True)
        ]
        rows[0].problem = rows[0].against > 0 and rows[0].journey >= 2 * rows[0].against
        for step in sorted(set(a.messages) | set(b.messages)):
            rows.append(
                Difference(
                    step,
                    a.messages[step] / (a.trials or 1),
                    b.messages[step] / (b.trials or 1),
                )
            )
        found[persona] = rows
    return found


def problems(journey: Simulation, against: Simulation | None = None) -> list[str]:
    """What fails the check: a drip step no user reached, a day over the cap, and (against a
    baseline) twice the messages per user for a persona."""
    found = journey.problems()
    if against is not None:
        for persona, rows in compare(journey, against).items():
            if rows[0].problem:
                found.append(
                    f"messages per user doubled for {persona}: "
                    f"{rows[0].against:.1f} → {rows[0].journey:.1f}"
                )
    return found


def analyse(
    defn: JourneyDefinition,
    journey: Path,
    users: Sequence[ScriptedUser],
    played: Played,
    seed: int,
) -> Simulation:
    zones = {u.key: ZoneInfo(u.timezone) for u in users}
    agent_zones = {a.name: ZoneInfo(a.timezone) for a in defn.call.agents}
    groups: dict[str, Group] = defaultdict(Group)
    calls: Counter[str] = Counter()
    reached: set[tuple[str, str]] = set()
    over_cap: list[str] = []
    for status in played.statuses:
        persona = status.persona or "unknown"
        arm = assign_arm(defn, status.user_id)
        group = groups[f"{persona}/{arm}"]
        group.trials += 1
        group.funnel["signed_up"] += 1
        if status.activated:
            group.funnel["activated"] += 1
        if status.stage == "converted":
            group.funnel["converted"] += 1
        tz = zones[status.user_id]
        marketing_days: dict[str, set[str]] = defaultdict(set)
        for sent in status.sent:
            message = sent.message or sent.template
            group.messages[f"{message}/{sent.channel}"] += 1
            reached.add((persona, message))
            spec = _spec(defn, message)
            if spec is None or spec.category != "marketing":
                continue
            local = sent.at.astimezone(tz)
            marketing_days[local.date().isoformat()].add(message)
            if sent.due is None or sent.at <= sent.due or spec.immediate:
                continue
            if sent.channel == "in_app" and _has_other(status, sent):
                continue  # A message held is counted once, on its first other channel.
            opens = _window_opens(defn, sent.due.astimezone(tz))
            if local.date() > opens.date():
                group.held_cap += 1
            elif opens > sent.due:
                group.held_window += 1
        for day, messages in sorted(marketing_days.items()):
            if len(messages) > defn.max_marketing_per_day:
                over_cap.append(f"{status.user_id}/{day}/{len(messages)}")
        done_events = {e for e, n in status.events_seen.items() if n}
        for occurrence in status.skipped:
            message = occurrence.removeprefix("drip.").split(".")[0]
            if arm in HOLDOUT_ARMS:
                group.held_out[message] += 1
            elif done_events.intersection(skip_if_of(defn, message)):
                group.done_already[message] += 1
            else:
                group.stale[message] += 1
    for agent, at in played.slots:
        # The agent's local day: their capacity is per local day.
        local = at.astimezone(agent_zones.get(agent, ZoneInfo("UTC")))
        calls[f"{agent}/{local.date().isoformat()}"] += 1
    unreachable = [
        f"{persona}/{step.message}"
        for persona, path in defn.personas.items()
        for step in path.drip
        if (persona, step.message) not in reached
    ]
    return Simulation(
        journey=_shown(journey),
        version=defn.version,
        population=len(played.statuses),
        seed=seed,
        seconds=played.seconds,
        replayed=played.replayed,
        groups=dict(groups),
        calls=calls,
        unreachable=unreachable,
        over_cap=over_cap,
        start=played.start,
    )


def _shown(path: Path) -> str:
    """The journey's path as the report shows it: relative to here when it is below."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _has_other(status: TrialStatus, sent: Any) -> bool:
    return any(s.message == sent.message and s.channel != "in_app" for s in status.sent)


def _spec(defn: JourneyDefinition, message: str) -> Any:
    try:
        return defn.message(message)
    except (KeyError, ValueError):
        return None


def _window_opens(defn: JourneyDefinition, due: datetime) -> datetime:
    """The first instant at or after `due` (local) inside the send window, cap aside."""
    window = defn.send_window
    opens = due.replace(hour=window.start.hour, minute=window.start.minute, second=0)
    closes = due.replace(hour=window.end.hour, minute=window.end.minute, second=0)
    if due < opens:
        return opens
    if due < closes:
        return due
    return opens + timedelta(days=1)

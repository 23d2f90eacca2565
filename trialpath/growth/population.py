"""A synthetic population of trial users for the demo, so the growth dashboard has something
meaningful to show.

Each user is drawn at random (seeded) with a persona and behaviours whose rates follow the
figures of the personalization study the journey is built on: with a generic onboarding 78 % of
users complete the checklist but 12 % activate and 23 % are still active after a week; with
personalized paths completion drops to 71 % while activation reaches 34 % and 7-day retention
52 %. The holdout (no onboarding messages) does a little worse than generic. These are the
behaviours of made-up users, played through the API like the showcase users of the demo; they
show what the dashboard reads, they prove nothing about real users.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from trialpath.client import TrialpathError
from trialpath.core.definition import JourneyDefinition, Urgency
from trialpath.core.journey import assign_arm
from trialpath.entry.demo import (
    Played,
    ScriptedUser,
    Tracked,
    _check,
    delays,
    play,
    read_status,
    signup_body,
)

PERSONAS = (("technical", 0.4), ("business", 0.35), ("executive", 0.25))
URGENCIES: tuple[Urgency, ...] = ("this_week", "this_month", "evaluating")
GOALS = {
    "technical": [("integration_connected", 1), ("api_call", 10)],
    "business": [("workflow_created", 1), ("teammate_invited", 1)],
    "executive": [("dashboard_configured", 1), ("report_shared", 1)],
}


@dataclass(frozen=True)
class Rates:
    complete: float
    activate: float
    retain_7d: float
    csat: tuple[int, int]
    """Range of CSAT scores given after a completed call."""


RATES = {
    "personalized": Rates(complete=0.71, activate=0.34, retain_7d=0.52, csat=(4, 5)),
    "generic": Rates(complete=0.78, activate=0.12, retain_7d=0.23, csat=(3, 5)),
    "holdout": Rates(complete=0.70, activate=0.09, retain_7d=0.18, csat=(3, 4)),
    "global_holdout": Rates(complete=0.70, activate=0.09, retain_7d=0.18, csat=(3, 4)),
    "default": Rates(complete=0.71, activate=0.34, retain_7d=0.52, csat=(4, 5)),
}
FIRST_NAMES = ("Alex", "Sam", "Camille", "Noor", "Jun", "Lea", "Omar", "Ines", "Tom", "Maya")
LAST_NAMES = ("Martin", "Chen", "Diallo", "Rossi", "Novak", "Garcia", "Silva", "Kim", "Dubois")


def population(
    defn: JourneyDefinition, size: int, prefix: str = "pop", seed: int = 7
) -> list[ScriptedUser]:
    """`size` synthetic users; the same arguments give the same users and scripts."""
    rng = random.Random(seed)
    key_events = list(defn.stall.key_events)
    users = []
    for i in range(size):
        key = f"{prefix}-{i:04d}"
        persona = rng.choices([p for p, _ in PERSONAS], [w for _, w in PERSONAS])[0]
        urgency = rng.choice(URGENCIES)
        rates = RATES.get(assign_arm(defn, key), RATES["default"])
        script: list[tuple[float, str, dict[str, Any]]] = []
        if rng.random() < rates.complete:
            day = rng.uniform(0.2, 2.5)
            script += [
                (day + j * 0.05, "event", {"name": name}) for j, name in enumerate(key_events)
            ]
        activated = rng.random() < rates.activate
        if activated:
            day = rng.uniform(0.3, 5.5)
            script += [
                (day + j * 0.02, "event", {"name": name})
                for j, (name, count) in enumerate(GOALS[persona])
                for _ in range(count)
            ]
        if rng.random() < rates.retain_7d:
            script.append((rng.uniform(7.1, 12.5), "event", {"name": "login"}))
        if rng.random() < 0.3:
            # After the success call, whose local day is set by the urgency (at 10:00, which
            # is less than half a day from the signup's time of day); a stall only brings it
            # forward. Completed earlier, it would be refused as a call not held yet.
            day = defn.call.day_by_urgency[urgency] + rng.uniform(0.5, 1.0)
            script.append((day, "call", {"action": "completed", "notes": "synthetic"}))
            low, high = rates.csat
            script.append(
                (day + 0.4, "survey", {"survey": "csat", "score": rng.randint(low, high)})
            )
        converted_day = None
        if rng.random() < (0.45 if activated else 0.04):
            converted_day = rng.uniform(7.0, 13.5)
            plan, mrr = rng.choice((("team", 99), ("business", 490), ("starter", 29)))
            script.append((converted_day, "conversion", {"plan": plan, "mrr": mrr}))
            if rng.random() < 0.25:
                script.append((converted_day + 1.0, "event", {"name": "referral_sent"}))
        elif rng.random() < 0.05:
            script.append((rng.uniform(1.0, 9.0), "cancel", {"reason": "synthetic"}))
        users.append(
            ScriptedUser(
                key=key,
                name=f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
                behaviour="synthetic",
                persona=persona if rng.random() > 0.15 else None,
                urgency=urgency,
                script=[*sorted(script, key=lambda a: a[0])],
                locale="fr" if rng.random() < 0.3 else "en",
                timezone=rng.choice(("Europe/Paris", "America/New_York", "Asia/Tokyo")),
            )
        )
    return users


@dataclass
class PopulationReport:
    """How the synthetic population plays (kept current while it does): trials signed up or
    found, and its scripts' requests (how many the API refused, how late they went)."""

    size: int = 0
    trials: int = 0
    new: int = 0
    requests: int = 0
    refused: int = 0
    sent: list[float] = field(default_factory=list)
    """Per accepted request, seconds from its scripted moment to its sending..."""
    answered: list[float] = field(default_factory=list)
    """... and to the API's answer."""
    held_back: float = 0.0
    """Seconds signups waited for the API and the worker to keep up."""
    over: int = 0
    """New trials whose script has played out."""
    worst_lag: float = 0.0
    """The most the worker was seen behind its trials' timers, in seconds."""
    problems: Counter[str] = field(default_factory=Counter)
    """Why requests were refused, and how often."""

    def summary(self, seconds_per_day: float) -> str:
        text = f"{self.trials} synthetic trials ({self.new} new)"
        if not self.answered:
            return text
        sent, answered = sorted(self.sent), sorted(self.answered)
        p95 = answered[min(len(answered) - 1, int(0.95 * len(answered)))]
        text += (
            f", {self.requests} scripted requests sent at worst {sent[-1]:.1f} s and answered "
            f"a median {answered[len(answered) // 2]:.1f} s, 95 % within {p95:.1f} s "
            f"({p95 / seconds_per_day:.2f} journey days) after their scripted moment"
        )
        text += f"; the worker was at most {self.worst_lag:.1f} s behind its timers"
        if self.held_back:
            text += f"; signups held back {self.held_back:.0f} s for the service to keep up"
        if self.refused:
            reasons = ", ".join(f"{n} × {why}" for why, n in self.problems.most_common(3))
            text += f"; {self.refused} refused ({reasons})"
        return text


class Throttle:
    """Bounds the population's requests in flight and tells whether the service keeps up
    with them: few requests waiting their turn, those answered in the last journey day sent
    within `keep_up_days` of their scripted moment, and the worker (as last sampled) no
    further behind its trials' timers than that."""

    def __init__(
        self, concurrency: int, seconds_per_day: float, keep_up_days: float = 0.25
    ) -> None:
        self.concurrency = concurrency
        self.seconds_per_day = seconds_per_day
        self.limit = keep_up_days * seconds_per_day
        self._gate = asyncio.Semaphore(concurrency)
        self.waiting = 0
        self.recent: deque[tuple[float, float]] = deque()
        """(answered at, seconds it waited past its scripted moment to go), oldest first."""
        self.worker_lag = 0.0
        self.worst_lag = 0.0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.waiting += 1
        try:
            async with self._gate:
                yield
        finally:
            self.waiting -= 1

    def played(self, played: Played) -> None:
        self.recent.append((played.answered, played.late))

    def lagging(self, seconds: float) -> None:
        self.worker_lag = seconds
        self.worst_lag = max(self.worst_lag, seconds)

    def keeping_up(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        while self.recent and self.recent[0][0] < now - self.seconds_per_day:
            self.recent.popleft()
        return (
            self.waiting <= self.concurrency
            and self.worker_lag < self.limit
            and all(late < self.limit for _, late in self.recent)
        )


async def worker_lag(api: httpx.AsyncClient, items: list[Tracked]) -> float:
    """How far behind the worker is, in seconds, read on a few running trials: since when
    the timer each still sleeps on came due (a worker that keeps up runs it at once)."""
    lag = 0.0
    for item in items:
        asked = time.time()
        status = await read_status(api, item)
        if status is not None and status.next_wakeup is not None:
            lag = max(lag, asked - status.next_wakeup.timestamp())
    return lag


async def play_population(
    api: httpx.AsyncClient,
    users: list[ScriptedUser],
    seconds_per_day: float,
    report: PopulationReport | None = None,
    backlog: Callable[[], Awaitable[int]] | None = None,
    concurrency: int = 8,
    signups_per_day: float = 50.0,
) -> PopulationReport:
    """Signs the population up, at most `signups_per_day` a journey day and only while the
    service keeps up with the trials already started (the API answers their requests on
    time, the worker runs their timers on time, `backlog` is empty), and plays each new
    trial's script, its events dated at their scripted moments. A refused request ends that
    trial's script and is counted. Existing trials are found, not played again. `report` is
    kept current."""
    report = report if report is not None else PopulationReport()
    report.size = len(users)
    throttle = Throttle(concurrency, seconds_per_day)
    spacing = seconds_per_day / signups_per_day
    look = max(0.5, seconds_per_day / 4)
    players: list[asyncio.Task[None]] = []
    fresh: list[Tracked] = []

    async def one(item: Tracked) -> None:
        await play(
            api,
            item,
            seconds_per_day,
            slot=throttle.slot,
            dated=True,
            on_played=throttle.played,
        )
        report.over += 1

    async def sample() -> None:
        turn = 0
        while True:
            await asyncio.sleep(look)
            running = [i for i in fresh if not i.script_done]
            if running:
                turn += 1
                picked = [running[(turn * 3 + k) % len(running)] for k in range(3)]
                throttle.lagging(await worker_lag(api, picked[: len(running)]))

    sampler = asyncio.create_task(sample())
    try:
        for user in users:
            waited = time.monotonic()
            while True:
                if throttle.keeping_up() and (backlog is None or not await backlog()):
                    break
                await asyncio.sleep(look)
            report.held_back += time.monotonic() - waited
            async with throttle.slot():
                try:
                    response = await api.post("/v1/trials", json=signup_body(user, user.key))
                    created = _check(response)
                except (TrialpathError, httpx.HTTPError):
                    continue
            report.trials += 1
            if response.status_code == 200:
                continue
            signup = datetime.fromisoformat(created["signup_at"])
            item = Tracked(user, user.key, False, signup)
            fresh.append(item)
            report.new += 1
            players.append(asyncio.create_task(one(item)))
            await asyncio.sleep(spacing)
        await asyncio.gather(*players)
    finally:
        sampler.cancel()
        for player in players:
            player.cancel()
    for item in fresh:
        report.requests += len(item.played)
        report.refused += sum(p.problem is not None for p in item.played)
        report.problems.update(_reason(p) for p in item.played if p.problem)
    report.sent, report.answered = delays(fresh)
    report.worst_lag = throttle.worst_lag
    return report


def _reason(played: Played) -> str:
    """`call completed: 409`: what was refused and the API's status, without the user."""
    what = played.what.split(": ", 1)[-1]
    code = re.search(r": (\d{3}) ", played.problem or "")
    return f"{what}: {code.group(1) if code else played.problem}"

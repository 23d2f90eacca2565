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
import random
from dataclasses import dataclass
from datetime import datetime

import httpx

from trialpath.definition import JourneyDefinition
from trialpath.demo import Action, DemoError, SampleUser, Tracked, _check, play, signup_body
from trialpath.journey import assign_arm

PERSONAS = (("technical", 0.4), ("business", 0.35), ("executive", 0.25))
URGENCIES = ("this_week", "this_month", "evaluating")
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
    "default": Rates(complete=0.71, activate=0.34, retain_7d=0.52, csat=(4, 5)),
}
FIRST_NAMES = ("Alex", "Sam", "Camille", "Noor", "Jun", "Lea", "Omar", "Ines", "Tom", "Maya")
LAST_NAMES = ("Martin", "Chen", "Diallo", "Rossi", "Novak", "Garcia", "Silva", "Kim", "Dubois")


def population(
    defn: JourneyDefinition, size: int, prefix: str = "pop", seed: int = 7
) -> list[SampleUser]:
    """`size` synthetic users; the same arguments give the same users and scripts."""
    rng = random.Random(seed)
    key_events = list(defn.stall.key_events)
    users = []
    for i in range(size):
        key = f"{prefix}-{i:04d}"
        persona = rng.choices([p for p, _ in PERSONAS], [w for _, w in PERSONAS])[0]
        rates = RATES.get(assign_arm(defn, key), RATES["default"])
        script: list[Action] = []
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
            day = rng.uniform(2.2, 5.0)
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
            SampleUser(
                key=key,
                name=f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
                behaviour="synthetic",
                persona=persona if rng.random() > 0.15 else None,
                urgency=rng.choice(URGENCIES),
                script=sorted(script, key=lambda a: a[0]),
                locale="fr" if rng.random() < 0.3 else "en",
                timezone=rng.choice(("Europe/Paris", "America/New_York", "Asia/Tokyo")),
            )
        )
    return users


async def start_population(
    api: httpx.AsyncClient, users: list[SampleUser], concurrency: int = 20
) -> list[Tracked]:
    """Starts every trial through the API, a few at a time; existing ones are found."""
    gate = asyncio.Semaphore(concurrency)

    async def one(user: SampleUser) -> Tracked | None:
        async with gate:
            try:
                response = await api.post("/v1/trials", json=signup_body(user, user.key))
                created = _check(response)
            except (DemoError, httpx.HTTPError):
                return None
        return Tracked(
            user,
            user.key,
            response.status_code == 200,
            datetime.fromisoformat(created["signup_at"]),
        )

    started = await asyncio.gather(*(one(u) for u in users))
    return [t for t in started if t is not None]


async def play_population(
    api: httpx.AsyncClient, tracked: list[Tracked], seconds_per_day: float
) -> None:
    """Plays every new trial's script; failures (a trial that ended) are kept per trial."""
    await asyncio.gather(*(play(api, t, seconds_per_day) for t in tracked if not t.existing))

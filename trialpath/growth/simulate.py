"""`trialpath simulate`: plays a synthetic population through the real `TrialWorkflow` and its
activities on Temporal's time-skipping test server, then reports what the journey did to it.

The population (`trialpath.growth.population`, seeded) is split into parts. Each part runs in a
process of its own: its own time-skipping server and worker (the production `build_worker`,
every channel on the outbox provider or the in-app inbox), on one SQLite database shared by all
parts, so agents' calendars and daily capacities hold across the population. The part moves the
server's clock to each scripted action of its users and signals it to the user's trial; it ends
when every trial has ended (expired, converted or cancelled, win-back included). Parts run side
by side, one per core.

A part whose clock stops moving (`STALL_SECONDS`) or which overruns its time budget is killed
with its server, its trials' rows deleted, and played again from the start, up to `ATTEMPTS`
times: the same users and scripts give the same trials, so nothing is counted twice. The report
says how many parts were replayed.

What the report counts, per persona (as the trial ended) and arm:
- messages sent per step (the journey's message) and channel, and per user;
- marketing messages held: by the send window (due outside it, sent when it opened) or by the
  daily cap (sent on a later local day than the window allowed);
- steps skipped without being sent: gone stale (no slot before they stopped making sense, or
  the trial moved on), or done already (a drip step's `skip_if` event was seen);
- success calls booked per agent and day;
- the funnel: signed up, activated, converted.
And the journey's checks: drip steps no simulated user reached, local days on which a user got
more marketing messages than `max_marketing_per_day`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from trialpath.core.contract import TrialStatus
from trialpath.core.definition import JourneyDefinition, load_definition
from trialpath.core.journey import assign_arm
from trialpath.entry.demo import ScriptedUser
from trialpath.operations.config import PROJECT_ROOT

DAY = 86400.0
PART_SIZE = 20
"""Trials per part: big enough that a process's start (about 2 s) is a small share of its
work, small enough that a part played again costs little."""
ATTEMPTS = 3
STALL_SECONDS = 45.0
"""A part whose server clock has not moved for this long (real seconds) is stuck: the
time-skipping server can wedge, rarely, and never recovers."""
BUDGET_SECONDS = 90.0
BUDGET_PER_TRIAL = 8.0
"""A part's whole budget: this plus so much per trial, generous for a busy machine (a trial
takes about 1 s of CPU)."""
QUANTUM = 900
"""Scripted actions are played on the quarter hour: fewer timers, the same journey."""


class SimulationError(RuntimeError):
    """The simulation could not be played (a part failed `ATTEMPTS` times, a bad journey)."""


# --- the population ------------------------------------------------------------------------


def synthetic(defn: JourneyDefinition, size: int, seed: int) -> list[ScriptedUser]:
    """`size` users drawn as in `trialpath.growth.population`: the same seed, the same users."""
    from trialpath.growth.population import population

    return population(defn, size, prefix="sim", seed=seed)


def actions_of(user: ScriptedUser) -> list[dict[str, Any]]:
    """The user's script as signals to their trial: (seconds after signup, signal, payload).
    Survey answers are left out: they are recorded by the API, the journey never sees them."""
    found = []
    for day, kind, payload in user.script:
        if not isinstance(day, int | float):
            continue  # "after the call" moments belong to the demo's showcase users only
        at = round(day * DAY / QUANTUM) * QUANTUM
        if kind == "event":
            found.append((at, "event", {"name": payload["name"]}))
        elif kind == "call" and payload.get("action") == "completed":
            found.append((at, "call_completed", {"notes": payload.get("notes")}))
        elif kind == "conversion":
            found.append((at, "converted", {"plan": payload["plan"], "mrr": payload.get("mrr")}))
        elif kind == "cancel":
            found.append((at, "cancel", {"reason": payload.get("reason")}))
    return [{"at": at, "signal": name, "payload": body} for at, name, body in found]


def recorded(engine: Any, since: datetime, until: datetime) -> list[ScriptedUser]:
    """The trials that signed up in [since, until), as simulated users: their profile (a
    persona only where the user gave it), their recorded events, purchase and cancellation at
    the same journey time after signup (demo trials on an accelerated clock included). No
    personal data is copied: names and addresses are made up."""
    from sqlmodel import Session, col, select

    from trialpath.operations.models import Trial, TrialEvent

    users = []
    with Session(engine) as session:
        trials = session.exec(
            select(Trial)
            .where(Trial.signup_at >= since, Trial.signup_at < until)
            .order_by(col(Trial.signup_at), col(Trial.user_id))
        ).all()
        for i, trial in enumerate(trials):
            per_day = trial.seconds_per_day or DAY

            def day(at: datetime, trial: Trial = trial, per_day: float = per_day) -> float:
                return max(0.0, (at - trial.signup_at).total_seconds() / per_day)

            events = session.exec(
                select(TrialEvent).where(TrialEvent.user_id == trial.user_id, TrialEvent.counted)
            ).all()
            script: list[tuple[float, str, dict[str, Any]]] = [
                (day(e.occurred_at), "event", {"name": e.name}) for e in events
            ]
            if trial.converted_at is not None:
                plan = {"plan": trial.converted_plan or "unknown", "mrr": trial.mrr}
                script.append((day(trial.converted_at), "conversion", plan))
            elif trial.stage == "cancelled" and trial.ended_at is not None:
                script.append((day(trial.ended_at), "cancel", {"reason": "recorded"}))
            given = trial.persona_source in ("signup", "qualifier")
            users.append(
                ScriptedUser(
                    key=f"rec-{i:05d}",
                    name="Recorded User",
                    behaviour="recorded",
                    persona=trial.persona if given else None,
                    urgency=trial.urgency,
                    script=[*sorted(script, key=lambda a: a[0])],
                    locale=trial.locale,
                    timezone=trial.timezone,
                    company=trial.company or "",
                )
            )
    return users


# --- one part, in a process of its own ------------------------------------------------------


async def _run_part(job: dict[str, Any], report: Callable[[str], None]) -> list[dict[str, Any]]:
    from concurrent.futures import ThreadPoolExecutor

    from temporalio.testing import WorkflowEnvironment

    from trialpath.core.contract import Qualification, TrialProfile, workflow_id_for
    from trialpath.core.journey import TrialInput
    from trialpath.operations.config import Settings
    from trialpath.operations.temporal import (
        DATA_CONVERTER,
        bundled_binary,
        register_search_attributes,
    )
    from worker import build_worker
    from workflows.trial import TrialWorkflow

    _throwaway_database()
    folder = Path(job["folder"])
    settings = Settings(
        data_dir=folder,
        database_url=f"sqlite:///{job['database']}",
        journey_file=Path(job["journey"]),
        templates_dir=Path(job["templates"]),
        task_queue="simulation",
        email_provider="outbox",
        sms_provider="outbox",
        in_app_provider="inbox",
        support_provider="outbox",
        worker_shutdown_seconds=0,
    )
    users = [ScriptedUser(**u) for u in job["users"]]
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER,
        test_server_existing_path=str(bundled_binary("temporal-test-server")),
    ) as env:
        await register_search_attributes(env.client)
        start = datetime.fromisoformat(job["start"])
        await _skip_to(env, start, report)
        with ThreadPoolExecutor(max_workers=4) as pool:
            async with build_worker(env.client, settings, pool):
                handles = {}
                for user in users:
                    qualification = None
                    if user.persona or user.urgency:
                        qualification = Qualification.model_validate(
                            {"role": user.persona, "urgency": user.urgency}
                        )
                    profile = TrialProfile(
                        user_id=user.key,
                        name=user.name,
                        email=f"{user.key}@simulation.trialpath.example",
                        phone=user.phone,
                        locale=user.locale,
                        timezone=user.timezone,
                        company=user.company,
                        signup_at=start,
                        qualification=qualification,
                    )
                    handles[user.key] = await env.client.start_workflow(
                        TrialWorkflow.run,
                        TrialInput(profile=profile),
                        id=workflow_id_for(user.key),
                        task_queue=settings.task_queue,
                    )
                actions = sorted(
                    (a["at"], key, a["signal"], a["payload"])
                    for key, script in job["actions"].items()
                    for a in script
                )
                for at, key, name, payload in actions:
                    await _skip_to(env, start + timedelta(seconds=at), report)
                    await _signal(env, handles[key], name, payload)
                results = []
                for handle in handles.values():
                    # Waiting on the result lets the server skip time until the trial ends.
                    status = await handle.result()
                    results.append(status.model_dump(mode="json"))
                    report("ended")
    return results


def _throwaway_database() -> None:
    """The part's SQLite database is thrown away with it: no waiting for the disk on each
    commit (a quarter of the part's CPU time with the default, safe, setting)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _no_sync(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()


TIMER_GUARD = timedelta(seconds=3)


async def _signal(env: Any, handle: Any, name: str, payload: dict[str, Any]) -> None:
    """Signals the trial once no timer of its is about to fire. Between skips the server's
    clock runs at real pace, and a timer due just after a skip landed (the trial waits for
    a round hour, the scripts act on the quarter hour) may fire while the workflow task that
    handles the signal is with the worker: the time-skipping server then refuses that task's
    cancellation of the timer ("invalid history builder state for action",
    temporalio/sdk-java#3088) and the trial is stuck for good. So the clock is first moved
    past any timer due within `TIMER_GUARD`. A trial that has ended takes no more signals."""
    from temporalio.client import WorkflowQueryFailedError
    from temporalio.service import RPCError

    from workflows.trial import TrialWorkflow

    with contextlib.suppress(RPCError, WorkflowQueryFailedError):
        for _ in range(10):
            status = await handle.query(TrialWorkflow.status)
            now = await env.get_current_time()
            wake = status.next_wakeup
            if wake is None or abs(wake - now) > TIMER_GUARD:
                break
            await env.sleep(wake + TIMER_GUARD - now)
        await handle.signal(name, payload)


SKIP_STEP = timedelta(hours=6)
"""The longest skip asked of the server in one call (the client gives up on a call after 30 s
of real time, and a skip of days through many trials' timers can take longer)."""


async def _skip_to(env: Any, target: datetime, report: Callable[[str], None]) -> None:
    while (now := await env.get_current_time()) < target:
        await env.sleep(min(target - now, SKIP_STEP))
        report("moved")


def part_main(job_file: str) -> None:
    """Entry point of a part's process: `python -m trialpath.growth.simulate JOB.json`; writes the
    trials' final statuses beside the job, and progress lines on stdout."""
    job = json.loads(Path(job_file).read_text())

    def report(line: str) -> None:
        print(line, flush=True)

    results = asyncio.run(_run_part(job, report))
    out = Path(job["folder"]) / "statuses.json"
    out.write_text(json.dumps(results))
    report("done")
    from trialpath.operations.temporal import exit_process

    exit_process(0)


# --- playing the population ------------------------------------------------------------------


@dataclass
class Played:
    statuses: list[TrialStatus]
    seconds: float
    start: datetime
    replayed: int = 0
    """Parts killed (stuck or over budget) and played again."""
    slots: list[tuple[str, datetime]] | None = None
    """The calls booked at the end, (agent, start), from the agents' calendars: slots released
    (a trial cancelled or bought before its call) are not there. None: read from the trials'
    statuses instead."""


def next_monday(now: datetime) -> datetime:
    """Every simulation starts on a Monday at 06:00 UTC (08:00 in Paris, midnight in New York,
    15:00 in Tokyo): agents' calendars and the send window meet the same week each run."""
    day = (now + timedelta(days=1)).replace(hour=6, minute=0, second=0, microsecond=0)
    return day + timedelta(days=(7 - day.weekday()) % 7)


async def play(
    journey: Path,
    users: Sequence[ScriptedUser],
    *,
    templates: Path,
    parallel: int | None = None,
    progress: Callable[[int], None] | None = None,
    part_size: int = PART_SIZE,
) -> Played:
    """Plays the users through `journey`; `progress(n)` as n more trials end."""
    from trialpath.operations.db import make_engine

    began = time.monotonic()
    parallel = parallel or max(1, min(os.cpu_count() or 1, 4))
    start = next_monday(datetime.now(UTC))
    with tempfile.TemporaryDirectory(prefix="trialpath-simulate-") as tmp:
        root = Path(tmp)
        # One database for every part: agents' calendars and daily capacities are shared, as
        # in production (each trial writes only rows of its own).
        database = root / "trialpath.db"
        make_engine(f"sqlite:///{database}", upgrade=True).dispose()
        parts = [list(users[i : i + part_size]) for i in range(0, len(users), part_size)]
        gate = asyncio.Semaphore(parallel)
        replayed = 0

        async def one(index: int, part: list[ScriptedUser]) -> list[dict[str, Any]]:
            nonlocal replayed
            async with gate:
                for attempt in range(1, ATTEMPTS + 1):
                    folder = root / f"part-{index}-{attempt}"
                    folder.mkdir()
                    if attempt > 1:
                        await asyncio.to_thread(_forget, database, [u.key for u in part])
                    job = {
                        "database": str(database),
                        "folder": str(folder),
                        "journey": str(journey),
                        "templates": str(templates),
                        "start": start.isoformat(),
                        "users": [asdict(u) for u in part],
                        "actions": {u.key: actions_of(u) for u in part},
                    }
                    (folder / "job.json").write_text(json.dumps(job, default=str))
                    outcome = await _part_process(folder, len(part), progress)
                    if outcome is not None:
                        return outcome
                    replayed += 1
                raise SimulationError(
                    f"part {index + 1} of the simulation got stuck {ATTEMPTS} times "
                    f"(its logs: rerun with a smaller --population)"
                )

        found = await asyncio.gather(*(one(i, p) for i, p in enumerate(parts)))
        slots = await asyncio.to_thread(_booked, database)
    statuses = [TrialStatus.model_validate(s) for part in found for s in part]
    return Played(statuses, time.monotonic() - began, start, replayed, slots)


def _booked(database: Path) -> list[tuple[str, datetime]]:
    from sqlmodel import Session, select

    from trialpath.operations.db import make_engine
    from trialpath.operations.models import CallSlot

    engine = make_engine(f"sqlite:///{database}")
    try:
        with Session(engine) as session:
            return [(s.agent, s.start_at) for s in session.exec(select(CallSlot)).all()]
    finally:
        engine.dispose()


def _forget(database: Path, users: list[str]) -> None:
    """Deletes what a stuck part's trials wrote (every row of theirs, by user or workflow id),
    before the part is played again. Agents' round-robin counters keep their bookings."""
    from sqlalchemy import create_engine, delete
    from sqlmodel import SQLModel

    import trialpath.operations.models  # noqa: F401  (the tables, registered in the metadata)
    from trialpath.core.contract import workflow_id_for

    engine = create_engine(f"sqlite:///{database}", connect_args={"timeout": 30})
    ids = [workflow_id_for(u) for u in users]
    try:
        with engine.begin() as connection:
            for table in SQLModel.metadata.sorted_tables:
                for column, values in (("user_id", users), ("workflow_id", ids)):
                    if column in table.c:
                        connection.execute(delete(table).where(table.c[column].in_(values)))
    finally:
        engine.dispose()


async def _part_process(
    folder: Path, size: int, progress: Callable[[int], None] | None
) -> list[dict[str, Any]] | None:
    """Runs one part's process; its statuses, or None when it was stuck or failed (killed,
    with its server, and its progress taken back)."""
    budget = BUDGET_SECONDS + BUDGET_PER_TRIAL * size
    log = (folder / "part.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALPATH_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trialpath.growth.simulate",
        str(folder / "job.json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        env=env,
        start_new_session=True,
        cwd=str(PROJECT_ROOT),  # `worker` and `workflows` import from there
    )
    assert process.stdout is not None
    began = moved = time.monotonic()
    ended = 0
    done = False
    try:
        while True:
            left = min(began + budget, moved + STALL_SECONDS) - time.monotonic()
            if left <= 0:
                break
            try:
                line = await asyncio.wait_for(process.stdout.readline(), left)
            except TimeoutError:
                break
            if not line:
                break
            text = line.decode().strip()
            if text == "moved":
                moved = time.monotonic()
            elif text == "ended":
                ended += 1
                moved = time.monotonic()
                if progress:
                    progress(1)
            elif text == "done":
                done = True
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        log.close()
    statuses = folder / "statuses.json"
    if done and process.returncode == 0 and statuses.exists():
        return list(json.loads(statuses.read_text()))
    if progress and ended:
        progress(-ended)
    errors = (folder / "part.log").read_text(errors="replace")
    if "Traceback" in errors and "TimeoutError" not in errors:
        # A failure of our own (a bad journey, a broken template), not a stuck server.
        raise SimulationError(f"a part of the simulation failed:\n{errors[-3000:]}")
    return None


# --- the report --------------------------------------------------------------------------------


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
        raise SimulationError(f"not a saved simulation report (missing or bad {err})") from err


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
            if len(status.sent) > 1 and sent.channel == "in_app" and _has_other(status, sent):
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
            skip_if = _skip_if(defn, status.persona, message)
            if "holdout" in arm:
                group.held_out[message] += 1
            elif skip_if & done_events:
                group.done_already[message] += 1
            else:
                group.stale[message] += 1
        booked = status.call.state != "none" and status.call.at and status.call.agent
        if played.slots is None and booked and status.call.at and status.call.agent:
            calls[_call_day(defn, status.call.agent, status.call.at)] += 1
    for agent, at in played.slots or ():
        calls[_call_day(defn, agent, at)] += 1
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


def _call_day(defn: JourneyDefinition, agent: str, at: datetime) -> str:
    """`agent/YYYY-MM-DD`, the day in the agent's time zone: their capacity is per local day."""
    zones = {a.name: a.timezone for a in defn.call.agents}
    return f"{agent}/{at.astimezone(ZoneInfo(zones.get(agent, 'UTC'))).date().isoformat()}"


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


def _skip_if(defn: JourneyDefinition, persona: str | None, message: str) -> set[str]:
    path = defn.personas.get(persona) if persona else None  # type: ignore[call-overload]
    for step in path.drip if path else ():
        if step.message == message:
            return set(step.skip_if)
    return set()


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


async def simulate(
    journey: Path,
    *,
    population: int,
    seed: int,
    templates: Path,
    users: Sequence[ScriptedUser] | None = None,
    progress: Callable[[int], None] | None = None,
    parallel: int | None = None,
) -> Simulation:
    defn = load_definition(journey)
    users = list(users) if users is not None else synthetic(defn, population, seed)
    played = await play(journey, users, templates=templates, progress=progress, parallel=parallel)
    return analyse(defn, journey, users, played, seed)


if __name__ == "__main__":
    part_main(sys.argv[1])

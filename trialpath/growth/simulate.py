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

The report: `trialpath.growth.simulation_report`.
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from trialpath.core.contract import TrialStatus
from trialpath.core.definition import JourneyDefinition, load_definition
from trialpath.entry.demo import ScriptedUser
from trialpath.growth.simulation_report import Simulation, analyse
from trialpath.operations.config import PROJECT_ROOT
from trialpath.operations.db import make_engine

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
        await skip_to(env, start, report)
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
                    await skip_to(env, start + timedelta(seconds=at), report)
                    await signal_when_clear(env, handles[key], name, payload)
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


async def signal_when_clear(env: Any, handle: Any, name: str, payload: dict[str, Any]) -> None:
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


async def skip_to(
    env: Any, target: datetime, report: Callable[[str], None] = lambda _: None
) -> None:
    """Moves the time-skipping server's clock to `target`, at most `SKIP_STEP` per call,
    `report("moved")` after each."""
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
    slots: list[tuple[str, datetime]] = field(default_factory=list)
    """The calls booked at the end, (agent, start), from the agents' calendars: slots released
    (a trial cancelled or bought before its call) are not there."""


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
                log = (folder / "part.log").read_text(errors="replace").strip()
                raise SimulationError(
                    f"part {index + 1} of the simulation failed {ATTEMPTS} times; "
                    f"its last log ends:\n{log[-3000:] or '(empty: it got stuck)'}"
                )

        found = await asyncio.gather(*(one(i, p) for i, p in enumerate(parts)))
        slots = await asyncio.to_thread(_booked, database)
    statuses = [TrialStatus.model_validate(s) for part in found for s in part]
    return Played(statuses, time.monotonic() - began, start, replayed, slots)


def _booked(database: Path) -> list[tuple[str, datetime]]:
    from sqlmodel import Session, select

    from trialpath.operations.models import CallSlot

    engine = make_engine(f"sqlite:///{database}", upgrade=False)
    try:
        with Session(engine) as session:
            return [(s.agent, s.start_at) for s in session.exec(select(CallSlot)).all()]
    finally:
        engine.dispose()


def _forget(database: Path, users: list[str]) -> None:
    """Deletes what a stuck part's trials wrote (every row of theirs, by user or workflow id),
    before the part is played again. Agents' round-robin counters keep their bookings."""
    from sqlalchemy import delete
    from sqlmodel import SQLModel

    from trialpath.core.contract import workflow_id_for

    engine = make_engine(f"sqlite:///{database}", upgrade=False)
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
    """Runs one part's process; its statuses, or None when it got stuck or failed (killed with
    its server, its progress taken back): a stuck time-skipping server shows either way (no
    clock moving, or a call that timed out), so any failure is played again."""
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
    return None


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

"""Load proof: thousands of trials in flight on one worker, measured against a hello-world.

    .venv/bin/python bench/load.py [--trials 10000] [--concurrency 200] [--events 200]

Everything runs on 127.0.0.1, each piece in its own process, and is stopped by PID at the end
(Ctrl-C and SIGTERM included): a Temporal dev server (the bundled `temporal` binary, SQLite file
in a temporary directory), the trial worker (`python -m worker`, SQLite, real-time journey
days so trials sit in their timers after their first steps), a hello-world worker
(`hello_world.py`) and the API (uvicorn). This process only generates load and measures.

Phases, one after the other in the same run:

1. hello-world: `--trials` starts of a one-activity workflow (the SDK samples' hello), with
   `--concurrency` starts in flight, the same call the API makes (`client.start_workflow`,
   reject-duplicate ids, same RPC timeout); done when every one has completed.
2. trials: `--trials` starts through `Trials.start`, the API's own code path, with the same
   concurrency; done when the worker is idle and every trial has its database row, that is when
   each has sent its first messages and sleeps in its first timer ("enrolled").
3. API starts: `--api-starts` more trials through `POST /v1/trials`, for the API's overhead.
4. histories: `--histories` trials picked at random; their events are counted as Temporal
   actions (see `ACTION_EVENTS`) and compared with their messages (`count_messages`).
5. event latency: `--events` trials picked at random each get one `POST .../events`
   (`--event-concurrency` at a time); the time until their `status` query shows the event is
   the latency. The history sample is re-read afterwards: actions added by one event.

Throughput is reported two ways, each as a ratio to hello-world: starts/s (calls accepted by
Temporal) and enrolled/s (from the first start to the last trial enrolled, or hello-world
completed). The worker's RSS (`/proc/<pid>/status`) is sampled every half second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from hello_world import HELLO_TYPE  # next to this file: the script's folder is on sys.path
from sqlalchemy import Engine, func
from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy

from trialpath.core.contract import QUERY_STATUS, Qualification, TrialStatus, workflow_id_for
from trialpath.entry.commands import StartTrial
from trialpath.entry.trials import RPC_TIMEOUT, Trials
from trialpath.operations.config import PROJECT_ROOT, Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Trial
from trialpath.operations.ports import free_port
from trialpath.operations.services import Process, Services
from trialpath.operations.temporal import (
    connect,
    exit_process,
    register_search_attributes,
    wait_for_pollers,
)

HOST = "127.0.0.1"
HELLO_WORKER = Path(__file__).resolve().parent / "hello_world.py"
API_KEY = f"bench-{uuid.uuid4().hex}"
EVENT_NAME = "login"
EVENT_TIMEOUT = 60.0
POLL_INTERVAL = 0.025
"""Between `status` queries: each costs the worker an activation (a replay if evicted)."""
WARM_UP = 20
SHM = Path("/dev/shm")
MESSAGE_ACTIVITY = "send_message"
"""The activity that sends one message (runs started before `one-activity-per-step`)."""
STEP_ACTIVITY = "send_step"
"""The activity that sends every channel of one step: one message per channel."""
CHANGE_VERSION = "TemporalChangeVersion"
"""The search attribute a patch marker upserts; Temporal Cloud does not bill that upsert."""
# Qualifier answers cycled over the trials; `None`: unanswered (the trial waits for it).
PROFILES: tuple[Qualification | None, ...] = (
    Qualification(role="technical", challenge="integrations", urgency="this_week"),
    Qualification(role="business", challenge="team_coordination", urgency="this_month"),
    Qualification(role="executive", challenge="strategic_oversight", urgency="evaluating"),
    None,
)
# History events that cost a Temporal Cloud action (docs.temporal.io/cloud/actions), plus one
# per activity retry (`attempt - 1` on ACTIVITY_TASK_STARTED). Queries cost one each too but
# leave no event; workflow, activity and timer completions are free. Two rules of that page are
# applied in `count_actions`: the markers one workflow task records (patches, local activities)
# are one action, not one each, and the `TemporalChangeVersion` upsert a patch makes is free.
ACTION_EVENTS = frozenset(
    {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
        EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
        EventType.EVENT_TYPE_TIMER_STARTED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
        EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
        EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED,
        EventType.EVENT_TYPE_MARKER_RECORDED,
        EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
        EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
        EventType.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
    }
)


# --- processes ---------------------------------------------------------------------------------


def spawn(services: Services, name: str, command: list[str], env: dict[str, str]) -> Process:
    """Starts a process in its own group, remembered by `services` so `stop_all` stops it."""
    log = services.settings.data_dir / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    process = Process(name, popen, log)
    services.started.append(process)
    return process


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB; empty once it has exited."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Monitor:
    """Samples the RSS of the watched processes every half second, by phase."""

    pids: dict[str, int]
    phase: str = "idle"
    peak: dict[tuple[str, str], int] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    _cpu_at: dict[str, float] = field(default_factory=dict)

    def rss(self, name: str) -> int:
        return memory_kib(self.pids[name]).get("VmRSS", 0)

    def sample(self) -> None:
        for name in self.pids:
            key = (name, self.phase)
            self.peak[key] = max(self.peak.get(key, 0), self.rss(name))

    def enter(self, phase: str) -> None:
        """Closes the current phase's CPU account and opens `phase`'s."""
        self.sample()
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        if self._cpu_at:
            self.cpu[self.phase] = {n: now[n] - self._cpu_at[n] for n in now}
        self._cpu_at = now
        self.phase = phase

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.5)


# --- load --------------------------------------------------------------------------------------


@dataclass
class Starts:
    """A batch of workflow starts: when each was issued and how long all of them took."""

    name: str
    issued: dict[str, datetime] = field(default_factory=dict)
    began: float = 0.0
    seconds: float = 0.0
    errors: int = 0
    first_error: str = ""
    done_at: dict[str, datetime] = field(default_factory=dict)
    """When each workflow was enrolled (trial) or completed (hello-world)."""

    @property
    def rate(self) -> float:
        return len(self.issued) / self.seconds if self.seconds else 0.0

    @property
    def first_issue(self) -> datetime:
        return min(self.issued.values())

    @property
    def enrolled_seconds(self) -> float:
        if not self.done_at:
            return 0.0
        return (max(self.done_at.values()) - self.first_issue).total_seconds()

    @property
    def enrolled_rate(self) -> float:
        return len(self.done_at) / self.enrolled_seconds if self.enrolled_seconds else 0.0

    def latencies(self) -> list[float]:
        return [
            (self.done_at[k] - self.issued[k]).total_seconds()
            for k in self.issued
            if k in self.done_at
        ]


async def bounded(count: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> None:
    """Runs `job(0..count-1)` with at most `concurrency` in flight."""
    counter = iter(range(count))

    async def lane() -> None:
        for i in counter:
            await job(i)

    await asyncio.gather(*(lane() for _ in range(max(1, min(concurrency, count)))))


async def start_many(
    starts: Starts, keys: Sequence[str], concurrency: int, start: Callable[[str], Awaitable[None]]
) -> Starts:
    async def job(i: int) -> None:
        key = keys[i]
        issued = datetime.now(UTC)
        try:
            await start(key)
        except Exception as err:
            starts.errors += 1
            starts.first_error = starts.first_error or f"{type(err).__name__}: {err}"[:300]
            return
        starts.issued[key] = issued

    starts.began = time.perf_counter()
    await bounded(len(keys), concurrency, job)
    starts.seconds = time.perf_counter() - starts.began
    return starts


def start_command(user_id: str, i: int) -> StartTrial:
    return StartTrial(
        user_id=user_id,
        email=f"{user_id}@example.com",
        name="Load Test",
        company="Acme Load",
        qualification=PROFILES[i % len(PROFILES)],
    )


async def start_hello(client: Client, task_queue: str, ids: Sequence[str], conc: int) -> Starts:
    async def start(workflow_id: str) -> None:
        await client.start_workflow(
            HELLO_TYPE,
            workflow_id,
            id=workflow_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            rpc_timeout=RPC_TIMEOUT,
        )

    return await start_many(Starts("hello-world"), ids, conc, start)


async def start_trials(trials: Trials, users: Sequence[str], conc: int, name: str) -> Starts:
    index = {u: i for i, u in enumerate(users)}

    async def start(user_id: str) -> None:
        _, new = await trials.start(start_command(user_id, index[user_id]))
        if not new:
            raise RuntimeError(f"trial {user_id} already existed")

    return await start_many(Starts(name), users, conc, start)


async def start_trials_http(http: httpx.AsyncClient, users: Sequence[str], conc: int) -> Starts:
    index = {u: i for i, u in enumerate(users)}

    async def start(user_id: str) -> None:
        body = start_command(user_id, index[user_id]).model_dump(mode="json", exclude_none=True)
        response = await http.post("/v1/trials", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

    return await start_many(Starts("trials via API"), users, conc, start)


# --- waiting for the work to be done -----------------------------------------------------------

SLOTS = re.compile(r'^temporal_worker_task_slots_used\{[^}]*worker_type="(\w+)"[^}]*\} (\S+)$')


async def slots_used(http: httpx.AsyncClient, metrics_url: str) -> float:
    """Workflow and activity tasks the worker is running (from its Prometheus endpoint)."""
    text = (await http.get(metrics_url)).text
    used = 0.0
    for line in text.splitlines():
        match = SLOTS.match(line)
        if match and match.group(1) in ("WorkflowWorker", "ActivityWorker"):
            used += float(match.group(2))
    return used


def trial_rows(engine: Engine) -> tuple[int, datetime | None]:
    with Session(engine) as session:
        count, last = session.exec(
            select(func.count(), func.max(Trial.updated_at))  # type: ignore[call-overload]
        ).one()
    return count, last


def enrolled_at(engine: Engine, users: Sequence[str]) -> dict[str, datetime]:
    """The last write of each trial's row: the record made just before its first wait."""
    with Session(engine) as session:
        rows = session.exec(select(Trial.user_id, Trial.updated_at)).all()
    wanted = set(users)
    return {u: at for u, at in rows if u in wanted}


async def settle(
    engine: Engine,
    http: httpx.AsyncClient,
    metrics_url: str,
    rows_expected: int,
    within: float,
    label: str,
) -> None:
    """Waits until every trial has its row, no row changed and the worker ran no task for a
    few polls in a row: every trial is asleep in a timer."""
    deadline = time.monotonic() + within
    stable, previous, shown = 0, None, 0.0
    while True:
        rows, last = await asyncio.to_thread(trial_rows, engine)
        busy = await slots_used(http, metrics_url)
        quiet = rows >= rows_expected and busy == 0 and last == previous
        stable = stable + 1 if quiet else 0
        if stable >= 4:
            return
        if time.monotonic() - shown > 15:
            print(
                f"  {label}: {rows}/{rows_expected} rows, {busy:.0f} tasks running", file=sys.stderr
            )
            shown = time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: not settled after {within:.0f}s ({rows} rows)")
        previous = last
        await asyncio.sleep(0.5)


async def hello_done(client: Client, starts: Starts, within: float) -> None:
    """Waits for every hello-world to complete, then reads their close times."""
    query = f"WorkflowType = '{HELLO_TYPE}' AND ExecutionStatus = 'Completed'"
    deadline = time.monotonic() + within
    while (await client.count_workflows(query)).count < len(starts.issued) + WARM_UP:
        if time.monotonic() > deadline:
            raise TimeoutError(f"hello-world not completed after {within:.0f}s")
        await asyncio.sleep(0.5)
    async for execution in client.list_workflows(query, page_size=1000):
        if execution.id in starts.issued and execution.close_time is not None:
            starts.done_at[execution.id] = execution.close_time


# --- histories and events ----------------------------------------------------------------------


@dataclass
class Cost:
    actions: int
    messages: int
    at_wait: bool
    by_type: dict[str, int]


def count_actions(events: Iterable[HistoryEvent]) -> tuple[dict[str, int], Counter[str]]:
    """Billable actions by kind (`ACTION_EVENTS`, and `activity_retry` for each retry) and the
    activities scheduled by type in a history's events."""
    by_type: dict[str, int] = {}
    activities: Counter[str] = Counter()
    marker_tasks: set[int] = set()
    for event in events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_MARKER_RECORDED:
            task = event.marker_recorded_event_attributes.workflow_task_completed_event_id
            if task in marker_tasks:
                continue
            marker_tasks.add(task)
        elif kind == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            upserted = event.upsert_workflow_search_attributes_event_attributes
            if set(upserted.search_attributes.indexed_fields) <= {CHANGE_VERSION}:
                continue
        if kind in ACTION_EVENTS:
            name = EventType.Name(kind).removeprefix("EVENT_TYPE_").lower()
            by_type[name] = by_type.get(name, 0) + 1
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            activities[scheduled.activity_type.name] += 1
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            retries = event.activity_task_started_event_attributes.attempt - 1
            by_type["activity_retry"] = by_type.get("activity_retry", 0) + retries
    return by_type, activities


def count_messages(events: Iterable[HistoryEvent]) -> int:
    """The messages a history sends: one per `send_message`, one per channel of a
    `send_step` (read from its input, JSON when no payload codec is on, as here)."""
    messages = 0
    for event in events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        scheduled = event.activity_task_scheduled_event_attributes
        if scheduled.activity_type.name == MESSAGE_ACTIVITY:
            messages += 1
        elif scheduled.activity_type.name == STEP_ACTIVITY:
            messages += len(json.loads(scheduled.input.payloads[0].data)["channels"])
    return messages


async def history_cost(client: Client, user_id: str) -> Cost:
    history = await client.get_workflow_handle(workflow_id_for(user_id)).fetch_history()
    by_type, _ = count_actions(history.events)
    pending_activities = pending_timers = 0
    for event in history.events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            pending_activities += 1
        elif kind in (
            EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
            EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
        ):
            pending_activities -= 1
        elif kind == EventType.EVENT_TYPE_TIMER_STARTED:
            pending_timers += 1
        elif kind in (EventType.EVENT_TYPE_TIMER_FIRED, EventType.EVENT_TYPE_TIMER_CANCELED):
            pending_timers -= 1
    actions = sum(by_type.values())
    messages = count_messages(history.events)
    return Cost(actions, messages, pending_activities == 0 and pending_timers > 0, by_type)


@dataclass
class EventTiming:
    ack: float
    seen: float
    polls: int


async def event_latency(
    client: Client, http: httpx.AsyncClient, user_id: str, run: str
) -> EventTiming:
    """POSTs one event, then queries `status` until `events_seen` counts it."""
    handle = client.get_workflow_handle(workflow_id_for(user_id))
    began = time.perf_counter()
    body = {"name": EVENT_NAME, "idempotency_key": f"{run}-{user_id}"}
    response = await http.post(f"/v1/trials/{user_id}/events", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    ack = time.perf_counter() - began
    polls = 0
    while True:
        polls += 1
        status = await handle.query(QUERY_STATUS, result_type=TrialStatus, rpc_timeout=RPC_TIMEOUT)
        if status.events_seen.get(EVENT_NAME, 0) >= 1:
            return EventTiming(ack, time.perf_counter() - began, polls)
        if time.perf_counter() - began > EVENT_TIMEOUT:
            raise TimeoutError(f"{user_id}: event not seen after {EVENT_TIMEOUT:.0f}s")
        await asyncio.sleep(POLL_INTERVAL)


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Results:
    args: argparse.Namespace
    hello: Starts | None = None
    trials: Starts | None = None
    api: Starts | None = None
    costs: list[Cost] = field(default_factory=list)
    costs_after: list[Cost] = field(default_factory=list)
    events: list[EventTiming] = field(default_factory=list)
    event_errors: int = 0
    event_error: str = ""
    rss_idle: int = 0
    rss_in_flight: int = 0
    rss_after_events: int = 0
    hwm: int = 0
    hello_rss: int = 0
    in_flight: int = 0
    cache: dict[str, float] = field(default_factory=dict)
    monitor: Monitor | None = None


def env_for(settings: Settings, data_dir: Path, secret: str) -> dict[str, str]:
    """The worker's and the API's settings: Trialpath's own SQLite and outbox in `data_dir`."""
    return {
        "TRIALPATH_DATA_DIR": str(data_dir),
        "TRIALPATH_DATABASE_URL": settings.database_url,
        "TRIALPATH_TEMPORAL_ADDRESS": settings.temporal_address,
        "TRIALPATH_TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "TRIALPATH_TASK_QUEUE": settings.task_queue,
        "TRIALPATH_SECONDS_PER_DAY": str(settings.seconds_per_day),
        "TRIALPATH_API_KEYS": f"bench:admin:{API_KEY}",
        "TRIALPATH_API_PORT": str(settings.api_port),
        "TRIALPATH_SIGNING_SECRET": secret,
        "TRIALPATH_LOG_LEVEL": "WARNING",
        "TRIALPATH_WORKER_SHUTDOWN_SECONDS": "2",
    }


CACHE_METRICS = re.compile(
    r"^temporal_(sticky_cache_size|sticky_cache_total_forced_eviction|sticky_cache_hit"
    r"|sticky_cache_miss)(?:_total)?(?:\{[^}]*\})? (\S+)$"
)


async def cache_figures(http: httpx.AsyncClient, metrics_url: str) -> dict[str, float]:
    text = (await http.get(metrics_url)).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = CACHE_METRICS.match(line)
        if match:
            found[match.group(1)] = found.get(match.group(1), 0.0) + float(match.group(2))
    return found


async def bench(
    args: argparse.Namespace, services: Services, data_dir: Path, results: Results
) -> None:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    settings = services.settings
    # Migrated here first, so the worker and the API do not race to create the tables.
    engine = make_engine(settings.effective_database_url)
    client = await connect(settings, patience=30)
    await register_search_attributes(client)

    env = env_for(settings, data_dir, uuid.uuid4().hex)
    metrics_port = free_port(pair=True)
    if args.no_bytecode_cache:
        # As a container with PYTHONDONTWRITEBYTECODE and no compiled files: the sandbox
        # compiles each workflow module again for every workflow instance it creates.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = str(data_dir / "no-pycache")
    else:
        # As the image does (compileall at build time), whatever this shell's environment says.
        env["PYTHONDONTWRITEBYTECODE"] = ""
    worker_env = {**env, "TRIALPATH_WORKER_METRICS_PORT": str(metrics_port)}
    worker_env.update(dict(kv.split("=", 1) for kv in args.worker_env))
    worker = spawn(services, "worker", [sys.executable, "-m", "worker"], worker_env)
    hello_queue = f"{settings.task_queue}-hello"
    hello = spawn(
        services,
        "hello-worker",
        [sys.executable, str(HELLO_WORKER), hello_queue],
        env,
    )
    api = services.start_api(env)
    await wait_for_pollers(client, settings.task_queue)
    await wait_for_pollers(client, hello_queue)
    services.check_alive()

    monitor = Monitor({"worker": worker.popen.pid, "hello worker": hello.popen.pid})
    monitor.pids["temporal"] = services.started[0].popen.pid
    monitor.pids["load (this)"] = os.getpid()
    monitor.pids["api"] = api.popen.pid
    results.monitor = monitor
    sampler = asyncio.create_task(monitor.run())
    trials = Trials(client, engine, settings)
    metrics_url = f"http://{HOST}:{metrics_port}/metrics"
    base_url = f"http://{HOST}:{settings.api_port}"
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {API_KEY}"},
        limits=limits,
        timeout=60,
    ) as http:
        try:
            run = uuid.uuid4().hex[:6]
            # Warm-up: connections, sandbox imports, the API's first requests.
            await start_hello(
                client, hello_queue, [f"hello-warm-{run}-{i}" for i in range(WARM_UP)], 20
            )
            warm = [f"warm-{run}-{i}" for i in range(WARM_UP)]
            await start_trials(trials, warm, 20, "warm-up")
            await settle(engine, http, metrics_url, WARM_UP, args.timeout, "warm-up")
            results.rss_idle = monitor.rss("worker")

            n = args.trials
            monitor.enter("hello-world")
            ids = [f"hello-{run}-{i}" for i in range(args.hello or n)]
            print(f"starting {len(ids)} hello-world workflows", file=sys.stderr)
            results.hello = await start_hello(client, hello_queue, ids, args.concurrency)
            await hello_done(client, results.hello, args.timeout)
            results.hello_rss = monitor.rss("hello worker")

            monitor.enter("trials")
            users = [f"load-{run}-{i}" for i in range(n)]
            print(f"starting {n} trials", file=sys.stderr)
            results.trials = await start_trials(trials, users, args.concurrency, "trials")
            expected = WARM_UP + len(results.trials.issued)
            await settle(engine, http, metrics_url, expected, args.timeout, "trials")
            results.trials.done_at = await asyncio.to_thread(enrolled_at, engine, users)
            services.check_alive()

            monitor.enter("API starts")
            if args.api_starts:
                api_users = [f"api-{run}-{i}" for i in range(args.api_starts)]
                print(f"starting {len(api_users)} trials through the API", file=sys.stderr)
                results.api = await start_trials_http(http, api_users, args.concurrency)
                expected += len(results.api.issued)
                await settle(engine, http, metrics_url, expected, args.timeout, "API starts")
                results.api.done_at = await asyncio.to_thread(enrolled_at, engine, api_users)
            results.in_flight = expected
            results.rss_in_flight = monitor.rss("worker")
            results.cache = await cache_figures(http, metrics_url)

            monitor.enter("histories")
            started = list(results.trials.issued)
            rng = random.Random(7)
            sample = rng.sample(started, min(args.histories, len(started)))
            results.costs = list(await asyncio.gather(*(history_cost(client, u) for u in sample)))

            monitor.enter("events")
            rest = [u for u in started if u not in set(sample)]
            targets = sample + rng.sample(
                rest, max(0, min(args.events, len(started)) - len(sample))
            )
            targets = targets[: args.events]
            rng.shuffle(targets)

            async def one(i: int) -> None:
                try:
                    results.events.append(await event_latency(client, http, targets[i], run))
                except Exception as err:
                    results.event_errors += 1
                    results.event_error = results.event_error or f"{type(err).__name__}: {err}"

            print(f"sending {len(targets)} events", file=sys.stderr)
            await bounded(len(targets), args.event_concurrency, one)
            await settle(engine, http, metrics_url, expected, args.timeout, "events")
            results.costs_after = list(
                await asyncio.gather(*(history_cost(client, u) for u in sample))
            )
            results.rss_after_events = monitor.rss("worker")
            monitor.enter("end")
            results.hwm = memory_kib(worker.popen.pid).get("VmHWM", 0)
            services.check_alive()
        finally:
            sampler.cancel()


# --- report ------------------------------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def report(r: Results) -> None:
    args = r.args
    hello, trials = r.hello, r.trials
    assert hello is not None and trials is not None
    rows: list[tuple[str, str, str]] = []

    def row(name: str, value: str, target: str = "") -> None:
        rows.append((name, value, target))

    row("hello-world starts/s", f"{hello.rate:.0f}")
    row("trial starts/s (Trials.start)", f"{trials.rate:.0f}")
    ratio = trials.rate / hello.rate if hello.rate else 0.0
    row("  ratio to hello-world", f"{ratio:.2f}", f">= 0.8 {'ok' if ratio >= 0.8 else 'MISSED'}")
    row("hello-world completed/s", f"{hello.enrolled_rate:.0f}")
    row("trials enrolled/s", f"{trials.enrolled_rate:.0f}")
    ratio = trials.enrolled_rate / hello.enrolled_rate if hello.enrolled_rate else 0.0
    row("  ratio to hello-world", f"{ratio:.2f}")
    cpu = r.monitor.cpu if r.monitor is not None else {}
    if "hello-world" in cpu and "trials" in cpu:
        # CPU time per workflow: unlike rates, barely moved by other jobs on the machine.
        h_worker = cpu["hello-world"]["hello worker"] / len(hello.issued) * 1000
        t_worker = cpu["trials"]["worker"] / len(trials.issued) * 1000
        h_server = cpu["hello-world"]["temporal"] / len(hello.issued) * 1000
        t_server = cpu["trials"]["temporal"] / len(trials.issued) * 1000
        row("worker CPU per workflow (hello / trial)", f"{h_worker:.0f} / {t_worker:.0f} ms")
        row("server CPU per workflow (hello / trial)", f"{h_server:.0f} / {t_server:.0f} ms")
        both = (h_worker + h_server) / (t_worker + t_server) if t_worker + t_server else 0.0
        row("  CPU ratio hello / trial", f"{both:.2f}")
    hl, tl = hello.latencies(), trials.latencies()
    row("start to completed p50/p99 (hello)", f"{pct(hl, 0.5):.1f} / {pct(hl, 0.99):.1f} s")
    row("start to enrolled p50/p99 (trial)", f"{pct(tl, 0.5):.1f} / {pct(tl, 0.99):.1f} s")
    if r.api is not None:
        row("trial starts/s via POST /v1/trials", f"{r.api.rate:.0f}")
        row("  ratio to Trials.start", f"{r.api.rate / trials.rate:.2f}" if trials.rate else "-")
        if "API starts" in cpu and "trials" in cpu and r.api.issued:
            # What a start costs the processes in front of Temporal, on each path. They share
            # the cores with the worker and the server enrolling the trials just started.
            api_ms = cpu["API starts"].get("api", 0.0) / len(r.api.issued) * 1000
            http_ms = cpu["API starts"]["load (this)"] / len(r.api.issued) * 1000
            direct_ms = cpu["trials"]["load (this)"] / len(trials.issued) * 1000
            row("  API process CPU per POST", f"{api_ms:.1f} ms")
            row(
                "  caller CPU per start (Trials.start / HTTP)",
                f"{direct_ms:.1f} / {http_ms:.1f} ms",
            )
    if r.costs:
        actions = [c.actions for c in r.costs]
        messages = [c.messages for c in r.costs]
        over = [c.actions - c.messages for c in r.costs]
        worst = max(over)
        row(
            f"actions per trial at first wait (n={len(r.costs)})",
            f"{statistics.mean(actions):.1f} (max {max(actions)})",
        )
        row("  messages per trial", f"{statistics.mean(messages):.1f} (max {max(messages)})")
        row(
            "  actions - messages",
            f"{statistics.mean(over):.1f} (max {worst})",
            f"<= 10 {'ok' if worst <= 10 else 'MISSED'}",
        )
        at_wait = sum(c.at_wait for c in r.costs)
        row("  sampled trials asleep in a timer", f"{at_wait}/{len(r.costs)}")
    if r.costs_after:
        added = [a.actions - b.actions for a, b in zip(r.costs_after, r.costs, strict=True)]
        row("actions added by one API event", f"{statistics.mean(added):.1f} (max {max(added)})")
    row(f"worker RSS after warm-up ({WARM_UP} trials)", mib(r.rss_idle))
    row(f"worker RSS, {r.in_flight} trials in flight", mib(r.rss_in_flight), "< 1 GiB")
    row("worker RSS after the events", mib(r.rss_after_events))
    ok = max(r.rss_in_flight, r.hwm) < 1024 * 1024
    row("worker peak RSS (VmHWM)", mib(r.hwm), f"< 1 GiB {'ok' if ok else 'MISSED'}")
    row("hello-world worker RSS", mib(r.hello_rss))
    seen = [e.seen * 1000 for e in r.events]
    acks = [e.ack * 1000 for e in r.events]
    if seen:
        p99 = pct(seen, 0.99)
        row(
            f"event to status p50/p99 (n={len(seen)})",
            f"{pct(seen, 0.5):.0f} / {p99:.0f} ms",
            f"p99 < 1 s {'ok' if p99 < 1000 else 'MISSED'}",
        )
        row("  API 202 p50/p99", f"{pct(acks, 0.5):.0f} / {pct(acks, 0.99):.0f} ms")
        polls = statistics.mean(e.polls for e in r.events)
        row(f"  status queries per event (every {POLL_INTERVAL * 1000:.0f} ms)", f"{polls:.1f}")
    if r.cache:
        row(
            "sticky cache: size / forced evictions",
            f"{r.cache.get('sticky_cache_size', 0):.0f} / "
            f"{r.cache.get('sticky_cache_total_forced_eviction', 0):.0f}",
        )

    print(
        f"\n{args.trials} trials and {len(hello.issued)} hello-worlds, {args.concurrency} starts"
        f" in flight; {len(r.events)} events, {args.event_concurrency} at a time\n"
    )
    width = max(len(n) for n, _, _ in rows) + 2
    print(f"{'measure':<{width}}{'value':>22}  target")
    print("-" * (width + 40))
    for name, value, target in rows:
        print(f"{name:<{width}}{value:>22}  {target}")

    if r.monitor is not None and r.monitor.cpu:
        names = list(r.monitor.pids)
        print(f"\n{'CPU seconds by phase':<22}" + "".join(f"{n:>14}" for n in names))
        for phase, used in r.monitor.cpu.items():
            print(f"{phase:<22}" + "".join(f"{used.get(n, 0):>14.1f}" for n in names))
        print(f"\n{'peak RSS by phase':<22}" + "".join(f"{n:>14}" for n in names))
        for phase in r.monitor.cpu:
            print(
                f"{phase:<22}"
                + "".join(f"{mib(r.monitor.peak.get((n, phase), 0)):>14}" for n in names)
            )
    if r.costs:
        kinds: dict[str, list[int]] = {}
        for c in r.costs:
            for k, v in c.by_type.items():
                kinds.setdefault(k, []).append(v)
        print(
            "\nactions per sampled trial by kind: "
            + ", ".join(f"{k} {sum(v) / len(r.costs):.1f}" for k, v in sorted(kinds.items()))
        )
    for s in (hello, trials, r.api):
        if s is not None and s.errors:
            print(f"{s.name}: {s.errors} starts failed, first: {s.first_error}")
    if r.event_errors:
        print(f"events: {r.event_errors} failed, first: {r.event_error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument(
        "--hello", type=int, default=0, help="hello-world starts (default: as many as --trials)"
    )
    parser.add_argument("--concurrency", type=int, default=200, help="starts in flight")
    parser.add_argument("--api-starts", type=int, default=500)
    parser.add_argument("--histories", type=int, default=50)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--event-concurrency", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per phase")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the trial worker (tuning), repeatable",
    )
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="workers without .pyc files (PYTHONDONTWRITEBYTECODE and an empty cache prefix)",
    )
    parser.add_argument(
        "--server-db-on-disk",
        action="store_true",
        help="keep the dev server's SQLite file on disk instead of tmpfs (/dev/shm)",
    )
    args = parser.parse_args()
    if min(args.trials, args.concurrency, args.events, args.event_concurrency) < 1:
        parser.error("--trials, --concurrency, --events and --event-concurrency must be >= 1")
    if any("=" not in kv for kv in args.worker_env):
        parser.error("--worker-env takes KEY=VALUE")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 0
    # The dev server's SQLite file goes to tmpfs: on this machine's disk it is the bottleneck
    # of every phase (about 3x slower), hello-world included, which is not what is measured
    # here. Trialpath's own SQLite database stays on disk, as in production.
    server_root = None if args.server_db_on_disk or not SHM.is_dir() else str(SHM)
    with (
        tempfile.TemporaryDirectory(prefix="trialpath-load-", dir=server_root) as server_tmp,
        tempfile.TemporaryDirectory(prefix="trialpath-load-") as tmp,
    ):
        data_dir = Path(tmp)
        settings = Settings(
            data_dir=Path(server_tmp),
            database_url=f"sqlite:///{data_dir / 'trialpath.db'}",
            temporal_address=f"{HOST}:{free_port()}",
            temporal_namespace="default",
            temporal_ui_port=free_port(),
            task_queue=f"load-{uuid.uuid4()}",
            api_host=HOST,
            api_port=free_port(),
            api_keys=[f"bench:admin:{API_KEY}"],
            seconds_per_day=86400.0,
        )
        services = Services(settings)
        results = Results(args)
        try:
            print(f"starting Temporal on {settings.temporal_address}", file=sys.stderr)
            services.start_temporal()
            asyncio.run(bench(args, services, data_dir, results))
            report(results)
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("interrupted: stopping everything", file=sys.stderr)
            code = 130
        except Exception as err:
            print(f"benchmark failed: {type(err).__name__}: {err}", file=sys.stderr)
            for process in services.started:  # the logs go with the temporary directory
                with contextlib.suppress(OSError):
                    tail = process.log.read_text(errors="replace").splitlines()[-15:]
                    print(f"--- {process.name} ---", *tail, sep="\n", file=sys.stderr)
            code = 1
        finally:
            services.stop_all()  # API, workers, then the dev server: by PID, process groups
    return code


if __name__ == "__main__":
    exit_process(main())

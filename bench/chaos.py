"""Chaos proof: trials survive `kill -9` of the worker and a restart of Temporal, and every
message goes out exactly once.

    .venv/bin/python bench/chaos.py [--trials 200] [--kills 20] [--seed 7] [--seconds-per-day 1]
                                    [--server-signal kill|term|none] [--baseline] [--data DIR]

Everything runs on 127.0.0.1 in a temporary folder (removed when every check passed, else kept
and named), and every process started here is stopped by PID (its process group) at the end,
on failure, Ctrl-C and SIGTERM included: the Temporal dev server (the bundled `temporal`,
persisting to `temporal.db`), one worker (`python -m worker`) and the API (uvicorn `--factory
trialpath.entry.api.app:create_app`), the worker and the API sharing one SQLite database and the
outbox folder. The scenario:

1. `--trials` synthetic users (`trialpath.growth.population`, one in three with a phone number so
   SMS can go out too) sign up through the API, and each user's script (events, success call,
   survey, conversion, cancellation) is played through the API at its journey day. While the
   API answers 5xx or not at all (Temporal restarting) a request is retried with the same
   idempotency key;
2. meanwhile, at `--kills` seeded random moments within `--chaos-seconds` of the first signup,
   the worker's process group gets SIGKILL; a new worker starts after a random pause
   (`--min-pause`, `--max-pause`). A kill due while the worker is still starting waits until it
   polls, then a random moment more. Once, after a random kill, the dev server gets SIGKILL too
   (`--server-signal`) and starts again on the same port and database file while the worker
   keeps running;
3. every trial is then awaited: the API (`GET /v1/trials/{id}`) must answer a terminal stage
   (converted, expired, cancelled) and the workflow must have recorded its end.

Checks (exit code 1 if any fails, 2 if the run itself failed): each trial reached the stage its
script implies (cancelled if the user cancels, converted if they buy, else expired) and its
workflow completed; every message row is `sent` or `skipped`, and per trial the sent rows are
exactly the keys the workflow's final status lists as sent; no key was delivered twice (one row
per key, one outbox file per outbox row, none rewritten after its row was marked sent, none cut
short); every event the API accepted reached its trial; no workflow task failed on replay.
Figures: messages, kills, time taken, the longest time a trial waited for a worker (from the
workflow histories: workflow tasks and activities from scheduled to done, timers past due).
`--baseline` first runs the same trials without any chaos and puts both runs side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import dataclasses
import email
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowExecutionStatus

from trialpath.core.contract import TERMINAL_STAGES, TrialStatus, workflow_id_for
from trialpath.core.definition import load_definition
from trialpath.delivery.outbox import file_stem
from trialpath.entry.demo import Action, ScriptedUser, signup_body
from trialpath.growth.population import population
from trialpath.operations.config import PACKAGE_DIR, PROJECT_ROOT, Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message, PendingSignal, Trial, TrialEvent
from trialpath.operations.ports import free_port
from trialpath.operations.services import Process, ServiceError, Services, port_open
from trialpath.operations.temporal import connect, exit_process

HOST = "127.0.0.1"
READY_LINE = "worker polling task queue"
"""What the worker logs once it polls (worker.py): a new worker counts as up from then."""
BENIGN_TASK_FAILURES = frozenset(
    {
        # A signal arrived while the workflow was completing: the task runs again with it.
        WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND,
        WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_STICKY_TASK_QUEUE,
    }
)


@dataclass
class Options:
    trials: int = 200
    kills: int = 20
    seed: int = 7
    seconds_per_day: float = 1.0
    chaos_seconds: float | None = None
    """Kill moments are drawn in [1 s, this] after the signups begin; default 22 journey days."""
    min_pause: float = 0.2
    max_pause: float = 3.0
    restart_server: bool = True
    server_signal: str = "kill"
    timeout: float = 1200.0
    """Seconds for every trial to finish once the chaos starts."""
    poll_seconds: float = 5.0
    progress_seconds: float = 5.0
    phone_every: int = 3
    prefix: str = "chaos"
    root: Path | None = None
    """Where the data folder goes; default a new temporary folder."""

    @property
    def window(self) -> float:
        if self.chaos_seconds is not None:
            return self.chaos_seconds
        return 22 * self.seconds_per_day


def say(text: str) -> None:
    print(text, flush=True)


# --- processes -------------------------------------------------------------------------------

_ALIVE: dict[int, subprocess.Popen[bytes]] = {}
"""Every process group started here and not yet reaped, for the last-resort cleanup."""


def _kill_leftovers() -> None:
    for pid, popen in list(_ALIVE.items()):
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5)
        _ALIVE.pop(pid, None)


atexit.register(_kill_leftovers)


class Cluster:
    """The dev server, the API (through `Services`, as `trialpath up` runs them) and the worker
    incarnations (spawned here, one log file each, so each one's readiness can be read)."""

    def __init__(self, root: Path, options: Options) -> None:
        self.root = root
        self.data = root / "data"
        self.api_key = f"chaos-{uuid.uuid4().hex}"
        self.settings = Settings(
            _env_file=None,
            data_dir=self.data,
            database_url="",
            temporal_address=f"{HOST}:{free_port()}",
            temporal_namespace="default",
            temporal_tls_cert=None,
            temporal_tls_key=None,
            temporal_tls_ca=None,
            temporal_tls_server_name="",
            temporal_api_key="",
            codec_keys="",
            codec_keys_file=None,
            temporal_ui_port=free_port(),
            task_queue=f"chaos-{uuid.uuid4().hex[:8]}",
            api_host=HOST,
            api_port=free_port(),
            api_keys=[f"chaos:admin:{self.api_key}"],
            seconds_per_day=options.seconds_per_day,
        )
        # Spelled out so a developer's .env or shell cannot point a process elsewhere.
        self.env = {
            "TRIALPATH_DATA_DIR": str(self.data),
            "TRIALPATH_DATABASE_URL": "",
            "TRIALPATH_TEMPORAL_ADDRESS": self.settings.temporal_address,
            "TRIALPATH_TEMPORAL_NAMESPACE": "default",
            "TRIALPATH_TASK_QUEUE": self.settings.task_queue,
            "TRIALPATH_TEMPORAL_TLS_CERT": "",
            "TRIALPATH_TEMPORAL_TLS_KEY": "",
            "TRIALPATH_TEMPORAL_TLS_CA": "",
            "TRIALPATH_TEMPORAL_API_KEY": "",
            "TRIALPATH_CODEC_KEYS": "",
            "TRIALPATH_CODEC_KEYS_FILE": "",
            "TRIALPATH_SECONDS_PER_DAY": str(options.seconds_per_day),
            "TRIALPATH_API_HOST": HOST,
            "TRIALPATH_API_PORT": str(self.settings.api_port),
            "TRIALPATH_API_KEYS": json.dumps([f"chaos:admin:{self.api_key}"]),
            "TRIALPATH_PUBLIC_URL": "",
            "TRIALPATH_EMAIL_PROVIDER": "outbox",
            "TRIALPATH_SMS_PROVIDER": "outbox",
            "TRIALPATH_IN_APP_PROVIDER": "inbox",
            "TRIALPATH_SUPPORT_PROVIDER": "outbox",
            "TRIALPATH_JOURNEY_FILE": str(PACKAGE_DIR / "journey.toml"),
            "TRIALPATH_TEMPLATES_DIR": str(PROJECT_ROOT / "templates"),
            "TRIALPATH_WORKER_METRICS_PORT": "0",
            "TRIALPATH_LOG_FORMAT": "console",
            "TRIALPATH_LOG_LEVEL": "INFO",
        }
        self.services = Services(self.settings)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_log: Path | None = None
        self.lock = asyncio.Lock()
        self.kills = 0
        self.server_restarts = 0
        self.server_down_seconds = 0.0
        self.worker_down_seconds: list[float] = []
        self.unexpected_exits: list[str] = []

    @property
    def worker(self) -> subprocess.Popen[bytes] | None:
        return self.workers[-1] if self.workers else None

    # -- Temporal --

    def start_temporal(self) -> None:
        log = self.data / "temporal.log"
        for attempt in range(3):
            seen = log.stat().st_size if log.exists() else 0
            try:
                started = self.services.start_temporal()
            except ServiceError:
                with log.open("rb") as handle:
                    handle.seek(seen)
                    taken = b"address already in use" in handle.read()
                if not taken or attempt == 2:
                    raise
                # Another process bound a port between our pick and the server's (the UI's, or
                # one the server picks itself): the UI port can change, the gRPC port cannot.
                self.settings.temporal_ui_port = free_port()
                continue
            if not started:
                raise RuntimeError(f"something already listens on {self.settings.temporal_address}")
            temporal = self._temporal()
            _ALIVE[temporal.popen.pid] = temporal.popen
            return

    def _temporal(self) -> Process:
        return [p for p in self.services.started if p.name == "temporal"][-1]

    async def wait_for_temporal(self) -> None:
        # The port answers a moment before the frontend does.
        await connect(self.settings, patience=60)

    async def restart_temporal(self, signum: signal.Signals) -> None:
        began = time.monotonic()
        await asyncio.to_thread(self._stop_temporal, signum)
        await asyncio.to_thread(self.start_temporal)
        await self.wait_for_temporal()
        self.server_restarts += 1
        self.server_down_seconds = time.monotonic() - began

    def _stop_temporal(self, signum: signal.Signals) -> None:
        popen = self._temporal().popen
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signum)
        try:
            popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)
        _ALIVE.pop(popen.pid, None)
        host, port = HOST, int(self.settings.temporal_address.rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        while port_open(host, port) and time.monotonic() < deadline:
            time.sleep(0.1)

    # -- API --

    def start_api(self) -> None:
        api = self.services.start_api(self.env)
        _ALIVE[api.popen.pid] = api.popen

    # -- worker --

    def _spawn_worker(self) -> subprocess.Popen[bytes]:
        number = len(self.workers) + 1
        log = self.data / f"worker-{number:02d}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALPATH_")}
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "worker"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=PROJECT_ROOT,
                env={**env, **self.env},
                start_new_session=True,
            )
        _ALIVE[popen.pid] = popen
        self.workers.append(popen)
        self.worker_log = log
        return popen

    def _wait_ready(self, popen: subprocess.Popen[bytes], log: Path, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                _ALIVE.pop(popen.pid, None)
                return False
            if READY_LINE in log.read_text(errors="replace"):
                return True
            time.sleep(0.05)
        return False

    def start_worker(self, within: float = 90.0) -> None:
        """Starts a worker and waits until it polls; tries again if it dies starting."""
        for attempt in range(5):
            popen = self._spawn_worker()
            assert self.worker_log is not None
            if self._wait_ready(popen, self.worker_log, within):
                return
            self._kill(popen)
            self.unexpected_exits.append(f"worker {len(self.workers)} did not start")
            time.sleep(1 + attempt)
        raise RuntimeError(f"no worker started after 5 attempts; see {self.worker_log}")

    def _kill(self, popen: subprocess.Popen[bytes]) -> None:
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)
        _ALIVE.pop(popen.pid, None)

    def kill_worker(self) -> None:
        worker = self.worker
        assert worker is not None
        if worker.poll() is not None:
            raise RuntimeError(f"the worker had already exited ({worker.returncode})")
        self._kill(worker)
        self.kills += 1

    def worker_exited(self) -> int | None:
        worker = self.worker
        return None if worker is None else worker.poll()

    # -- everything --

    def stop_all(self) -> None:
        worker = self.worker
        if worker is not None and worker.poll() is None:
            # SIGTERM: the worker's graceful stop (not what is tested), then SIGKILL.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._kill(worker)
        for popen in self.workers:
            _ALIVE.pop(popen.pid, None)
        self.services.stop_all()  # the API, then the dev server(s), by process group
        _kill_leftovers()


# --- the users -------------------------------------------------------------------------------


@dataclass
class Run:
    """One trial user: their script, what the API said, where the trial ended."""

    user: ScriptedUser
    expected: str
    signup_at: datetime | None = None
    refused_after_end: int = 0
    errors: list[str] = field(default_factory=list)
    stage: str | None = None
    status: TrialStatus | None = None
    finished: bool = False

    @property
    def user_id(self) -> str:
        return self.user.key


def expected_stage(script: list[Action]) -> str:
    for _, action, _ in sorted(script, key=lambda a: a[0]):
        if action == "cancel":
            return "cancelled"
        if action == "conversion":
            return "converted"
    return "expired"


def make_runs(options: Options) -> list[Run]:
    users = population(
        load_definition(PACKAGE_DIR / "journey.toml"),
        options.trials,
        prefix=f"{options.prefix}-{options.seed}",
        seed=options.seed,
    )
    runs = []
    for i, user in enumerate(users):
        if options.phone_every and i % options.phone_every == 0:
            user = dataclasses.replace(user, phone=f"+3361{i:07d}")
        runs.append(Run(user, expected_stage(user.script)))
    return runs


@dataclass
class Tally:
    api_retries: int = 0
    started: float = 0.0
    finished: float = 0.0


def retryable(response: httpx.Response) -> bool:
    if response.status_code >= 500:
        return True
    # The same Idempotency-Key still in flight (an earlier attempt timed out client-side).
    return response.status_code == 409 and "still being processed" in response.text


async def call_api(
    http: httpx.AsyncClient,
    tally: Tally,
    deadline: float,
    method: str,
    path: str,
    **kwargs: Any,
) -> httpx.Response:
    """The request, again and again while the API answers 5xx or not at all."""
    delay = 0.2
    while True:
        problem = ""
        try:
            response = await http.request(method, path, **kwargs)
            if not retryable(response):
                return response
            problem = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as err:
            problem = f"{type(err).__name__}: {err}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"{method} {path} kept failing: {problem}")
        tally.api_retries += 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def start_trial(http: httpx.AsyncClient, run: Run, tally: Tally, deadline: float) -> None:
    response = await call_api(
        http, tally, deadline, "POST", "/v1/trials", json=signup_body(run.user, run.user_id)
    )
    if response.status_code not in (200, 201):
        raise RuntimeError(f"{run.user_id} did not start: HTTP {response.status_code}")
    run.signup_at = datetime.fromisoformat(response.json()["signup_at"])


async def play(
    http: httpx.AsyncClient, run: Run, seconds_per_day: float, tally: Tally, deadline: float
) -> None:
    """Sends the user's actions at their journey days, each with its own idempotency key."""
    assert run.signup_at is not None
    for index, (day, action, payload) in enumerate(sorted(run.user.script, key=lambda a: a[0])):
        due = run.signup_at.timestamp() + day * seconds_per_day
        await asyncio.sleep(max(0.0, due - time.time()))
        base = f"/v1/trials/{run.user_id}"
        if action == "event":
            body = {**payload, "idempotency_key": f"script-{index}"}
            response = await call_api(http, tally, deadline, "POST", f"{base}/events", json=body)
        elif action == "cancel":
            params = {"reason": payload.get("reason", "")}
            response = await call_api(http, tally, deadline, "DELETE", base, params=params)
        else:
            response = await call_api(
                http,
                tally,
                deadline,
                "POST",
                f"{base}/{action}",
                json=payload,
                headers={"Idempotency-Key": f"{run.user_id}-script-{index}"},
            )
        if response.status_code == 409 and "ended" in response.text:
            # Converted users may act after their journey finished: refused, as designed.
            run.refused_after_end += 1
            continue
        if response.status_code >= 400:
            run.errors.append(f"day {day:.2f} {action}: HTTP {response.status_code}")
            continue
        if action == "cancel":
            return  # A user who cancelled is gone.


# --- the chaos -------------------------------------------------------------------------------


@dataclass
class Plan:
    kill_at: list[float]
    uptime: list[float]
    pauses: list[float]
    server_after_kill: int | None
    server_delay: float


def make_plan(options: Options) -> Plan:
    rng = random.Random(options.seed)
    window = max(options.window, 1.5)
    kill_at = sorted(rng.uniform(1.0, window) for _ in range(options.kills))
    uptime = [rng.uniform(0.2, 1.5) for _ in range(options.kills)]
    pauses = [rng.uniform(options.min_pause, options.max_pause) for _ in range(options.kills)]
    server_after = None
    if options.restart_server:
        server_after = rng.randrange(options.kills) if options.kills else -1
    return Plan(kill_at, uptime, pauses, server_after, rng.uniform(0.5, 2.0))


async def chaos(cluster: Cluster, plan: Plan, options: Options, began: float) -> None:
    signum = signal.SIGKILL if options.server_signal == "kill" else signal.SIGTERM

    def stamp() -> str:
        return f"[{time.monotonic() - began:6.1f}s]"

    async def restart_server() -> None:
        async with cluster.lock:
            await cluster.restart_temporal(signum)
        say(
            f"{stamp()} dev server {options.server_signal}ed and started again on the same "
            f"port and database ({cluster.server_down_seconds:.1f}s)"
        )

    if plan.server_after_kill == -1:
        await asyncio.sleep(plan.server_delay + options.window / 2)
        await restart_server()
    for i, moment in enumerate(plan.kill_at):
        await asyncio.sleep(max(0.0, began + moment - time.monotonic()))
        async with cluster.lock:
            if cluster.worker_exited() is not None:
                await replace_exited_worker(cluster)
            worker = cluster.worker
            await asyncio.to_thread(cluster.kill_worker)
            down = time.monotonic()
            say(f"{stamp()} kill -9 worker {len(cluster.workers)} (pid {worker and worker.pid})")
            await asyncio.sleep(plan.pauses[i])
            await asyncio.to_thread(cluster.start_worker)
            cluster.worker_down_seconds.append(time.monotonic() - down)
        if plan.server_after_kill == i:
            await asyncio.sleep(plan.server_delay)
            await restart_server()
        # The next kill lands on a worker that has polled for a random moment at least.
        await asyncio.sleep(plan.uptime[i])


async def guard_worker(cluster: Cluster) -> None:
    """A worker that exits on its own (not killed here) is noted and replaced."""
    while True:
        await asyncio.sleep(0.5)
        async with cluster.lock:
            if cluster.worker_exited() is not None:
                await replace_exited_worker(cluster)


async def replace_exited_worker(cluster: Cluster) -> None:
    cluster.unexpected_exits.append(
        f"worker {len(cluster.workers)} exited with {cluster.worker_exited()} "
        f"(see {cluster.worker_log})"
    )
    await asyncio.to_thread(cluster.start_worker)


# --- waiting for the end ---------------------------------------------------------------------


def recorded_times(engine: Engine) -> dict[str, tuple[datetime, datetime | None]]:
    """Per trial, the signup time its workflow recorded (its journey clock's origin) and when
    it recorded its end."""
    with Session(engine) as session:
        rows = session.exec(select(Trial.user_id, Trial.signup_at, Trial.ended_at)).all()
    return {user_id: (signup, ended) for user_id, signup, ended in rows}


def ended_users(engine: Engine, user_ids: list[str]) -> set[str]:
    with Session(engine) as session:
        rows = session.exec(
            select(Trial.user_id).where(
                col(Trial.user_id).in_(user_ids), col(Trial.ended_at).is_not(None)
            )
        ).all()
    return set(rows)


async def watch(
    http: httpx.AsyncClient,
    runs: list[Run],
    engine: Engine,
    options: Options,
    tally: Tally,
    deadline: float,
) -> None:
    """Polls the API for each trial not over yet until its stage is terminal and its workflow
    recorded its end."""
    gate = asyncio.Semaphore(20)

    async def poll(run: Run) -> None:
        async with gate:
            try:
                # While no worker answers its query the API waits up to 10 s, then answers
                # the recorded status: a short timeout keeps the rounds short.
                response = await http.get(f"/v1/trials/{run.user_id}", timeout=3)
            except httpx.HTTPError:
                return
        if response.status_code == 200:
            run.status = TrialStatus.model_validate(response.json())
            run.stage = run.status.stage

    while True:
        waiting = [r for r in runs if not r.finished and r.signup_at is not None]
        await asyncio.gather(*(poll(r) for r in waiting if r.stage not in TERMINAL_STAGES))
        terminal = [r.user_id for r in waiting if r.stage in TERMINAL_STAGES]
        if terminal:
            ended = await asyncio.to_thread(ended_users, engine, terminal)
            for run in waiting:
                if run.user_id in ended:
                    run.finished = True
        if all(r.finished for r in runs):
            tally.finished = time.monotonic()
            return
        if time.monotonic() > deadline:
            left = [r.user_id for r in runs if not r.finished]
            raise TimeoutError(f"{len(left)} trials not over in time: {', '.join(left[:10])}")
        await asyncio.sleep(options.poll_seconds)


async def progress(runs: list[Run], cluster: Cluster, options: Options, tally: Tally) -> None:
    while True:
        await asyncio.sleep(options.progress_seconds)
        stages = Counter(r.stage or "no answer yet" for r in runs)
        done = sum(r.finished for r in runs)
        worker = "up" if cluster.worker_exited() is None else "down"
        say(
            f"[{time.monotonic() - tally.started:6.1f}s] over {done}/{len(runs)} | "
            + ", ".join(f"{s} {n}" for s, n in sorted(stages.items()))
            + f" | kills {cluster.kills}/{options.kills}, server restarts "
            f"{cluster.server_restarts}, worker {worker} | API retries {tally.api_retries}"
        )


# --- checks ----------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    figures: list[tuple[str, str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)
    """The numbers compared with a calm run: seconds, messages, max_stuck, median_stuck."""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def figure(self, name: str, value: object) -> None:
        self.figures.append((name, str(value)))

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def render(self) -> str:
        width = max(len(n) for n, _ in self.figures) if self.figures else 10
        lines = ["", "Figures", "-" * 7]
        lines += [f"  {name:<{width}}  {value}" for name, value in self.figures]
        cwidth = max((len(c.name) for c in self.checks), default=10)
        lines += ["", "Checks", "-" * 6]
        lines += [
            f"  {'PASS' if c.ok else 'FAIL'}  {c.name:<{cwidth}}  {c.detail}" for c in self.checks
        ]
        verdict = "every check passed" if self.ok else "SOME CHECKS FAILED"
        lines += ["", f"Result: {verdict}"]
        return "\n".join(lines)


def _sample(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def key_in_file(path: Path) -> str | None:
    """The idempotency key an outbox file carries (email header, or the `Key:` line)."""
    if path.suffix == ".eml":
        parsed = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        key = parsed["X-Trialpath-Key"]
        return str(key) if key is not None else None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("Key: "):
            return line.removeprefix("Key: ")
    return None


def complete(path: Path, row: Message) -> bool:
    """Whether the file holds the whole message (a crash mid-write would leave it short)."""
    raw = path.read_bytes()
    if path.suffix == ".eml":
        parsed = email.message_from_bytes(raw, policy=policy.default)
        boundary = parsed.get_boundary()
        return boundary is not None and raw.rstrip().endswith(f"--{boundary}--".encode())
    return raw.decode("utf-8", errors="replace").endswith(row.text + "\n")


def check_messages(report: Report, runs: list[Run], engine: Engine, outbox: Path) -> None:
    with Session(engine) as session:
        rows = list(session.exec(select(Message)).all())
        count, distinct = session.exec(
            select(func.count(col(Message.key)), func.count(func.distinct(col(Message.key))))
        ).one()
    statuses = Counter(r.status for r in rows)
    channels = Counter(r.channel for r in rows)
    report.values["messages"] = len(rows)
    report.figure("messages (rows)", f"{len(rows)}: " + _counts(channels))
    report.figure("message statuses", _counts(statuses))
    # A send cut by a kill is settled by the next attempt: from the provider's record when the
    # first attempt had delivered (row marked sent long after that attempt), or by a new
    # provider call when it had not (attempts > 1).
    reconciled = sum(
        r.status == "sent"
        and r.attempts == 1
        and r.sent_at is not None
        and r.attempted_at is not None
        and (r.sent_at - r.attempted_at).total_seconds() > 10
        for r in rows
    )
    report.figure(
        "sends cut by a kill, then settled",
        f"{reconciled} found delivered (not sent again), "
        f"{sum(r.attempts > 1 for r in rows)} handed over again",
    )

    unsettled = [f"{r.key} {r.status}" for r in rows if r.status not in ("sent", "skipped")]
    report.check(
        "0 lost sends: rows settled",
        not unsettled,
        f"{len(unsettled)} rows pending/sending/failed/unknown"
        + (f": {_sample(unsettled)}" if unsettled else ""),
    )

    by_user: dict[str, set[str]] = {}
    for row in rows:
        if row.status == "sent":
            by_user.setdefault(row.user_id, set()).add(row.key)
    mismatched = []
    listed_twice = []
    for run in runs:
        listed = [s.key for s in run.status.sent] if run.status else []
        if len(listed) != len(set(listed)):
            listed_twice.append(run.user_id)
        sent = by_user.get(run.user_id, set())
        if set(listed) != sent:
            only_db = sorted(sent - set(listed))
            only_wf = sorted(set(listed) - sent)
            mismatched.append(f"{run.user_id} (rows only: {only_db}, workflow only: {only_wf})")
    report.check(
        "0 lost sends: rows = workflow's sent",
        not mismatched and not listed_twice,
        f"{len(runs) - len(mismatched)}/{len(runs)} trials match"
        + (f"; {_sample(mismatched, 3)}" if mismatched else "")
        + (f"; listed twice: {_sample(listed_twice)}" if listed_twice else ""),
    )

    files = sorted(p for p in outbox.iterdir() if p.is_file()) if outbox.is_dir() else []
    per_key: Counter[str] = Counter()
    unreadable = []
    for path in files:
        key = key_in_file(path)
        if key is None or file_stem(key) != path.stem:
            unreadable.append(path.name)
        else:
            per_key[key] += 1
    rows_by_key = {r.key: r for r in rows}
    outbox_sent = {r.key for r in rows if r.provider == "outbox" and r.status == "sent"}
    twice = [k for k, n in per_key.items() if n > 1]
    missing = sorted(outbox_sent - set(per_key))
    orphans = sorted(set(per_key) - outbox_sent)
    rewritten = []
    short = []
    for path in files:
        owner = rows_by_key.get(key_in_file(path) or "")
        if owner is None or owner.sent_at is None:
            continue
        sent_at = owner.sent_at
        written = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
        if written > sent_at + timedelta(milliseconds=5):
            rewritten.append(f"{path.name} ({(written - sent_at).total_seconds():.3f}s late)")
        if not complete(path, owner):
            short.append(path.name)
    inbox = [r for r in rows if r.provider == "inbox"]
    report.figure("outbox files", f"{len(files)} for {len(outbox_sent)} outbox rows sent")
    report.figure("in-app inbox items", len(inbox))
    report.check(
        "0 duplicates: one row per key",
        count == distinct == len(rows),
        f"{count} rows, {distinct} distinct keys",
    )
    report.check(
        "0 duplicates: one file per outbox row",
        not twice and not missing and not orphans and not unreadable,
        f"{len(per_key)} keys in {len(files)} files; "
        f"{len(twice)} keys with several files, {len(missing)} sent rows without a file, "
        f"{len(orphans)} files without a sent row, {len(unreadable)} unreadable"
        + (f": {_sample(twice + missing + orphans + unreadable)}" if twice or missing else ""),
    )
    report.check(
        "0 duplicates: no file rewritten after sent",
        not rewritten,
        f"{len(rewritten)} files written after their row was marked sent"
        + (f": {_sample(rewritten)}" if rewritten else ""),
    )
    report.check(
        "outbox files complete",
        not short,
        f"{len(short)} files cut short" + (f": {_sample(short)}" if short else ""),
    )


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counter.items()))


def check_trials(report: Report, runs: list[Run]) -> None:
    wrong = [
        f"{r.user_id} expected {r.expected}, got {r.stage}" for r in runs if r.stage != r.expected
    ]
    expected = Counter(r.expected for r in runs)
    report.check(
        "every trial reached its expected stage",
        not wrong,
        f"{len(runs) - len(wrong)}/{len(runs)} ({_counts(expected)})"
        + (f"; {_sample(wrong)}" if wrong else ""),
    )
    errors = [f"{r.user_id}: {e}" for r in runs for e in r.errors]
    report.check(
        "every scripted action was accepted",
        not errors,
        f"{sum(len(r.user.script) for r in runs)} actions, "
        f"{sum(r.refused_after_end for r in runs)} refused after the journey ended (by design)"
        + (f"; errors: {_sample(errors)}" if errors else ""),
    )


def check_events(
    report: Report,
    runs: list[Run],
    engine: Engine,
    times: dict[str, tuple[datetime, datetime | None]],
) -> None:
    """Every event the API stored (answered 202) while its trial ran must be in the trial's
    final status. One stored after the workflow recorded its end is reported apart: the
    workflow no longer records anything then, and a signal to a completed workflow is given
    up (a race the product leaves open, see bench/README.md)."""
    with Session(engine) as session:
        stored = session.exec(
            select(TrialEvent.user_id, TrialEvent.name, TrialEvent.recorded_at)
        ).all()
        signals = list(session.exec(select(PendingSignal)).all())
    before: Counter[tuple[str, str]] = Counter()
    after: Counter[tuple[str, str]] = Counter()
    for user_id, name, recorded_at in stored:
        ended = times.get(user_id, (None, None))[1]
        after_end = ended is not None and recorded_at > ended
        (after if after_end else before)[(user_id, name)] += 1
    lost: list[str] = []
    unrecorded = 0
    for run in runs:
        seen = run.status.events_seen if run.status else {}
        names = {n for u, n in (*before, *after) if u == run.user_id}
        for name in names:
            applied = seen.get(name, 0)
            early, late = before[(run.user_id, name)], after[(run.user_id, name)]
            if not early <= applied <= early + late:
                lost.append(f"{run.user_id} {name}: stored {early}, applied {applied}")
            unrecorded += max(0, early + late - applied)
    report.check(
        "every accepted event reached its trial",
        not lost,
        f"{sum(before.values())} events stored by the API while their trial ran"
        + (f"; {_sample(lost)}" if lost else ""),
    )
    undelivered = [s for s in signals if s.delivered_at is None and not s.failed]
    gone = [s for s in signals if s.failed]
    given_up_early = [
        s
        for s in gone
        if "completed" not in (s.last_error or "")
        and "not found" not in (s.last_error or "").lower()
    ]
    report.check(
        "every queued event signal delivered",
        not undelivered and not given_up_early,
        f"{len(signals)} queued by the API, {len(undelivered)} undelivered, "
        f"{len(given_up_early)} given up while the trial ran",
    )
    report.figure(
        "events accepted (202) as the trial completed, never recorded",
        f"{sum(after.values())} stored after the trial's final record, {unrecorded} missing "
        f"from final statuses; {len(gone)} signals given up (workflow completed)",
    )


@dataclass
class Wait:
    seconds: float
    user_id: str
    what: str


@dataclass
class HistoryFacts:
    """What the workflow histories tell about the crashes."""

    waits: list[Wait] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    retried: Counter[str] = field(default_factory=Counter)
    """Activities per type that completed on a later attempt (an earlier one died with a
    worker, or timed out)."""
    task_timeouts: int = 0
    """Workflow tasks a worker took and never finished (killed meanwhile)."""

    def read(self, events: Sequence[HistoryEvent], user_id: str) -> None:
        """How long the trial waited for a worker: each workflow task from its first scheduling
        to its completion, each activity from scheduled to closed (retries included), each timer
        from its due time to firing."""
        task_since: datetime | None = None
        activities: dict[int, tuple[datetime, str]] = {}
        timers: dict[int, datetime] = {}
        for event in events:
            at = event.event_time.ToDatetime(tzinfo=UTC)
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                task_since = task_since or at
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and task_since is not None:
                self.waits.append(Wait((at - task_since).total_seconds(), user_id, "workflow task"))
                task_since = None
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                self.task_timeouts += 1
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                cause = event.workflow_task_failed_event_attributes.cause
                if cause not in BENIGN_TASK_FAILURES:
                    self.failures.append(f"{user_id}: {WorkflowTaskFailedCause.Name(cause)}")
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                activities[event.event_id] = (at, name)
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started = event.activity_task_started_event_attributes
                if started.attempt > 1 and started.scheduled_event_id in activities:
                    self.retried[activities[started.scheduled_event_id][1]] += 1
            elif kind in _ACTIVITY_CLOSED:
                scheduled_id = getattr(event, _ACTIVITY_CLOSED[kind]).scheduled_event_id
                if scheduled_id in activities:
                    since, name = activities.pop(scheduled_id)
                    self.waits.append(
                        Wait((at - since).total_seconds(), user_id, f"activity {name}")
                    )
            elif kind == EventType.EVENT_TYPE_TIMER_STARTED:
                timeout = event.timer_started_event_attributes.start_to_fire_timeout
                timers[event.event_id] = at + timeout.ToTimedelta()
            elif kind == EventType.EVENT_TYPE_TIMER_FIRED:
                due = timers.pop(event.timer_fired_event_attributes.started_event_id, None)
                if due is not None:
                    self.waits.append(Wait((at - due).total_seconds(), user_id, "timer late"))


_ACTIVITY_CLOSED = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "activity_task_canceled_event_attributes",
}


async def check_workflows(report: Report, runs: list[Run], settings: Settings) -> None:
    client = await connect(settings, patience=30)
    gate = asyncio.Semaphore(10)
    statuses: Counter[str] = Counter()
    facts = HistoryFacts()

    async def one(run: Run) -> None:
        async with gate:
            handle = client.get_workflow_handle(workflow_id_for(run.user_id))
            description = await handle.describe()
            statuses[description.status.name if description.status else "?"] += 1
            run_id: str | None = description.run_id
            while run_id:  # this run, then the ones it continued, if any
                history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
                facts.read(history.events, run.user_id)
                started = history.events[0].workflow_execution_started_event_attributes
                run_id = started.continued_execution_run_id or None

    await asyncio.gather(*(one(r) for r in runs))
    report.figure(
        "work lost with a killed worker, redone",
        f"{facts.task_timeouts} workflow tasks timed out; activities completed on a later "
        f"attempt: {_counts(facts.retried) or 'none'}",
    )
    if facts.waits:
        worst = max(facts.waits, key=lambda w: w.seconds)
        per_trial: dict[str, float] = {}
        for wait in facts.waits:
            per_trial[wait.user_id] = max(per_trial.get(wait.user_id, 0.0), wait.seconds)
        longest = sorted(per_trial.values())
        report.values["max_stuck"] = worst.seconds
        report.values["median_stuck"] = longest[len(longest) // 2]
        report.figure(
            "max time a trial was stuck",
            f"{worst.seconds:.1f}s ({worst.user_id}, {worst.what})",
        )
        report.figure(
            "trials stuck > 5s / > 30s",
            f"{sum(s > 5 for s in longest)} / {sum(s > 30 for s in longest)}; "
            f"median of each trial's longest wait {longest[len(longest) // 2]:.1f}s",
        )
    completed = statuses.get(WorkflowExecutionStatus.COMPLETED.name, 0)
    report.check(
        "every workflow completed",
        completed == len(runs),
        f"{completed}/{len(runs)} ({_counts(statuses)})",
    )
    report.check(
        "no workflow task failed (replays after kills)",
        not facts.failures,
        f"{len(facts.failures)} failed workflow tasks"
        + (f": {_sample(facts.failures)}" if facts.failures else ""),
    )


# --- the run ---------------------------------------------------------------------------------


async def run_chaos(options: Options) -> Report:
    """Runs the whole scenario in a fresh folder and returns the figures and checks."""
    root = options.root or Path(tempfile.mkdtemp(prefix="trialpath-chaos-"))
    cluster = Cluster(root, options)
    runs = make_runs(options)
    plan = make_plan(options)
    tally = Tally()
    report = Report()
    tasks: list[asyncio.Task[None]] = []
    say(
        f"data folder {cluster.data}; Temporal {cluster.settings.temporal_address}, "
        f"API http://{HOST}:{cluster.settings.api_port}, task queue {cluster.settings.task_queue}"
    )
    try:
        await asyncio.to_thread(cluster.start_temporal)
        await cluster.wait_for_temporal()
        await asyncio.to_thread(cluster.start_worker)
        await asyncio.to_thread(cluster.start_api)
        engine = make_engine(cluster.settings.effective_database_url, upgrade=False)
        say(
            f"{options.trials} trials at {options.seconds_per_day:g}s per journey day; "
            f"{options.kills} worker kills within {options.window:.0f}s"
            + (f", one {options.server_signal} of the dev server" if options.restart_server else "")
        )
        headers = {"Authorization": f"Bearer {cluster.api_key}"}
        limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
        async with httpx.AsyncClient(
            base_url=f"http://{HOST}:{cluster.settings.api_port}",
            headers=headers,
            timeout=30,
            limits=limits,
        ) as http:
            tally.started = time.monotonic()
            deadline = tally.started + options.timeout
            tasks.append(asyncio.create_task(chaos(cluster, plan, options, tally.started)))
            tasks.append(asyncio.create_task(guard_worker(cluster)))
            tasks.append(asyncio.create_task(progress(runs, cluster, options, tally)))
            gate = asyncio.Semaphore(20)

            async def begin(run: Run) -> None:
                async with gate:
                    await start_trial(http, run, tally, deadline)
                await play(http, run, options.seconds_per_day, tally, deadline)

            players = [asyncio.create_task(begin(r)) for r in runs]
            tasks.extend(players)
            await _race(watch(http, runs, engine, options, tally, deadline), tasks)
            await asyncio.gather(*players)
            chaos_task = tasks[0]
            if not chaos_task.done():
                say("every trial is over before the chaos plan ended: stopping it")
                chaos_task.cancel()
            elif (failure := chaos_task.exception()) is not None:
                raise failure
            for run in runs:  # the final status, as recorded at the end
                response = await call_api(http, tally, deadline, "GET", f"/v1/trials/{run.user_id}")
                run.status = TrialStatus.model_validate(response.json())
                run.stage = run.status.stage

        times = await asyncio.to_thread(recorded_times, engine)
        first = min(r.signup_at for r in runs if r.signup_at is not None)
        last = max((ended for _, ended in times.values() if ended is not None), default=first)
        report.values["seconds"] = (last - first).total_seconds()
        # The API answers the signup time it saw; the workflow dates the signup when a worker
        # first runs it (workflows/trial.py), so an outage or a backlog moves the trial.
        late = sorted(
            (times[r.user_id][0] - r.signup_at).total_seconds()
            for r in runs
            if r.signup_at is not None and r.user_id in times
        )
        report.figure("trials", options.trials)
        report.figure(
            "worker kills (SIGKILL)",
            f"{cluster.kills} of {options.kills} planned; worker down "
            + (
                f"{min(cluster.worker_down_seconds):.1f}-{max(cluster.worker_down_seconds):.1f}s"
                " each"
                if cluster.worker_down_seconds
                else "never"
            ),
        )
        report.figure(
            "dev server restarts",
            f"{cluster.server_restarts} ({options.server_signal}, "
            f"down {cluster.server_down_seconds:.1f}s)",
        )
        report.figure(
            "workers that exited on their own",
            f"{len(cluster.unexpected_exits)}"
            + (f": {'; '.join(cluster.unexpected_exits)}" if cluster.unexpected_exits else ""),
        )
        report.figure("API requests retried (5xx, no answer)", tally.api_retries)
        report.figure(
            "time taken (first signup to last trial end)",
            f"{(last - first).total_seconds():.1f}s "
            f"(all trials seen over {tally.finished - tally.started:.1f}s after the start)",
        )
        if late:
            report.figure(
                "signup the workflow recorded, after the API's",
                f"median {late[len(late) // 2]:.1f}s, max {late[-1]:.1f}s",
            )
        check_trials(report, runs)
        check_events(report, runs, engine, times)
        check_messages(report, runs, engine, cluster.settings.outbox_dir)
        await check_workflows(report, runs, cluster.settings)
        report.check(
            "chaos as planned",
            cluster.kills == options.kills
            and cluster.server_restarts == int(options.restart_server),
            f"{cluster.kills}/{options.kills} kills, "
            f"{cluster.server_restarts}/{int(options.restart_server)} server restarts",
        )
        return report
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(cluster.stop_all)
        if options.root is None and report.ok:
            shutil.rmtree(root, ignore_errors=True)
            say("stopped every process; removed the temporary folder")
        else:
            say(f"stopped every process; data folder kept at {cluster.data}")


async def _race(main: Awaitable[None], helpers: list[asyncio.Task[None]]) -> None:
    """Awaits `main`, failing at once if a helper (the chaos, the guard) fails first."""
    main_task = asyncio.ensure_future(main)
    watched = [main_task, *helpers[:2]]
    try:
        while not main_task.done():
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not main_task and (failure := task.exception()) is not None:
                    raise failure
            watched = [t for t in watched if not t.done() or t is main_task]
        main_task.result()
    finally:
        if not main_task.done():
            main_task.cancel()
            await asyncio.gather(main_task, return_exceptions=True)


def parse(argv: list[str] | None = None) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Options()
    parser.add_argument("--trials", type=int, default=defaults.trials)
    parser.add_argument("--kills", type=int, default=defaults.kills, help="worker SIGKILLs")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--seconds-per-day", type=float, default=defaults.seconds_per_day)
    parser.add_argument(
        "--chaos-seconds", type=float, default=None, help="kill window [default: 22 days]"
    )
    parser.add_argument("--min-pause", type=float, default=defaults.min_pause)
    parser.add_argument("--max-pause", type=float, default=defaults.max_pause)
    parser.add_argument(
        "--server-signal", choices=("kill", "term", "none"), default=defaults.server_signal
    )
    parser.add_argument("--timeout", type=float, default=defaults.timeout)
    parser.add_argument("--progress-seconds", type=float, default=defaults.progress_seconds)
    parser.add_argument(
        "--poll-seconds", type=float, default=defaults.poll_seconds, help="API polling period"
    )
    parser.add_argument("--data", type=Path, default=None, help="folder to run in [temporary]")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first run the same trials without chaos, and compare",
    )
    args = parser.parse_args(argv)
    if args.trials < 1 or args.kills < 0 or args.seconds_per_day <= 0:
        parser.error("--trials must be at least 1, --kills 0 or more, --seconds-per-day > 0")
    if not 0 <= args.min_pause <= args.max_pause:
        parser.error("--min-pause must be between 0 and --max-pause")
    options = Options(
        trials=args.trials,
        kills=args.kills,
        seed=args.seed,
        seconds_per_day=args.seconds_per_day,
        chaos_seconds=args.chaos_seconds,
        min_pause=args.min_pause,
        max_pause=args.max_pause,
        restart_server=args.server_signal != "none",
        server_signal=args.server_signal if args.server_signal != "none" else "kill",
        timeout=args.timeout,
        progress_seconds=args.progress_seconds,
        poll_seconds=args.poll_seconds,
        root=args.data,
    )
    return options, args.baseline


def compare(report: Report, calm: Report) -> None:
    """Puts the calm run's figures next to the chaos run's: the machine's own slowness shows in
    both, the chaos only in the second."""

    def pair(name: str, unit: str = "s") -> str:
        a, b = calm.values.get(name, float("nan")), report.values.get(name, float("nan"))
        return f"{a:.0f}{unit} calm, {b:.0f}{unit} chaos"

    report.figure(
        "compared with a calm run",
        f"time taken {pair('seconds')}; messages {pair('messages', '')}; "
        f"max stuck {pair('max_stuck')}; median longest wait {pair('median_stuck')}",
    )
    failed = [c.name for c in calm.checks if not c.ok]
    report.check(
        "the calm run passed too",
        calm.ok,
        f"{len(calm.checks) - len(failed)}/{len(calm.checks)} checks"
        + (f"; failed: {', '.join(failed)}" if failed else ""),
    )


async def _main(options: Options, baseline: bool) -> Report:
    main_task = asyncio.current_task()
    assert main_task is not None

    # SIGTERM ends the run like Ctrl-C: cancelled here, every process stopped in `finally`.
    def terminate() -> None:
        say("SIGTERM received: stopping")
        main_task.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminate)
    calm = None
    if baseline:
        say("calm run first: the same trials, no kill, no server restart")
        root = options.root / "calm" if options.root else None
        calm = await run_chaos(
            dataclasses.replace(options, kills=0, restart_server=False, root=root)
        )
        say(calm.render())
        say("\nchaos run")
    report = await run_chaos(options)
    if calm is not None:
        compare(report, calm)
    return report


def main(argv: list[str] | None = None) -> int:
    options, baseline = parse(argv)
    # Ctrl-C must interrupt even when a non-interactive shell started this in the background.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    began = time.monotonic()
    try:
        report = asyncio.run(_main(options, baseline))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted: every process was stopped")
        return 130
    except Exception as err:
        say(f"chaos run failed: {type(err).__name__}: {err}")
        return 2
    finally:
        _kill_leftovers()
    say(report.render())
    say(f"(whole run, setup and checks included: {time.monotonic() - began:.0f}s)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    exit_process(main())

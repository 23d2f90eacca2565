"""Events/s into running trials: through the HTTP API versus signalling Temporal directly.

    .venv/bin/python bench/api_events.py [--trials 20] [--events 2000] [--concurrency 20]

Everything runs on 127.0.0.1 and is torn down at the end, Ctrl-C included: a Temporal dev
server (the bundled `temporal` binary, its own process group, stopped by PID), a worker and
the API (uvicorn) in this process, a temporary data directory with SQLite. It starts
`--trials` trials, then, in the same run and against the same workflows, sends `--events`
events each way:

- API single: one `POST /v1/trials/{user_id}/events` per event;
- API batch:  the same route with lists of `--batch` events;
- direct:     `handle.signal("event", ...)` with the Temporal client, what the API does last.

Each phase keeps `--concurrency` requests in flight, round-robin over the trials, and counts
an event once the API answered 202 (stored and signalled) or Temporal accepted the signal;
the workflows apply them asynchronously. Finally every trial is cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from temporalio.client import Client

from trialpath.core.contract import SIGNAL_CANCEL, SIGNAL_EVENT, workflow_id_for
from trialpath.entry.api.app import create_app
from trialpath.operations.config import Settings
from trialpath.operations.ports import free_port
from trialpath.operations.services import Services
from trialpath.operations.temporal import (
    DATA_CONVERTER,
    exit_process,
    register_search_attributes,
    wait_for_pollers,
)
from worker import build_worker

HOST = "127.0.0.1"
API_KEY = f"bench-{uuid.uuid4().hex}"
EVENT_NAME = "api_call"


@dataclass
class Phase:
    name: str
    events: int = 0
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


class Problems(logging.Handler):
    """Counts the warnings and errors logged (by the worker, the API...) during the run."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


PROBLEMS = Problems()


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Ctrl-C belongs to the benchmark: it cancels the run, whose cleanup stops this server.
        yield


@contextlib.asynccontextmanager
async def serve_api(settings: Settings, client: Client) -> AsyncIterator[str]:
    """Serves the API in this process on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    app = create_app(settings, client=client)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = _Uvicorn(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.05)
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, timeout=15)
        sock.close()


async def drive(
    phase: Phase, jobs: int, concurrency: int, job: Callable[[int], Awaitable[int]]
) -> Phase:
    """Runs `job(0..jobs-1)` with at most `concurrency` in flight; a job returns its events."""
    counter = iter(range(jobs))

    async def lane() -> None:
        for i in counter:
            began = time.perf_counter()
            try:
                events = await job(i)  # awaited first: `x += await ...` loses updates
                phase.events += events
            except Exception as err:
                phase.errors += 1
                phase.first_error = phase.first_error or f"{type(err).__name__}: {err}"[:300]
            phase.requests += 1
            phase.latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(max(1, min(concurrency, jobs)))))
    phase.seconds = time.perf_counter() - began
    return phase


def event(run: str, i: int) -> dict[str, Any]:
    return {"name": EVENT_NAME, "properties": {"i": i}, "idempotency_key": f"{run}-{i}"}


async def api_phase(
    name: str, http: httpx.AsyncClient, users: list[str], events: int, batch: int, conc: int
) -> Phase:
    run = uuid.uuid4().hex[:8]
    requests = -(-events // batch)

    async def job(i: int) -> int:
        first = i * batch
        size = min(batch, events - first)
        body: Any = (
            event(run, first) if batch == 1 else [event(run, first + k) for k in range(size)]
        )
        response = await http.post(f"/v1/trials/{users[i % len(users)]}/events", json=body)
        if response.status_code != 202:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        accepted: int = response.json()["accepted"]
        return accepted

    return await drive(Phase(name), requests, conc, job)


async def direct_phase(client: Client, users: list[str], events: int, conc: int) -> Phase:
    run = uuid.uuid4().hex[:8]
    handles = [client.get_workflow_handle(workflow_id_for(u)) for u in users]

    async def job(i: int) -> int:
        payload = {
            "name": EVENT_NAME,
            "occurred_at": datetime.now(UTC).isoformat(),
            "properties": {"i": i},
            "id": f"{run}-{i}",
        }
        await handles[i % len(handles)].signal(SIGNAL_EVENT, payload)
        return 1

    return await drive(Phase("direct signal"), events, conc, job)


async def start_trials(
    http: httpx.AsyncClient, count: int, concurrency: int, users: list[str]
) -> None:
    """Starts `count` trials through the API, appending each started user id to `users`."""

    async def job(i: int) -> int:
        user_id = f"bench-{uuid.uuid4().hex[:10]}"
        body = {
            "user_id": user_id,
            "email": f"{user_id}@example.com",
            "name": "Bench User",
            "qualification": {
                "role": "technical",
                "challenge": "integrations",
                "urgency": "this_week",
            },
        }
        response = await http.post("/v1/trials", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        users.append(user_id)
        return 1

    phase = await drive(Phase("start"), count, concurrency, job)
    if phase.errors:
        raise RuntimeError(f"{phase.errors} trials did not start: {phase.first_error}")


async def cancel_trials(client: Client, users: list[str], within: float = 60.0) -> int:
    """Ends every trial through its journey; returns how many did not finish in time."""

    async def cancel(user_id: str) -> bool:
        handle = client.get_workflow_handle(workflow_id_for(user_id))
        try:
            await handle.signal(SIGNAL_CANCEL, {})
            await handle.result()
        except Exception:
            return False
        return True

    try:
        async with asyncio.timeout(within):
            done = await asyncio.gather(*(cancel(u) for u in users))
    except TimeoutError:
        return len(users)
    return sum(not ok for ok in done)


async def bench(args: argparse.Namespace, settings: Settings) -> list[Phase]:
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM ends the run like Ctrl-C: cancelled here, cleaned up by the `finally`s below.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    client = await Client.connect(settings.temporal_address, data_converter=DATA_CONVERTER)
    await register_search_attributes(client)
    users: list[str] = []
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with build_worker(client, settings, executor):
            await wait_for_pollers(client, settings.task_queue)
            async with serve_api(settings, client) as base_url:
                limits = httpx.Limits(
                    max_connections=args.concurrency, max_keepalive_connections=args.concurrency
                )
                async with httpx.AsyncClient(
                    base_url=base_url,
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    limits=limits,
                    timeout=30,
                ) as http:
                    try:
                        await start_trials(http, args.trials, args.concurrency, users)
                        print(f"started {len(users)} trials", file=sys.stderr)
                        async with asyncio.timeout(args.timeout):
                            # Warm-up: connections, the app's first requests, workflow caches.
                            warm = min(100, args.events)
                            await api_phase("warm-up", http, users, warm, 1, args.concurrency)
                            await direct_phase(client, users, warm, args.concurrency)
                            phases = [
                                await api_phase(
                                    "API single", http, users, args.events, 1, args.concurrency
                                ),
                                await api_phase(
                                    f"API batch of {args.batch}",
                                    http,
                                    users,
                                    args.events,
                                    args.batch,
                                    args.concurrency,
                                ),
                                await direct_phase(client, users, args.events, args.concurrency),
                            ]
                        listed = await http.get("/v1/trials", params={"page_size": 1})
                        print(f"GET /v1/trials answered {listed.status_code}", file=sys.stderr)
                    finally:
                        if users:
                            left = await cancel_trials(client, users)
                            print(
                                f"cancelled {len(users) - left} of {len(users)} trials",
                                file=sys.stderr,
                            )
    return phases


def report(phases: list[Phase], args: argparse.Namespace) -> None:
    print(
        f"\n{args.trials} trials, {args.events} events per phase, concurrency {args.concurrency}\n"
    )
    header = (
        f"{'phase':<18}{'events':>8}{'requests':>10}{'errors':>8}{'seconds':>9}"
        f"{'events/s':>10}{'p50 ms':>9}{'p95 ms':>9}"
    )
    print(header)
    print("-" * len(header))
    for p in phases:
        print(
            f"{p.name:<18}{p.events:>8}{p.requests:>10}{p.errors:>8}{p.seconds:>9.2f}"
            f"{p.rate:>10.0f}{p.percentile(0.5):>9.1f}{p.percentile(0.95):>9.1f}"
        )
    single, batch, direct = phases
    if direct.rate:
        print(f"\nAPI single / direct: {single.rate / direct.rate:.2f}")
        print(f"API batch  / direct: {batch.rate / direct.rate:.2f}")
    for p in phases:
        if p.first_error:
            print(f"{p.name}: first error: {p.first_error}")
    if PROBLEMS.count:
        print(f"\n{PROBLEMS.count} warnings or errors were logged during the run (see above)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--events", type=int, default=2000, help="events per phase")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100, help="events per batch (max 100)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for all phases")
    args = parser.parse_args()
    if not (args.trials >= 1 and args.events >= 1 and args.concurrency >= 1):
        parser.error("--trials, --events and --concurrency must be at least 1")
    if not 1 <= args.batch <= 100:
        parser.error("--batch must be 1 to 100")

    # Ctrl-C must interrupt even when a non-interactive shell started this in the background
    # (which makes it ignore SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().addHandler(PROBLEMS)
    code = 0
    with tempfile.TemporaryDirectory(prefix="trialpath-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            database_url="",
            temporal_address=f"{HOST}:{free_port()}",
            temporal_namespace="default",
            temporal_ui_port=free_port(),
            task_queue=f"bench-{uuid.uuid4()}",
            api_keys=[f"bench:admin:{API_KEY}"],
        )
        services = Services(settings)
        try:
            print(f"starting Temporal on {settings.temporal_address}", file=sys.stderr)
            services.start_temporal()
            phases = asyncio.run(bench(args, settings))
            report(phases, args)
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("interrupted: stopping everything", file=sys.stderr)
            code = 130
        except Exception as err:
            print(f"benchmark failed: {type(err).__name__}: {err}", file=sys.stderr)
            code = 1
        finally:
            services.stop_all()  # the dev server, by PID (its process group)
    return code


if __name__ == "__main__":
    exit_process(main())

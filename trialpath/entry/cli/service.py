"""`trialpath up`, `demo`, `worker` and `codec-server`: the embedded service, the demo that
shows it working, the worker alone, the codec server."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

import httpx
import typer
from rich.progress import BarColumn, Progress, TextColumn
from temporalio.service import RPCError

from trialpath.core.journey import ATTENTION
from trialpath.entry.cli.common import _client, _run, console, fail
from trialpath.operations.config import Settings, get_settings
from trialpath.operations.db import engine_for
from trialpath.operations.services import ServiceError, Services, running
from trialpath.operations.temporal import (
    backlog,
    register_search_attributes,
    wait_for_no_backlog,
    wait_for_pollers,
)

# --- up / demo / worker ----------------------------------------------------------------------


def up(
    demo: Annotated[bool, typer.Option(help="Run the demo once the services are up.")] = True,
    seconds_per_day: Annotated[
        float | None,
        typer.Option(
            min=0.5,
            help="Demo clock: real seconds per journey day "
            "[default: TRIALPATH_SECONDS_PER_DAY if set, else 4].",
        ),
    ] = None,
    prefix: Annotated[str, typer.Option(help="User id prefix of the demo trials.")] = "demo",
    population_size: Annotated[
        int,
        typer.Option(
            "--population",
            min=0,
            help="Synthetic trials for the dashboard, played once the demo is over.",
        ),
    ] = 300,
    exit_after_demo: Annotated[
        bool,
        typer.Option(
            help="Stop the services once the demo and the synthetic population have played; "
            "exit code 1 if a scripted user did not end as its script says."
        ),
    ] = False,
) -> None:
    """Start the Temporal dev server (UI included), the worker and the HTTP API, run the demo,
    keep running until Ctrl-C, then stop every process started here."""
    settings = get_settings()
    ui = f"http://127.0.0.1:{settings.temporal_ui_port}"
    api_url = f"http://{settings.api_host}:{settings.api_port}"
    clock = demo_clock(settings, seconds_per_day) if demo else settings.seconds_per_day
    key = api_key(settings)
    signal.signal(signal.SIGTERM, _interrupt)
    differing = 0
    try:
        with running(settings) as services:
            if services.start_temporal():
                console.print(
                    f"Temporal dev server started: gRPC {settings.temporal_address}, UI {ui}"
                )
            else:
                console.print(
                    f"Using the Temporal server already listening on {settings.temporal_address}"
                )
            _run(_register(settings))
            services.start_worker()
            _run(_wait_for_worker(settings, services))
            console.print(f"Worker started (log: {settings.data_dir / 'worker.log'})")
            services.start_api(
                {
                    "TRIALPATH_API_KEYS": json.dumps([f"{LOCAL_KEY_NAME}:admin:{key}"]),
                    "TRIALPATH_SECONDS_PER_DAY": str(clock),
                }
                if not settings.api_keys
                else {"TRIALPATH_SECONDS_PER_DAY": str(clock)}
            )
            console.print(
                f"HTTP API: {api_url}/v1 (docs {api_url}/docs), API key: [bold]{key}[/]"
                + (f"; trials started here run at {clock:g} s per journey day" if demo else "")
            )
            demo_run = DemoRun(settings, api_url, key, ui, services)
            differing = _run(
                demo_run.run(
                    demo=DemoPlan(clock, prefix, population_size) if demo else None,
                    keep_running=not exit_after_demo,
                )
            )
    except KeyboardInterrupt:
        console.print("\nStopping services...")
    except ServiceError as err:
        raise fail(str(err)) from err
    except RPCError as err:
        log = settings.data_dir / "temporal.log"
        raise fail(f"Temporal at {settings.temporal_address} failed: {err} (see {log})") from err
    else:
        if differing:
            raise fail(f"{differing} scripted demo users did not end as their script says")
        if exit_after_demo:
            return
    console.print("Stopped.")
    if exit_after_demo:
        # Interrupted before the end: whatever was checked, the run is not a pass.
        raise typer.Exit(130)


LOCAL_KEY_NAME = "local"
"""The name of the admin key `up` makes when TRIALPATH_API_KEYS is empty."""


def api_key(settings: Settings) -> str:
    """The secret of the first configured admin (else backend) key, for the demo; with none
    configured, the local admin key (made once, kept in the data folder so scripts and the
    README's curl examples keep working across runs)."""
    if settings.api_keys:
        for role in ("admin", "backend"):
            for key in settings.api_keys:
                if key.role == role:
                    return key.secret.get_secret_value()
        raise fail(
            "the demo needs an admin or backend key in TRIALPATH_API_KEYS "
            "(`trialpath keys new NAME admin` makes one)",
            2,
        )
    path = settings.data_dir / "api-key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


DEMO_SECONDS_PER_DAY = 4.0


def demo_clock(settings: Settings, option: float | None) -> float:
    """The demo's clock: the option, else TRIALPATH_SECONDS_PER_DAY when set, else 4 s a day."""
    if option is not None:
        return option
    if "seconds_per_day" in settings.model_fields_set:
        return settings.seconds_per_day
    return DEMO_SECONDS_PER_DAY


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM behaves like Ctrl-C, so the services are stopped either way."""
    raise KeyboardInterrupt


async def _wait_for_worker(settings: Settings, services: Services) -> None:
    client = await _client(settings)
    try:
        await wait_for_pollers(client, settings.task_queue)
    except TimeoutError as err:
        services.check_alive()
        raise ServiceError(f"{err}; see {settings.data_dir / 'worker.log'}") from err


async def _register(settings: Settings) -> None:
    # The dev server answers on its port a moment before its frontend is ready.
    client = await _client(settings, patience=30)
    await register_search_attributes(client)


CATCH_UP_SECONDS = 120.0
"""How long the demo waits for the worker to clear a backlog before it starts, or checks."""


@dataclass(frozen=True)
class DemoPlan:
    seconds_per_day: float
    prefix: str = "demo"
    population: int = 0


@dataclass
class DemoRun:
    """What `up` and `demo` do once the services answer: the scripted demo first, on a worker
    with nothing else to do, then the synthetic population for the dashboard."""

    settings: Settings
    api_url: str
    key: str
    ui: str | None = None
    services: Services | None = None

    async def run(self, demo: DemoPlan | None, keep_running: bool) -> int:
        """Plays the demo (if any), then, while the population plays, keeps the services
        running until Ctrl-C, or waits for it; returns how many scripted users differ."""
        differing, crowd = 0, None
        if demo is not None:
            differing = await self.demo(demo)
            if demo.population:
                crowd = asyncio.create_task(self.population(demo, not keep_running))
        self.hints()
        if not keep_running:
            if crowd is not None:
                await crowd
            return differing
        console.print("[bold]Services running. Press Ctrl-C to stop them.[/]")
        while True:
            if self.services is not None:
                self.services.check_alive()
            if crowd is not None and crowd.done():
                crowd.result()  # its failure, if any, stops `up` with it
                crowd = None
            await asyncio.sleep(1)

    def _api(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=30)

    async def demo(self, plan: DemoPlan) -> int:
        """The 12 scripted users, played and checked; returns how many differ."""
        from trialpath.client import TrialpathError
        from trialpath.core.definition import load_definition
        from trialpath.entry.demo import (
            calls_table,
            delays,
            results_table,
            run_demo,
            support_queue,
        )
        from trialpath.support.agents import booked_slots

        settings = self.settings
        client = await _client(settings)
        try:
            await wait_for_pollers(client, settings.task_queue, within=30)
        except TimeoutError as err:
            raise fail(f"{err}; start one with `trialpath worker`") from err

        async def caught_up() -> None:
            if await backlog(client, settings.task_queue):
                console.print("Waiting for the worker to catch up with earlier trials...")
                left = await wait_for_no_backlog(client, settings.task_queue, CATCH_UP_SECONDS)
                if left:
                    console.print(f"[yellow]The worker is still {left} tasks behind.[/]")

        spd = plan.seconds_per_day
        console.print(
            f"Demo: 12 sample trials driven through the API, one journey day = {spd:g} s "
            f"(a 14-day trial plays in about {14 * spd:.0f} s)"
        )
        definition = load_definition(settings.journey_file)
        async with self._api() as api:
            try:
                items = await run_demo(
                    api,
                    spd,
                    console,
                    definition,
                    prefix=plan.prefix,
                    check_alive=self.services.check_alive if self.services else None,
                    caught_up=caught_up,
                )
            except (TrialpathError, httpx.HTTPError) as err:
                raise fail(f"the demo could not use the API at {self.api_url}: {err}") from err
            queue = await support_queue(api, plan.prefix)
        console.print(results_table(items, spd, "Demo results", definition))
        demo_calls = [
            slot
            for slot in booked_slots(engine_for(settings))
            if slot.workflow_id.startswith(f"trial-{plan.prefix}-")
        ]
        if demo_calls:
            console.print(calls_table(demo_calls))
        differing = sum(bool(i.verdict) for i in items)
        sent, answered = delays(items)
        if answered:
            console.print(
                f"{len(answered)} scripted requests: sent at worst {max(sent):.2f} s and "
                f"answered at worst {max(answered):.2f} s ({max(answered) / spd:.2f} journey "
                "days) after their scripted moment."
            )
        if differing:
            console.print(
                f"[bold red]✗ {differing} of {len(items)} scripted users did not end as "
                "their script says (what differed is in the last column).[/]"
            )
        else:
            console.print(
                f"[bold green]✓ {len(items)} of {len(items)} scripted users ended as their "
                "script says.[/]"
            )
        if queue is not None:
            console.print(queue)
            console.print(
                f"Work the queue at {self.api_url}/dashboard/tasks or with `trialpath tasks list`."
            )
        return differing

    async def population(self, plan: DemoPlan, show_progress: bool) -> None:
        """The synthetic trials for the dashboard, once the demo is over."""
        from trialpath.core.definition import load_definition
        from trialpath.growth.population import PopulationReport, play_population, population

        users = population(
            load_definition(self.settings.journey_file),
            plan.population,
            prefix=f"{plan.prefix}-pop",
        )
        client = await _client(self.settings)

        async def worker_backlog() -> int:
            return await backlog(client, self.settings.task_queue)

        console.print(
            f"Now {plan.population} synthetic trials play for the growth dashboard, signed up "
            f"as fast as the service keeps up with them: {self.api_url}/dashboard (sign in "
            "with the API key above)"
        )
        report = PopulationReport()
        async with self._api() as api:
            playing = asyncio.create_task(
                play_population(api, users, plan.seconds_per_day, report, worker_backlog)
            )
            if show_progress:
                progress = Progress(
                    TextColumn("[bold]synthetic trials"),
                    BarColumn(),
                    TextColumn(
                        "{task.fields[trials]} of {task.total:.0f} signed up, "
                        "{task.completed:.0f} played out"
                    ),
                    transient=True,
                    console=console,
                )
                with progress:
                    task = progress.add_task("population", total=plan.population, trials=0)
                    while not playing.done():
                        progress.update(task, completed=report.over, trials=report.trials)
                        await asyncio.wait({playing}, timeout=0.5)
            await playing
        console.print(f"Synthetic population played: {report.summary(plan.seconds_per_day)}.")

    def hints(self) -> None:
        settings, ui = self.settings, self.ui
        if ui is not None:
            namespace = settings.temporal_namespace
            console.print(
                f"\nBrowse the workflows: {ui}/namespaces/{namespace}/workflows"
                f'\nSearch by persona, e.g. Persona="technical": '
                f"{ui}/namespaces/{namespace}/workflows?query=Persona%3D%22technical%22"
                "\nTrials that need a human now: "
                f"{ui}/namespaces/{namespace}/workflows?query="
                + quote(f"NeedsAttention IN ({', '.join(repr(r) for r in ATTENTION)})")
            )
        console.print(
            f"Outbox: `trialpath outbox list` or the files in {settings.outbox_dir}"
            f"\nTry the API: curl -H 'Authorization: Bearer {self.key}' {self.api_url}/v1/trials"
        )


def demo(
    seconds_per_day: Annotated[
        float | None,
        typer.Option(min=0.5, help="[default: TRIALPATH_SECONDS_PER_DAY if set, else 4]"),
    ] = None,
    prefix: Annotated[str, typer.Option(help="User id prefix of the demo trials.")] = "demo",
    population_size: Annotated[
        int,
        typer.Option(
            "--population",
            min=0,
            help="Synthetic trials for the dashboard, played once the demo is over.",
        ),
    ] = 300,
) -> None:
    """Run the demo against services that are already running (see `up`); the API must run
    with the same clock (TRIALPATH_SECONDS_PER_DAY). Exit code 1 if a scripted user did not
    end as its script says."""
    settings = get_settings()
    api_url = f"http://{settings.api_host}:{settings.api_port}"
    demo_run = DemoRun(settings, api_url, api_key(settings))
    plan = DemoPlan(demo_clock(settings, seconds_per_day), prefix, population_size)
    try:
        differing = _run(demo_run.run(plan, keep_running=False))
    except KeyboardInterrupt:
        raise fail("demo interrupted", 130) from None
    if differing:
        raise fail(f"{differing} scripted demo users did not end as their script says")


def worker() -> None:
    """Run a worker for the trial workflows (what `python worker.py` does)."""
    import worker as worker_module

    try:
        _run(worker_module.main())
    except KeyboardInterrupt:
        pass
    except (RuntimeError, ValueError) as err:
        raise fail(str(err)) from err


def codec_server(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8081,
    host: Annotated[
        str, typer.Option(help="Address to listen on; other than 127.0.0.1 needs auth keys.")
    ] = "127.0.0.1",
    new_key: Annotated[
        bool, typer.Option("--new-key", help="Print a new random encryption key and exit.")
    ] = False,
) -> None:
    """Decrypt payloads for the Temporal UI (remote codec endpoint), for holders of a key
    from TRIALPATH_CODEC_AUTH_KEYS. See docs/operations.md."""
    from trialpath.operations.codec import new_key as make_key
    from trialpath.operations.codec_server import CodecServerError, serve_codec

    if new_key:
        sys.stdout.write(make_key() + "\n")
        return
    try:
        serve_codec(get_settings(), host, port)
    except (CodecServerError, ValueError) as err:
        raise fail(str(err), 2) from err

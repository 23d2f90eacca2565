"""The `trialpath` command line: run the embedded service, the demo, the worker; read trials.

Errors are printed as one plain sentence and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError

from trialpath.core.contract import Stage, TrialStatus, check_user_id
from trialpath.core.definition import Persona
from trialpath.core.journey import ATTENTION, JourneyClock
from trialpath.delivery.preferences import signing_secret
from trialpath.entry.cli.agents import agents_app
from trialpath.entry.cli.db import db_app
from trialpath.entry.cli.journey import journey_app
from trialpath.entry.cli.simulate import simulate_command
from trialpath.entry.cli.tasks import tasks_app
from trialpath.entry.trials import (
    Accepted,
    CallCommand,
    ConversionCommand,
    ExtensionCommand,
    NewEvent,
    QualifyCommand,
    TrialProblem,
    Trials,
    UnsubscribeCommand,
    recorded_status,
)
from trialpath.operations import audit as audit_log
from trialpath.operations.access import PERMISSIONS, Role, parse_api_keys
from trialpath.operations.config import Settings, SettingsError, get_settings
from trialpath.operations.db import engine_for
from trialpath.operations.history import history_app
from trialpath.operations.models import Message, Trial
from trialpath.operations.services import ServiceError, Services, port_open, running
from trialpath.operations.temporal import (
    backlog,
    connect,
    exit_process,
    register_search_attributes,
    wait_for_no_backlog,
    wait_for_pollers,
)

app = typer.Typer(
    help="Trialpath: durable onboarding journeys for SaaS trial users.", no_args_is_help=True
)
outbox_app = typer.Typer(help="Messages the journey has sent (the outbox).", no_args_is_help=True)
trial_app = typer.Typer(help="Look at one trial.", no_args_is_help=True)
templates_app = typer.Typer(help="The message templates (templates/).", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
app.add_typer(trial_app, name="trial")
app.add_typer(templates_app, name="templates")
app.add_typer(db_app, name="db")
app.add_typer(history_app, name="history")
keys_app = typer.Typer(help="API keys (TRIALPATH_API_KEYS).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(tasks_app, name="tasks")
app.add_typer(journey_app, name="journey")
app.add_typer(agents_app, name="agents")
app.command("simulate")(simulate_command)

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def fail(message: str, code: int = 1) -> typer.Exit:
    # One line, however narrow the terminal: easy to read in logs and to grep.
    err_console.print(f"[red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


async def _client(settings: Settings, patience: float = 0.0) -> Client:
    try:
        return await connect(settings, patience)
    except RuntimeError as err:
        raise fail(
            f"cannot reach Temporal at {settings.temporal_address} ({err}); "
            "start everything with `trialpath up` or `make run`"
        ) from err


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --- up / demo / worker ----------------------------------------------------------------------


@app.command()
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


@app.command()
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


@app.command()
def worker() -> None:
    """Run a worker for the trial workflows (what `python worker.py` does)."""
    import worker as worker_module

    try:
        _run(worker_module.main())
    except KeyboardInterrupt:
        pass
    except (RuntimeError, ValueError) as err:
        raise fail(str(err)) from err


@app.command("codec-server")
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


# --- outbox ----------------------------------------------------------------------------------


@outbox_app.command("list")
def outbox_list(
    user: Annotated[str | None, typer.Option("--user", help="Only this user id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 200,
) -> None:
    """List messages in the outbox."""
    settings = get_settings()
    engine = engine_for(settings)
    with Session(engine) as session:
        query = select(Message).order_by(col(Message.created_at).desc()).limit(limit)
        if user:
            query = query.where(Message.user_id == user)
        messages = list(reversed(session.exec(query).all()))
    if as_json:
        for m in messages:
            sys.stdout.write(
                json.dumps(m.model_dump(mode="json", exclude={"html"}), ensure_ascii=False) + "\n"
            )
        return
    if not messages:
        console.print("The outbox is empty" + (f" for user {user}." if user else "."))
        return
    table = Table(title=f"Outbox ({len(messages)} messages)", title_justify="left")
    for column in ("sent at", "user", "step", "channel", "to", "subject", "status", "via"):
        table.add_column(column)
    for m in messages:
        when = m.sent_at or m.created_at
        table.add_row(
            f"{when:%Y-%m-%d %H:%M:%S}",
            m.user_id,
            m.step,
            m.channel,
            m.recipient,
            (m.subject[:60] + "…") if len(m.subject) > 60 else m.subject,
            m.status + (f" ({m.delivery_status})" if m.delivery_status else ""),
            m.provider,
        )
    console.print(table)


# --- trial -----------------------------------------------------------------------------------


@trial_app.command("show")
def trial_show(
    user_id: Annotated[str, typer.Argument(help="The product's user id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The raw status as JSON.")] = False,
) -> None:
    """Show where a trial stands (the workflow's `status` query, or the last record of it)."""
    try:
        check_user_id(user_id)
    except ValueError as err:
        raise fail(str(err), 2) from err
    settings = get_settings()
    status = _run(_status(settings, user_id))
    if as_json:
        sys.stdout.write(status.model_dump_json(indent=2) + "\n")
        return
    clock, timezone = _trial_clock(settings, user_id)
    console.print(render_status(status, clock, timezone))


def _trial_clock(settings: Settings, user_id: str) -> tuple[JourneyClock | None, str]:
    """The trial's journey clock and time zone, as recorded with it (None: not recorded yet)."""
    engine = engine_for(settings)
    with Session(engine) as session:
        row = session.get(Trial, user_id)
    if row is None:
        return None, "UTC"
    return JourneyClock(origin=row.signup_at, seconds_per_day=row.seconds_per_day), row.timezone


async def _status(settings: Settings, user_id: str) -> TrialStatus:
    """What the API answers (live status, or the recorded one once ended); without Temporal,
    the last status recorded in the database."""
    engine = engine_for(settings)
    try:
        client = await connect(settings)
    except RuntimeError as err:
        recorded = recorded_status(engine, user_id)
        if recorded is None:
            raise fail(f"cannot reach Temporal at {settings.temporal_address} ({err})") from err
        err_console.print(
            f"[yellow]Temporal at {settings.temporal_address} is unreachable; "
            "showing the last recorded status.[/]"
        )
        return recorded
    try:
        return await Trials(client, engine, settings).status(user_id)
    except TrialProblem as err:
        raise fail(err.detail) from err


R = TypeVar("R")


def _act(
    operation: Callable[[Trials], Awaitable[R]],
    audit: tuple[str, str] | None = None,
) -> R:
    """Runs one operation of the trials service (the same code the HTTP API runs) and turns
    its problems into one-line messages: exit code 2 for bad input, 1 otherwise. A write
    (`audit`: its action and user id) is recorded in the audit log as `cli:<login>`."""
    settings = get_settings()
    engine = engine_for(settings)
    status = 500

    async def go() -> R:
        client = await _client(settings)
        return await operation(Trials(client, engine, settings))

    try:
        result = _run(go())
        status = 200
        return result
    except TrialProblem as err:
        status = err.status
        raise fail(err.detail, 2 if err.status in (400, 422) else 1) from err
    finally:
        if audit is not None:
            action, user_id = audit
            if action == audit_log.ERASE_ACTION:
                user_id = audit_log.pseudonym(signing_secret(settings), user_id)
            audit_log.record(engine, audit_log.cli_actor(), "cli", action, user_id, status)


def _command(model: type[M], **fields: Any) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()
        )
        raise fail(problems, 2) from err


def _accepted(result: Accepted) -> None:
    console.print(f"{result.signal} sent to the trial of {result.user_id}.")


UserIdArg = Annotated[str, typer.Argument(help="The product's user id.")]


@trial_app.command("list")
def trial_list(
    stage: Annotated[Stage | None, typer.Option(help="Only trials at this stage.")] = None,
    persona: Annotated[Persona | None, typer.Option(help="Only this persona.")] = None,
    activated: Annotated[
        bool | None, typer.Option("--activated/--not-activated", help="Only (not) activated.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Page size.")] = 50,
    page_token: Annotated[str | None, typer.Option(help="Token printed by the last page.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """List trials from Temporal visibility, newest first."""
    page = _act(lambda t: t.list(stage, persona, activated, limit, page_token))
    if as_json:
        sys.stdout.write(page.model_dump_json(indent=2) + "\n")
        return
    table = Table(title=f"Trials ({len(page.items)})", title_justify="left")
    for column in ("user", "stage", "persona", "activated", "trial ends", "CS owner", "running"):
        table.add_column(column)
    for item in page.items:
        ends = f"{item.trial_ends_at:%Y-%m-%d %H:%M}" if item.trial_ends_at else "-"
        table.add_row(
            item.user_id,
            item.stage or "-",
            item.persona or "-",
            {True: "yes", False: "no", None: "-"}[item.activated],
            ends,
            item.cs_owner or "-",
            "yes" if item.running else "no",
        )
    console.print(table)
    if page.next_page_token:
        console.print(f"More: --page-token {page.next_page_token}")


@trial_app.command("qualify")
def trial_qualify(
    user_id: UserIdArg,
    role: Annotated[str, typer.Argument(help="technical, business or executive")],
    challenge: Annotated[
        str, typer.Argument(help="integrations, team_coordination or strategic_oversight")
    ],
    urgency: Annotated[str, typer.Argument(help="this_week, this_month or evaluating")],
) -> None:
    """Record the qualifier answers; prints the persona path chosen."""
    command = _command(QualifyCommand, role=role, challenge=challenge, urgency=urgency)
    result = _act(lambda t: t.qualify(user_id, command), ("trial.qualify", user_id))
    console.print(f"Trial of {user_id} follows the {result.persona} path.")


@trial_app.command("event")
def trial_event(
    user_id: UserIdArg,
    name: Annotated[str, typer.Argument(help="Event name, e.g. integration_connected.")],
    prop: Annotated[
        list[str] | None, typer.Option("--property", "-p", help="key=value, repeatable.")
    ] = None,
    key: Annotated[str | None, typer.Option("--id", help="Idempotency key of the event.")] = None,
    at: Annotated[
        str | None, typer.Option(help="When it happened (ISO 8601 with time zone).")
    ] = None,
) -> None:
    """Report a product action for a user (stored once, then signalled)."""
    properties: dict[str, str] = {}
    for item in prop or []:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise fail(f"--property {item!r} is not key=value", 2)
        properties[field] = value
    event = _command(
        NewEvent, name=name, properties=properties, idempotency_key=key, occurred_at=at
    )
    result = _act(lambda t: t.add_events(user_id, [event]), ("trial.events", user_id))
    verdict = "already recorded (same id)" if result.duplicates else "recorded"
    console.print(f"Event {name} for {user_id} {verdict}.")


@trial_app.command("call")
def trial_call(
    user_id: UserIdArg,
    action: Annotated[str, typer.Argument(help="booked, rescheduled, completed or no_show")],
    at: Annotated[str | None, typer.Option(help="Call time (ISO 8601 with time zone).")] = None,
    agent: Annotated[str | None, typer.Option(help="CS agent running the call.")] = None,
    notes: Annotated[str | None, typer.Option(help="Notes after a completed call.")] = None,
) -> None:
    """Record what happened to the success call."""
    command = _command(CallCommand, action=action, at=at, agent=agent, notes=notes)
    _accepted(_act(lambda t: t.call(user_id, command), ("trial.call", user_id)))


@trial_app.command("extend")
def trial_extend(
    user_id: UserIdArg, days: Annotated[int, typer.Argument(help="1 to 60 days.")]
) -> None:
    """Extend a trial; every pending end-of-trial message moves with it."""
    command = _command(ExtensionCommand, days=days)
    _accepted(_act(lambda t: t.extend(user_id, command), ("trial.extend", user_id)))


@trial_app.command("convert")
def trial_convert(
    user_id: UserIdArg,
    plan: Annotated[str, typer.Argument(help="The plan bought.")],
    mrr: Annotated[float | None, typer.Option(help="Monthly recurring revenue.")] = None,
) -> None:
    """Record a conversion to a paid plan (ends the trial path)."""
    command = _command(ConversionCommand, plan=plan, mrr=mrr)
    _accepted(_act(lambda t: t.convert(user_id, command), ("trial.convert", user_id)))


@trial_app.command("unsubscribe")
def trial_unsubscribe(
    user_id: UserIdArg,
    channel: Annotated[str, typer.Argument(help="email, sms, in_app or all")],
) -> None:
    """Stop marketing messages to a user on a channel."""
    command = _command(UnsubscribeCommand, channel=channel)
    _accepted(
        _act(lambda t: t.unsubscribe(user_id, command, "cli"), ("trial.unsubscribe", user_id))
    )


@trial_app.command("cancel")
def trial_cancel(
    user_id: UserIdArg,
    reason: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
    erase: Annotated[
        bool, typer.Option(help="Also erase the user's personal data and history (GDPR).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before erasing.")] = False,
) -> None:
    """Cancel a trial, optionally erasing the user's personal data."""
    if (
        erase
        and not yes
        and not typer.confirm(
            f"Erase all personal data of user {user_id}? This cannot be undone.", default=False
        )
    ):
        raise fail("nothing erased", 1)
    result = _act(
        lambda t: t.cancel(user_id, reason=reason, erase=erase),
        ("trial.erase" if erase else "trial.cancel", user_id),
    )
    done = "cancelled" if result.cancelled else "already ended"
    extra = ", personal data erased" if result.erased else ""
    console.print(f"Trial of {user_id} {done}{extra}.")


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Argument(help="Who holds it, as the audit log shows it.")],
    role: Annotated[Role, typer.Argument(help="backend, support, admin or analyst")],
) -> None:
    """Make a key: prints the `name:role:secret` entry to add to TRIALPATH_API_KEYS."""
    secret = secrets.token_urlsafe(32)
    try:
        (key,) = parse_api_keys([f"{name}:{role}:{secret}"])
    except ValueError as err:
        raise fail(str(err).replace("entry 1", "the key"), 2) from err
    others = get_settings().api_keys if _settings_usable() else []
    if any(k.name == key.name for k in others):
        raise fail(f"a key named {key.name} is already in TRIALPATH_API_KEYS", 2)
    sys.stdout.write(f"{key.name}:{key.role}:{secret}\n")
    err_console.print(
        "Add this entry to TRIALPATH_API_KEYS (comma-separated) and restart the API; "
        "the secret is shown only now."
    )


@keys_app.command("list")
def keys_list() -> None:
    """The configured keys: names and roles, never the secrets."""
    keys = get_settings().api_keys
    if not keys:
        console.print("No API keys: TRIALPATH_API_KEYS is empty (`up` makes a local one).")
        return
    table = Table(title=f"API keys ({len(keys)})", title_justify="left")
    for column in ("name", "role", "may"):
        table.add_column(column)
    for key in keys:
        table.add_row(key.name, key.role, ", ".join(sorted(PERMISSIONS[key.role])))
    console.print(table)


def _settings_usable() -> bool:
    try:
        get_settings()
    except SettingsError:
        return False
    return True


@app.command("export")
def export_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="The folder to write the files to.")],
    output: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    tables: Annotated[
        str, typer.Option(help="Comma-separated, among trials, events, messages.")
    ] = "trials,events,messages",
    since: Annotated[
        str | None,
        typer.Option(
            help="Rows changed from this time (ISO 8601); default: where the last "
            "export to --out stopped, else the beginning."
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Rows changed before this time; default: a minute ago.")
    ] = None,
    include_personal_data: Annotated[
        bool,
        typer.Option(
            "--include-personal-data",
            help="Add names, e-mail addresses, phone numbers, recipients, referrers, landing "
            "pages and event properties (recorded in the audit log).",
        ),
    ] = False,
) -> None:
    """Export trials, events and messages for a warehouse (docs/export.md): the rows changed
    since the last export, one file per table."""
    from rich.progress import MofNCompleteColumn

    from trialpath.growth.export import ExportError, export

    def moment(text: str | None, name: str) -> datetime | None:
        if text is None:
            return None
        try:
            value = datetime.fromisoformat(text)
        except ValueError as err:
            raise fail(f"--{name} must be an ISO 8601 date or time, got {text!r}", 2) from err
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    chosen = tuple(t.strip() for t in tables.split(",") if t.strip())
    engine = engine_for(get_settings())
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        tasks: dict[str, Any] = {}

        def advance(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = progress.add_task(f"Exporting {table}", total=total)
            progress.update(tasks[table], completed=done)

        try:
            result = export(
                engine,
                out,
                fmt=output,  # type: ignore[arg-type]
                tables=chosen,
                since=moment(since, "since"),
                until=moment(until, "until"),
                include_personal_data=include_personal_data,
                progress=advance,
            )
        except ExportError as err:
            raise fail(str(err), 2) from err
        except OSError as err:
            raise fail(f"cannot write to {out}: {err.strerror or err}") from err
    if include_personal_data:
        detail = f"{','.join(chosen)} to {out} with personal data"
        audit_log.record(engine, audit_log.cli_actor(), "admin", "export", None, 200, detail)
    for table in result.tables:
        start = table.since.isoformat() if table.since else "the beginning"
        window = f"{start} to {table.until.isoformat()}"
        written = f"{table.file.name}" if table.file else "nothing new"
        console.print(f"{table.table}: {table.rows} row(s), {window}: {written}", highlight=False)


@app.command("audit")
def audit(
    user: Annotated[str | None, typer.Option(help="Only entries about this user.")] = None,
    actor: Annotated[
        str | None, typer.Option(help="Only this API key's name (or cli:<login>).")
    ] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. trial.erase.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
    before: Annotated[
        int | None, typer.Option(min=1, help="Older than this entry (from the last page).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The audit log: every write made through the API or this CLI, newest first."""
    settings = get_settings()
    page = audit_log.entries(
        engine_for(settings),
        user_id=user,
        actor=actor,
        action=action,
        before=before,
        limit=limit,
    )
    if as_json:
        for item in page.items:
            sys.stdout.write(item.model_dump_json() + "\n")
        return
    if not page.items:
        console.print("No audit entries match.")
        return
    table = Table(title=f"Audit log ({len(page.items)})", title_justify="left")
    for column in ("#", "at (UTC)", "actor", "role", "action", "user", "result"):
        table.add_column(column)
    for item in page.items:
        table.add_row(
            str(item.id),
            f"{item.at:%Y-%m-%d %H:%M:%S}",
            item.actor,
            item.role,
            item.action,
            item.user_id or "-",
            f"{item.status} {item.detail or ''}".strip(),
            style="red" if item.status >= 400 else None,
        )
    console.print(table)
    if page.next_before:
        console.print(f"Older: --before {page.next_before}")


def render_status(
    status: TrialStatus, clock: JourneyClock | None = None, timezone: str = "UTC"
) -> Table:
    """The status for support staff, every time on the trial's journey clock in the user's
    time zone, as the summary gives them (on an accelerated clock, wall-clock times of a
    14-day trial would all fall within a minute). Without its clock, wall-clock UTC."""
    table = Table(title=f"Trial of {status.user_id}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    zone = ZoneInfo(timezone if clock is not None else "UTC")

    def when(at: datetime | None) -> str:
        if at is None:
            return "-"
        shown = (clock.journey(at) if clock is not None else at).astimezone(zone)
        # To the nearest minute: a wall-clock microsecond is a fraction of a second of
        # journey time on a fast clock, so 10:00 may come back as 09:59:59.98.
        return f"{shown + timedelta(seconds=30):%Y-%m-%d %H:%M}"

    if clock is None:
        shown_in = "wall clock, UTC (the trial's clock is not recorded yet)"
    elif clock.seconds_per_day == 86400.0:
        shown_in = f"{timezone} time"
    else:
        shown_in = (
            f"journey time in {timezone}; one journey day = {clock.seconds_per_day:g} s of "
            "real time"
        )
    table.add_row("times", shown_in)
    table.add_row("stage", status.stage)
    table.add_row("persona", status.persona or "not known yet")
    table.add_row("urgency", status.urgency or "-")
    table.add_row("day", str(status.trial_day))
    activated = "no"
    if status.activated:
        activated = f"yes, at {when(status.activated_at)}"
    table.add_row("activated", activated)
    ends = status.ends_on.isoformat() if status.ends_on else when(status.trial_ends_at)
    table.add_row("trial ends", f"{ends} (last day)" if status.ends_on else ends)
    table.add_row("next wake-up", when(status.next_wakeup))
    call = status.call
    table.add_row(
        "success call",
        f"{call.state}, {when(call.at)}, {call.agent or '-'}" if call.state != "none" else "none",
    )
    table.add_row("unsubscribed", ", ".join(status.unsubscribed) or "-")
    table.add_row("needs attention", ", ".join(status.needs_attention) or "-")
    if status.open_tasks:
        table.add_row("open tasks", ", ".join(sorted(status.open_tasks)))
    table.add_row(
        "events", ", ".join(f"{k} ×{v}" for k, v in sorted(status.events_seen.items())) or "-"
    )
    table.add_row("messages sent", str(len(status.sent)))
    for sent in status.sent:
        table.add_row(
            "",
            f"day {sent.day:>2}  {when(sent.at)}  {sent.channel:<7} {sent.key.split(':', 1)[1]}",
        )
    table.add_row("summary", status.summary)
    return table


# --- templates -------------------------------------------------------------------------------


@templates_app.command("check")
def templates_check(
    templates_dir: Annotated[
        Path | None,
        typer.Option(
            "--templates-dir",
            help="The templates folder [default: TRIALPATH_TEMPLATES_DIR, else templates/].",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The findings as JSON.")] = False,
) -> None:
    """Check the templates before deploying them (exit code 1 on errors).

    Renders every message the journey sends, for every persona, language and a few sample
    users, as the worker would, and reports what would break. Warnings do not fail."""
    # Imported here: the check loads the SMS provider's code, which other commands do without.
    from trialpath.core.definition import DefinitionError, load_definition
    from trialpath.messages.template_check import check_templates
    from trialpath.messages.templating import Product

    settings = get_settings()
    folder = templates_dir or settings.templates_dir
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise fail(f"templates folder {folder} {problem}", 2)
    try:
        definition = load_definition(settings.journey_file)
    except DefinitionError as err:
        raise fail(str(err), 2) from err
    report = check_templates(
        folder,
        definition,
        product=Product(
            name=settings.product_name,
            app_url=settings.product_app_url,
            company_address=settings.company_address,
            support_email=settings.support_email,
        ),
        public_url=settings.effective_public_url,
        sms_max_segments=settings.sms_max_segments,
    )
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        for finding in report.findings:
            colour = "red" if finding.severity == "error" else "yellow"
            line = Text(f"{finding.severity}:", style=colour).append(f" {finding.located()}")
            console.print(line, soft_wrap=True, highlight=False)
        console.print(report.summary(), style="bold", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@templates_app.command("preview")
def templates_preview(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = 8765,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in the default browser.")
    ] = False,
    templates_dir: Annotated[
        Path | None,
        typer.Option(
            "--templates-dir",
            help="The templates folder [default: TRIALPATH_TEMPLATES_DIR, else templates/].",
        ),
    ] = None,
) -> None:
    """A web page with every message, per persona, language and sample user; it reloads by
    itself when a template file changes. Ctrl-C stops it."""
    from trialpath.messages.preview import serve_preview

    settings = get_settings()
    if templates_dir is not None:
        settings = settings.model_copy(update={"templates_dir": templates_dir})
    if not settings.templates_dir.is_dir():
        raise fail(f"templates folder {settings.templates_dir} does not exist", 2)
    if port_open("127.0.0.1", port):
        raise fail(f"127.0.0.1:{port} is already in use; choose another port with --port", 2)
    console.print(
        f"Template preview: http://127.0.0.1:{port}/ (templates: {settings.templates_dir}); "
        "Ctrl-C stops it."
    )
    try:
        serve_preview(settings, port=port, open_browser=open_browser)
    except ServiceError as err:
        raise fail(str(err), 2) from err


# --- kpis ------------------------------------------------------------------------------------


kpis_app = typer.Typer(
    help="The onboarding KPIs of the trials signed up in a period (definitions: docs/kpis.md).",
    invoke_without_command=True,
)
app.add_typer(kpis_app, name="kpis")


@kpis_app.callback()
def kpis(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(help="Trials signed up on or after this day (YYYY-MM-DD, or ISO date-time)."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Trials signed up up to this day, included.")
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            help="Split: persona, cohort (ISO week of signup), arm, channel, source "
            "(where users came from), qualifier or journey (the journey version)."
        ),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    experiment: Annotated[
        bool,
        typer.Option(
            "--experiment",
            help="Also compare the experiment's arms with the control (csv: only that).",
        ),
    ] = False,
    control: Annotated[str, typer.Option(help="The control arm of --experiment.")] = "generic",
) -> None:
    """The onboarding KPIs of the trials signed up in a period (definitions: docs/kpis.md).

    Rows whose n (denominator) is under 30 are dimmed: too few users to read much into.
    Without a subcommand it prints them; the subcommands answer other growth questions."""
    if ctx.invoked_subcommand is not None:
        return
    from sqlalchemy.exc import SQLAlchemyError

    from trialpath.core.definition import DefinitionError
    from trialpath.growth.kpis import (
        KpiError,
        arm_sizes,
        check_split,
        compute_kpis,
        experiment_note,
        experiment_report,
        make_filters,
        to_csv,
    )

    if output not in ("table", "csv", "json"):
        raise fail(f"--format must be table, csv or json, got {output!r}", 2)
    try:
        split = check_split(by)
        filters = make_filters(since, until)
    except KpiError as err:
        raise fail(str(err), 2) from err
    engine = engine_for(get_settings())
    try:
        values = compute_kpis(engine, filters, split)
        note = experiment_note(arm_sizes(engine, filters), control) if experiment else None
        comparisons = experiment_report(engine, filters, control) if experiment else []
    except (KpiError, DefinitionError) as err:
        raise fail(str(err), 2) from err
    except SQLAlchemyError as err:
        raise fail(f"cannot read the KPIs from the database: {err}") from err
    if output == "csv":
        sys.stdout.write(to_csv(comparisons if experiment else values))
    elif output == "json":
        answer: dict[str, Any] = {
            "filters": filters.as_dict(),
            "by": split,
            "kpis": [v.as_dict() for v in values],
        }
        if experiment:
            answer["experiment"] = [c.as_dict() for c in comparisons]
            answer["experiment_note"] = note
        sys.stdout.write(json.dumps(answer, indent=2, ensure_ascii=False) + "\n")
    else:
        console.print(_kpi_table(values, filters.since, filters.until, split))
        if any(v.n < 30 for v in values):
            console.print("[dim]Dimmed: n < 30, too few users to read much into the value.[/]")
        if experiment:
            if note:
                console.print(f"Experiment: {note}.")
            else:
                console.print(_experiment_table(comparisons, control))
                # Verdicts below the table, not in it: they stay readable in a narrow terminal.
                for c in comparisons:
                    console.print(f"{c.kpi}, {c.arm}: {c.verdict}", soft_wrap=True, highlight=False)


@kpis_app.command("discover")
def kpis_discover(
    since: Annotated[
        str | None, typer.Option(help="Trials signed up on or after this day (YYYY-MM-DD).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Trials signed up up to this day.")] = None,
    top: Annotated[int, typer.Option(help="How many rules to show.")] = 10,
    counts: Annotated[str, typer.Option(help="The N to try, comma-separated.")] = "1,2,3,5,10",
    days: Annotated[str, typer.Option(help="The D to try (journey days).")] = "1,3,7,14",
    min_users: Annotated[
        int, typer.Option(help="Leave out rules reached (or missed) by fewer users.")
    ] = 10,
    output: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """Which early behaviour predicts paying: rules "event X at least N times within D days"
    ranked by how well they separate buyers from the others (docs/kpis.md), against the
    journey's own activation rule."""
    import csv
    import io

    from sqlalchemy.exc import SQLAlchemyError

    from trialpath.growth.discover import discover
    from trialpath.growth.kpis import KpiError, make_filters

    if output not in ("table", "json", "csv"):
        raise fail(f"--format must be table, json or csv, got {output!r}", 2)
    try:
        filters = make_filters(since, until)
        grid_counts = [int(v) for v in counts.split(",") if v.strip()]
        grid_days = [int(v) for v in days.split(",") if v.strip()]
        found = discover(
            engine_for(get_settings()),
            filters,
            counts=grid_counts,
            days=grid_days,
            min_users=min_users,
            top=top,
        )
    except (KpiError, ValueError) as err:
        raise fail(str(err), 2) from err
    except SQLAlchemyError as err:
        raise fail(f"cannot read the trials from the database: {err}") from err
    rows = [*found.candidates, *([found.configured] if found.configured else [])]
    if output == "json":
        answer = {
            "filters": filters.as_dict(),
            "users": found.users,
            "buyers": found.buyers,
            "tried": found.tried,
            "note": found.note,
            "candidates": [c.as_dict() for c in found.candidates],
            "configured": found.configured.as_dict() if found.configured else None,
        }
        sys.stdout.write(json.dumps(answer, indent=2, ensure_ascii=False) + "\n")
        return
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        header = "rank,rule,users reached,share,precision,recall,others,lift,separation"
        writer.writerow([*header.split(","), "separation low", "separation high"])
        for c in rows:
            writer.writerow(
                [
                    c.rank,
                    c.rule,
                    c.reached,
                    f"{c.share:.4f}",
                    f"{c.precision:.4f}",
                    f"{c.recall:.4f}",
                    f"{c.others:.4f}",
                    "" if c.lift is None else f"{c.lift:.3f}",
                    f"{c.separation:.4f}",
                    f"{c.separation_ci[0]:.4f}",
                    f"{c.separation_ci[1]:.4f}",
                ]
            )
        sys.stdout.write(buffer.getvalue())
        return
    if found.note:
        console.print(f"Nothing to rank: {found.note}.")
        return
    table = Table(
        "#",
        "Rule",
        "Reached",
        "Bought if reached (95 % CI)",
        "Of buyers",
        "Others",
        "Lift",
        "Separation (95 % CI)",
        title=f"What predicts paying: {found.users} finished trials, {found.buyers} bought, "
        f"{found.tried} rules tried",
    )
    for c in rows:
        style = "bold" if c.event is None else None
        table.add_row(
            str(c.rank),
            c.rule,
            f"{c.share:.0%} ({c.reached})",
            f"{c.precision:.0%} ({c.precision_ci[0]:.0%}–{c.precision_ci[1]:.0%})",
            f"{c.recall:.0%}",
            f"{c.others:.0%}",
            "—" if c.lift is None else f"×{c.lift:.1f}",
            f"{c.separation * 100:+.0f} pts ({c.separation_ci[0] * 100:+.0f} to "
            f"{c.separation_ci[1] * 100:+.0f})",
            style=style,
        )
    console.print(table)
    console.print(
        "[dim]Ranked by the low end of the separation's interval. Correlation, not cause: "
        "test a new activation rule in an experiment before adopting it.[/]"
    )


@kpis_app.command("power")
def kpis_power(
    baseline: Annotated[float, typer.Option(help="The control's rate now, e.g. 0.2 for 20 %.")],
    lift: Annotated[
        float,
        typer.Option(help="The lift to detect: 0.05 = +5 points, or with --relative 0.1 = +10 %."),
    ],
    relative: Annotated[bool, typer.Option("--relative", help="--lift is relative.")] = False,
    alpha: Annotated[float, typer.Option(help="Two-sided significance level.")] = 0.05,
    power: Annotated[float, typer.Option(help="Chance to detect the lift if it is real.")] = 0.8,
    arms: Annotated[int, typer.Option(help="Arms, control included.")] = 2,
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """How many users an experiment on a rate needs before it can show a planned lift."""
    from dataclasses import asdict

    from trialpath.growth.stats import plan_power

    if output not in ("table", "json"):
        raise fail(f"--format must be table or json, got {output!r}", 2)
    try:
        plan = plan_power(baseline, lift, relative=relative, alpha=alpha, power=power, arms=arms)
    except ValueError as err:
        raise fail(str(err), 2) from err
    if output == "json":
        sys.stdout.write(json.dumps({**asdict(plan), "total": plan.total}, indent=2) + "\n")
        return
    console.print(
        f"From {plan.baseline:.1%} to {plan.target:.1%} (Cohen's h {plan.cohen_h:.3f}), "
        f"two-sided at {plan.alpha:g} with {plan.power:.0%} power:\n"
        f"  [b]{plan.per_arm:,}[/] users per arm, {plan.total:,} in all ({plan.arms} arms).\n"
        f"  [dim]Cohen's arcsine method: {plan.per_arm_arcsine:,} per arm.[/]",
        highlight=False,
    )
    if plan.arms > 2:
        console.print(
            "[dim]Each arm against the control, without correction for the several comparisons.[/]"
        )


def _kpi_table(
    values: list[Any], since: datetime | None, until: datetime | None, split: str | None
) -> Table:
    def day(at: datetime) -> str:
        return f"{at:%Y-%m-%d}" if at.time() == datetime.min.time() else f"{at:%Y-%m-%d %H:%M}"

    period = f" from {day(since)}" if since else ""
    if until is not None and until.time() == datetime.min.time():
        period += f" to {day(until - timedelta(days=1))}"  # `until` is exclusive
    elif until is not None:
        period += f" before {day(until)}"
    title = f"Onboarding KPIs, trials signed up{period or ' at any time'}"
    title += f", by {split}" if split else ""
    table = Table(title=title, title_justify="left")
    table.add_column("KPI", no_wrap=True)
    table.add_column("group", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("n", justify="right")
    table.add_column("detail")
    for v in values:
        # Counts only: the rest (distributions, assumptions) is in --format json.
        detail = ", ".join(f"{k} {x}" for k, x in v.detail.items() if type(x) is int)
        if "monthly_churn" in v.detail:  # the CLTV's assumption, next to the figure
            detail = f"assuming {v.detail['monthly_churn']:.1%} monthly churn"
        value = _kpi_number(v.value, v.unit)
        table.add_row(v.kpi, v.group, value, str(v.n), detail, style="dim" if v.n < 30 else None)
    return table


def _kpi_number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return {
        "%": f"{value:.1f} %",
        "hours": f"{value:.1f} h",
        "score": f"{value:.2f}",
        "EUR": f"{value:,.0f} €",
    }.get(unit, f"{value:.2f}")


def _experiment_table(comparisons: list[Any], control: str) -> Table:
    table = Table(title=f"Experiment: each arm against {control}", title_justify="left")
    # Names fold before numbers get cut, in a narrow terminal.
    table.add_column("KPI", overflow="fold")
    table.add_column("arm", overflow="fold")
    for column in ("value", control, "n", "diff", "95 % CI", "p"):
        table.add_column(column, justify="right", no_wrap=True)
    for c in comparisons:
        unit = "%" if c.unit == "pts" else c.unit
        interval = "-"
        if c.ci_low is not None and c.ci_high is not None:
            interval = f"{c.ci_low:+.1f} to {c.ci_high:+.1f}"
        table.add_row(
            c.kpi,
            c.arm,
            _kpi_number(c.value, unit),
            _kpi_number(c.control_value, unit),
            f"{c.n} / {c.control_n}",
            "-" if c.diff is None else f"{c.diff:+.1f}",  # in the value's unit (pts for %)
            interval,
            "-" if c.p_value is None else f"{c.p_value:.3f}",
            style="dim" if min(c.n, c.control_n) < 30 else None,
        )
    return table


def main() -> None:
    """Console-script entry point. `kill -USR1 <pid>` prints where every thread is (stderr),
    for a command that seems stuck."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        app()
    except SettingsError as err:
        err_console.print(f"[red]error:[/] {err}")
        exit_process(2)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        exit_process(code)

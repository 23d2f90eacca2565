"""`trialpath tasks`: support's work queue from a terminal (the same code as `/v1/tasks`).

    trialpath tasks list [--state open|claimed|snoozed|closed|active|all] [--owner NAME]
    trialpath tasks show KEY
    trialpath tasks claim KEY --owner NAME [--force]
    trialpath tasks snooze KEY (--hours H | --until ISO)
    trialpath tasks close KEY --outcome reached_user|call_booked|... [--note TEXT]

Each change is recorded in the audit log as `cli:<login>`. Closing sends the outcome to the
trial's workflow when Temporal answers; otherwise it stays queued and the API delivers it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from trialpath.core.journey import TaskOutcome
from trialpath.entry.cli.common import T, _command, console, fail
from trialpath.entry.commands import TrialProblem
from trialpath.operations import audit as audit_log
from trialpath.operations.config import get_settings
from trialpath.operations.db import engine_for
from trialpath.support import tasks
from trialpath.support.tasks import ClaimTask, CloseTask, SnoozeTask, StateFilter, TaskView

tasks_app = typer.Typer(
    help="Support's work queue: tasks the journey opened for a human.", no_args_is_help=True
)

KeyArg = Annotated[str, typer.Argument(help="The task's key, as listed.")]


def _change(action: str, key: str, operation: Callable[[], T]) -> T:
    """Runs a change, turns its problem into a one-line message, and audits it."""
    settings = get_settings()
    engine = engine_for(settings)
    status = 500
    try:
        result = operation()
        status = 200
        return result
    except TrialProblem as err:
        status = err.status
        raise fail(err.detail, 2 if err.status in (400, 422) else 1) from err
    finally:
        audit_log.record(engine, audit_log.cli_actor(), "cli", action, tasks.user_of(key), status)


def _show(task: TaskView) -> None:
    console.print(f"[bold]{task.key}[/] ({task.kind}, {task.state})", highlight=False)
    rows = [
        ("user", task.user_id),
        ("persona / stage", f"{task.persona or '-'} / {task.stage or '-'}"),
        ("reason", task.reason),
        ("owner", task.owner or "nobody"),
        ("opened", _when(task.created_at)),
        ("claimed", _when(task.claimed_at)),
        ("snoozed until", _when(task.snoozed_until)),
        ("closed", _when(task.closed_at)),
        ("outcome", task.outcome or "-"),
        ("note", task.note or "-"),
    ]
    for label, value in rows:
        console.print(f"  {label:<16}{value}", highlight=False)


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC" if at is not None else "-"


@tasks_app.command("list")
def tasks_list(
    state: Annotated[
        StateFilter, typer.Option(help="open, claimed, snoozed, closed, active (not closed), all.")
    ] = "active",
    owner: Annotated[str | None, typer.Option(help="Only this owner's tasks.")] = None,
    unowned: Annotated[bool, typer.Option("--unowned", help="Only tasks nobody owns.")] = False,
    kind: Annotated[str | None, typer.Option(help="stalled, inactive, ...")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's tasks.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=tasks.MAX_PAGE)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The queue, oldest first."""
    page = tasks.list_tasks(
        engine_for(get_settings()),
        state=state,
        owner=owner,
        unowned=unowned,
        kind=kind,
        user_id=user,
        limit=limit,
    )
    if as_json:
        for task in page.tasks:
            sys.stdout.write(task.model_dump_json() + "\n")
        return
    if not page.tasks:
        console.print(f"No {state} tasks.")
        return
    table = Table(title=f"Tasks ({state}): {page.total}", title_justify="left")
    # The key whole on one line (it is what the other commands take, and names the user).
    table.add_column("key", no_wrap=True)
    for column in ("kind", "state", "owner", "opened (UTC)"):
        table.add_column(column)
    for task in page.tasks:
        shown = f"{task.state}: {task.outcome}" if task.outcome else task.state
        table.add_row(
            task.key, task.kind, shown, task.owner or "-", f"{task.created_at:%m-%d %H:%M}"
        )
    console.print(table)
    if page.total > len(page.tasks):
        console.print(f"{page.total - len(page.tasks)} more: --limit {tasks.MAX_PAGE}")


@tasks_app.command("show")
def tasks_show(
    key: KeyArg,
    as_json: Annotated[bool, typer.Option("--json", help="The task as JSON.")] = False,
) -> None:
    """One task."""
    try:
        task = tasks.get_task(engine_for(get_settings()), key)
    except TrialProblem as err:
        raise fail(err.detail) from err
    if as_json:
        sys.stdout.write(task.model_dump_json(indent=2) + "\n")
        return
    _show(task)


@tasks_app.command("claim")
def tasks_claim(
    key: KeyArg,
    owner: Annotated[str, typer.Option(help="Who takes it.")],
    force: Annotated[bool, typer.Option(help="Take it over from whoever has it.")] = False,
) -> None:
    """Take a task."""
    command = _command(ClaimTask, drop_none=True, owner=owner, force=force)
    engine = engine_for(get_settings())
    task = _change("task.claim", key, lambda: tasks.claim_task(engine, key, command))
    console.print(f"{task.key} is {task.owner}'s.", highlight=False)


@tasks_app.command("snooze")
def tasks_snooze(
    key: KeyArg,
    hours: Annotated[float | None, typer.Option(help="For this many hours.")] = None,
    until: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"], help="Until (ISO)."),
    ] = None,
) -> None:
    """Take a task out of the queue for a while."""
    command = _command(SnoozeTask, drop_none=True, hours=hours, until=until)
    engine = engine_for(get_settings())
    task = _change("task.snooze", key, lambda: tasks.snooze_task(engine, key, command))
    console.print(f"{task.key} snoozed until {_when(task.snoozed_until)}.", highlight=False)


@tasks_app.command("close")
def tasks_close(
    key: KeyArg,
    outcome: Annotated[TaskOutcome, typer.Option(help="What happened.")],
    note: Annotated[str | None, typer.Option(help="A few words for the record.")] = None,
    owner: Annotated[str | None, typer.Option(help="Who closes it (default: its owner).")] = None,
) -> None:
    """Close a task with its outcome; the outcome goes to the trial's journey."""
    command = _command(CloseTask, drop_none=True, outcome=outcome, note=note, owner=owner)
    settings = get_settings()
    engine = engine_for(settings)
    closed = _change("task.close", key, lambda: tasks.close_task(engine, key, command))
    console.print(f"{key} closed: {closed.task.outcome}.", highlight=False)
    if closed.signal_id is not None:
        console.print(asyncio.run(_deliver(closed.signal_id)), highlight=False)


async def _deliver(signal_id: int) -> str:
    """Sends the queued outcome to the trial's workflow; says what became of it."""
    from sqlmodel import Session

    from trialpath.entry.trials import Trials
    from trialpath.operations.models import PendingSignal
    from trialpath.operations.temporal import connect

    settings = get_settings()
    engine = engine_for(settings)
    try:
        client = await connect(settings)
    except RuntimeError:
        return "Temporal did not answer: the outcome is queued and the API delivers it later."
    if await Trials(client, engine, settings).deliver([signal_id]) == 1:
        return "The trial's journey has the outcome."
    with Session(engine) as session:
        row = session.get(PendingSignal, signal_id)
    if row is not None and row.failed:
        return "The trial has ended: the outcome is kept with the task (and in the KPIs)."
    return "Not delivered yet: the outcome is queued and the API delivers it later."

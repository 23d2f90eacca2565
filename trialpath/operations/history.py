"""`trialpath history`: export a trial's workflow history, and replay one with today's code.

Before deploying a change to the workflow code, replay the histories of running trials with
the new code (docs/versioning.md): a history that no longer replays is a trial the change
would break, and the change needs `workflow.patched`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from temporalio.client import WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from trialpath.core.contract import WORKFLOW_TYPE, check_user_id, workflow_id_for
from trialpath.operations.config import get_settings
from trialpath.operations.temporal import connect, data_converter

history_app = typer.Typer(
    help="Export and replay workflow histories (safe workflow changes).", no_args_is_help=True
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/] {message}")
    return typer.Exit(code)


@history_app.command("export")
def export(
    user_id: Annotated[str, typer.Argument(help="The trial's user id.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write [default: stdout].")
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="A given run (default: the latest).")] = None,
) -> None:
    """Write the trial's workflow history as JSON, the format `history replay` and the
    replay tests read. Payloads stay as stored (encrypted when a codec is configured)."""
    try:
        check_user_id(user_id)
    except ValueError as err:
        raise _fail(str(err), 2) from err
    settings = get_settings()

    async def fetch() -> WorkflowHistory:
        client = await connect(settings)
        handle = client.get_workflow_handle(workflow_id_for(user_id), run_id=run_id)
        return await handle.fetch_history()

    try:
        history = asyncio.run(fetch())
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise _fail(f"no workflow history for user {user_id}") from err
        raise _fail(f"Temporal at {settings.temporal_address}: {err.message}") from err
    except RuntimeError as err:
        raise _fail(f"cannot reach Temporal at {settings.temporal_address} ({err})") from err
    text = history.to_json()
    if out is None:
        typer.echo(text)
        return
    out.write_text(text)
    console.print(f"Wrote {out} ({len(history.events)} events of {history.workflow_id}).")


@history_app.command("sample")
def sample(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the histories to.")],
    count: Annotated[int, typer.Option(min=1, max=1000, help="How many trials.")] = 20,
    where: Annotated[
        str | None,
        typer.Option(
            help="Narrow the trials with a visibility query, e.g. \"Persona = 'business'\"."
        ),
    ] = None,
) -> None:
    """Export the histories of the most recent trials (running or not), one file each: a sample
    of production to replay before deploying workflow code (`history replay DIR/*.json`)."""
    settings = get_settings()
    query = f"WorkflowType = '{WORKFLOW_TYPE}'" + (f" AND ({where})" if where else "")

    async def fetch() -> list[WorkflowHistory]:
        client = await connect(settings)
        found = []
        async for execution in client.list_workflows(query, limit=count):
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            found.append(await handle.fetch_history())
        return found

    try:
        histories = asyncio.run(fetch())
    except RPCError as err:
        raise _fail(f"Temporal at {settings.temporal_address}: {err.message}") from err
    except RuntimeError as err:
        raise _fail(f"cannot reach Temporal at {settings.temporal_address} ({err})") from err
    try:
        out.mkdir(parents=True, exist_ok=True)
        for history in histories:
            (out / f"{history.workflow_id}.json").write_text(history.to_json())
    except OSError as err:
        raise _fail(f"cannot write to {out}: {err.strerror or err}") from err
    console.print(f"Wrote {len(histories)} histories to {out}.")


@history_app.command("replay")
def replay(
    files: Annotated[list[Path], typer.Argument(help="History JSON files (from `export`).")],
) -> None:
    """Replay histories with the workflow code of this checkout; exit 1 if one no longer
    replays (a change that would break such trials)."""
    from workflows.trial import TrialWorkflow

    settings = get_settings()
    from temporalio.worker import Replayer

    replayer = Replayer(workflows=[TrialWorkflow], data_converter=data_converter(settings))
    failed = 0
    for path in files:
        try:
            history = WorkflowHistory.from_json(path.stem, path.read_text())
        except (OSError, ValueError) as err:
            raise _fail(f"{path}: not a workflow history ({err})", 2) from err
        result = asyncio.run(replayer.replay_workflow(history, raise_on_replay_failure=False))
        if result.replay_failure is None:
            console.print(f"[green]ok[/]     {path} ({len(history.events)} events)")
        else:
            failed += 1
            console.print(f"[red]broken[/] {path}: {result.replay_failure}", soft_wrap=True)
    if failed:
        raise _fail(f"{failed} of {len(files)} histories no longer replay", 1)

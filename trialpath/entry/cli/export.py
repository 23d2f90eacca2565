"""`trialpath export` and `trialpath audit`: warehouse exports and the audit log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from trialpath.entry.cli.common import console, err_console, fail, moment
from trialpath.operations import audit as audit_log
from trialpath.operations.config import get_settings
from trialpath.operations.db import engine_for


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
                since=moment(since, "--since") if since is not None else None,
                until=moment(until, "--until") if until is not None else None,
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

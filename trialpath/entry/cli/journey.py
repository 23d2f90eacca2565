"""`trialpath journey`: the journey definition as the people who change it read it, its
stored versions, and moving running trials from one to another.

    trialpath journey show [--journey FILE | --version vN] [--format text|mermaid|html]
                           [--out FILE] [--preview-url URL]
    trialpath journey versions
    trialpath journey diff A B                 (A, B: versions like v2, or journey files)
    trialpath journey plan TARGET              (what moving running trials to TARGET would do)
    trialpath journey migrate --to TARGET [--where QUERY] [--dry-run]

`text` lists the phases and their steps in the terminal; `mermaid` prints a flowchart for a
Markdown file or a wiki; `html` writes a page with the personas' paths side by side. With
`--preview-url` (where `trialpath templates preview` runs) each message links to its copy; the
preview itself serves the same page at `/journey`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.tree import Tree
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from trialpath.core.contract import JourneyVersionRef, MoveJourney
from trialpath.core.definition import DefinitionError, JourneyDefinition, load_definition
from trialpath.entry.cli.common import console, err_console, fail
from trialpath.messages.journeymap import (
    CHANNEL_NAMES,
    JourneyMap,
    journey_map,
    preview_link,
    to_html,
    to_mermaid,
)
from trialpath.operations import audit as audit_log, versions
from trialpath.operations.config import Settings, get_settings
from trialpath.operations.db import engine_for

journey_app = typer.Typer(
    help="The journey definition (journey.toml): draw it, its versions, move running trials.",
    no_args_is_help=True,
)


@journey_app.command("show")
def show(
    journey: Annotated[
        Path | None,
        typer.Option(help="A journey file; default: the configured one (TRIALPATH_JOURNEY_FILE)."),
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="A stored version (v3) instead of a file.")
    ] = None,
    output: Annotated[str, typer.Option("--format", help="text, mermaid or html.")] = "text",
    out: Annotated[
        Path | None, typer.Option(help="Write to this file instead of standard output.")
    ] = None,
    preview_url: Annotated[
        str | None,
        typer.Option(
            help="Address of `trialpath templates preview` (e.g. http://127.0.0.1:8090): "
            "messages link to their copy there."
        ),
    ] = None,
) -> None:
    """Draw the journey: phases, each persona's path, waits, decisions, messages, the success
    call and the end of the trial."""
    if output not in ("text", "mermaid", "html"):
        raise fail(f"--format must be text, mermaid or html, got {output!r}", 2)
    if preview_url is not None and not preview_url.startswith(("http://", "https://")):
        raise fail(f"--preview-url must be an http(s) address, got {preview_url!r}", 2)
    if version is not None and journey is not None:
        raise fail("give --journey or --version, not both", 2)
    if version is not None:
        settings = get_settings()
        defn = _resolve(engine_for(settings), settings, version)[1]
    else:
        try:
            defn = load_definition(journey or get_settings().journey_file)
        except DefinitionError as err:
            raise fail(str(err), 2) from err
    drawn = journey_map(defn)
    link = preview_link(preview_url.rstrip("/")) if preview_url else None
    if output == "text":
        if out is not None:
            raise fail("--out goes with --format mermaid or html", 2)
        console.print(_tree(drawn))
        return
    text = to_mermaid(drawn, link) if output == "mermaid" else to_html(drawn, link)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as err:
        raise fail(f"cannot write {out}: {err.strerror or err}") from err
    err_console.print(f"Wrote {out} ({output}).", highlight=False)


def _tree(drawn: JourneyMap) -> Tree:
    tree = Tree(f"[b]Journey {escape(drawn.version)}[/] ({drawn.trial_days}-day trial)")
    for lane in drawn.lanes:
        branch = tree.add(f"[b]{escape(lane.title)}[/]")
        for node in lane.nodes:
            if node.kind == "message":
                channels = ", ".join(CHANNEL_NAMES[c] for c in node.channels)
                colour = "magenta" if node.category == "marketing" else "green"
                line = (
                    f"{escape(node.label)}: [{colour}]{escape(node.message or '')}[/] ({channels})"
                )
            else:
                line = f"[dim]{node.kind}:[/] {escape(node.label)}"
            if node.note:
                line += f" [dim]— {escape(node.note)}[/]"
            branch.add(line, highlight=False)
    for note in drawn.notes:
        tree.add(f"[dim]{escape(note)}[/]")
    return tree


# --- versions --------------------------------------------------------------------------------


def _resolve(
    engine: Engine, settings: Settings, target: str, *, store: bool = False
) -> tuple[JourneyVersionRef | None, JourneyDefinition]:
    """A version (`v3`, `3`) from the database, or a journey file (stored as a version when
    `store`; otherwise its version only if some trial already ran it)."""
    path = Path(target)
    if not path.exists() and target.lstrip("vV").isdigit():
        try:
            return versions.load(engine, versions.parse_version(target))
        except versions.VersionError as err:
            raise fail(str(err), 2) from err
        except SQLAlchemyError as err:
            raise fail(f"cannot read the journey versions: {err}") from err
    try:
        defn = load_definition(path)
    except DefinitionError as err:
        raise fail(str(err), 2) from err
    if store:
        return versions.register(engine, defn, str(path.resolve())), defn
    known = {row.ref.content_hash: row.ref for row in versions.list_versions(engine)}
    return known.get(versions.content_hash(defn)), defn


def _name(ref: JourneyVersionRef | None, target: str) -> str:
    return f"{ref.name} ({ref.label})" if ref else f"{target} (not stored yet)"


@journey_app.command("versions")
def list_versions() -> None:
    """Every journey version a trial has run: its number, the file's `version`, content hash,
    first use, and how many trials run it."""
    try:
        rows = versions.list_versions(engine_for(get_settings()))
    except SQLAlchemyError as err:
        raise fail(f"cannot read the journey versions: {err}") from err
    if not rows:
        console.print("No journey version stored yet: one is stored when a trial starts.")
        return
    table = Table("Version", "Label", "Content hash", "First used (UTC)", "Trials", "Running")
    for row in rows:
        table.add_row(
            row.ref.name,
            escape(row.ref.label),
            row.ref.content_hash[:12],
            f"{row.created_at:%Y-%m-%d %H:%M}",
            str(row.trials),
            str(row.running),
        )
    console.print(table)


@journey_app.command("diff")
def diff(
    before: Annotated[str, typer.Argument(help="A version (v2) or a journey file.")],
    after: Annotated[str, typer.Argument(help="A version (v3) or a journey file.")],
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """What differs between two journeys, setting by setting (drip steps matched by message)."""
    if output not in ("table", "json"):
        raise fail(f"--format must be table or json, got {output!r}", 2)
    settings = get_settings()
    engine = engine_for(settings)
    a = _resolve(engine, settings, before)
    b = _resolve(engine, settings, after)
    changes = versions.diff(a[1], b[1])
    if output == "json":
        sys.stdout.write(
            json.dumps(
                [{"path": c.path, "before": c.before, "after": c.after} for c in changes],
                indent=2,
                ensure_ascii=False,
            )
            + "\n"
        )
        return
    if not changes:
        console.print(
            f"No difference: {_name(a[0], before)} and {_name(b[0], after)} are the same."
        )
        return
    table = Table(title="Journey diff")
    # Folded, never cut: a setting's path is what the reader needs whole.
    for header in ("Setting", _name(a[0], before), _name(b[0], after)):
        table.add_column(header, overflow="fold")
    for change in changes:
        table.add_row(
            escape(change.path),
            "[dim]absent[/]" if change.before is None else escape(_show(change.before)),
            "[dim]absent[/]" if change.after is None else escape(_show(change.after)),
        )
    console.print(table)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@journey_app.command("plan")
def plan(
    target: Annotated[str, typer.Argument(help="A journey file, or a stored version (v3).")],
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """What deploying TARGET to running trials would do: how many are at each step, which of
    their upcoming messages change, appear or disappear, and which could not move."""
    if output not in ("table", "json"):
        raise fail(f"--format must be table or json, got {output!r}", 2)
    settings = get_settings()
    engine = engine_for(settings)
    ref, defn = _resolve(engine, settings, target)
    try:
        found = versions.plan(engine, defn, _name(ref, target))
    except SQLAlchemyError as err:
        raise fail(f"cannot read the running trials: {err}") from err
    if output == "json":
        groups = [
            {
                "version": f"v{g.version}" if g.version else None,
                "path": g.path,
                "current_step": g.current,
                "trials": g.trials,
                "movable": g.movable,
                "cannot_move": dict(g.problems),
                "upcoming": [
                    {"message": m, "change": c, "trials": n} for (m, c), n in g.differences.items()
                ],
            }
            for g in found.groups
        ]
        answer = {"target": found.target, "trials": found.trials, "movable": found.movable}
        sys.stdout.write(json.dumps({**answer, "groups": groups}, indent=2) + "\n")
        return
    console.print(
        f"Plan for {escape(found.target)}: {found.trials} running trial(s) on other versions, "
        f"{found.movable} could move, {found.trials - found.movable} could not.",
        highlight=False,
    )
    if not found.groups:
        return
    table = Table("Version", "Path", "Current step", "Trials", "Could move", "Upcoming messages")
    for g in found.groups:
        changes = [f"{m} {c} ({n})" for (m, c), n in sorted(g.differences.items())]
        changes += [f"[red]cannot move: {escape(p)}[/] ({n})" for p, n in g.problems.items()]
        table.add_row(
            f"v{g.version}" if g.version else "unrecorded",
            g.path or "(no persona yet)",
            g.current or "(none yet)",
            str(g.trials),
            str(g.movable),
            "\n".join(changes) or "[dim]no change[/]",
        )
    console.print(table)
    console.print(
        "[dim]From the database; each trial checks again on its exact state when moved.[/]"
    )


@journey_app.command("migrate")
def migrate(
    to: Annotated[str, typer.Option("--to", help="A journey file or a stored version (v3).")],
    where: Annotated[
        str | None,
        typer.Option(
            help="Only trials this visibility query selects, e.g. \"Persona = 'business'\" "
            "or \"JourneyVersion = 'v2'\"."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Ask each trial whether it would move; move none.")
    ] = False,
) -> None:
    """Move running trials to another journey version, each at its next safe point (between two
    steps), where it is safe; the others keep theirs. Each move is in the audit log."""
    settings = get_settings()
    engine = engine_for(settings)
    ref, defn = _resolve(engine, settings, to, store=not dry_run)
    if ref is None:
        # A dry run of a file no trial ran: compared by content, as it would be stored.
        ref = JourneyVersionRef(id=0, content_hash=versions.content_hash(defn), label=defn.version)
    move = MoveJourney(version=ref, definition=defn)
    outcomes = asyncio.run(_move_all(settings, engine, move, where, dry_run))
    moved = [o for o in outcomes if o.moved]
    refused = [o for o in outcomes if not o.moved]
    verb = "would move" if dry_run else "moved"
    console.print(
        f"{len(outcomes)} running trial(s) selected: {len(moved)} {verb} to "
        f"{escape(_name(ref if ref.id else None, to))}, {len(refused)} kept their version.",
        highlight=False,
    )
    if refused:
        table = Table("User", "Why it keeps its version")
        for outcome in refused:
            table.add_row(escape(outcome.user_id), escape(outcome.detail))
        console.print(table)


async def _move_all(
    settings: Settings, engine: Engine, move: MoveJourney, where: str | None, dry_run: bool
) -> list[versions.MoveOutcome]:
    from trialpath.operations.temporal import connect

    try:
        client = await connect(settings)
    except RuntimeError as err:
        raise fail(f"cannot reach Temporal at {settings.temporal_address} ({err})") from err
    try:
        selected = await versions.running_trials(client, where)
    except versions.VersionError as err:
        raise fail(str(err), 2) from err
    outcomes = []
    actor = audit_log.cli_actor()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(
            "Moving trials" if not dry_run else "Asking trials", total=len(selected)
        )
        for workflow_id in selected:
            outcome = await versions.move_trial(client, workflow_id, move, dry_run=dry_run)
            outcomes.append(outcome)
            if not dry_run:
                audit_log.record(
                    engine,
                    actor,
                    "admin",
                    "journey.migrate",
                    outcome.user_id,
                    200 if outcome.moved else 409,
                    outcome.detail,
                )
            progress.advance(task)
    return outcomes

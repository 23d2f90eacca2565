"""`trialpath journey`: the journey definition as the people who change it read it.

    trialpath journey show [--journey FILE] [--format text|mermaid|html] [--out FILE]
                           [--preview-url URL]

`text` lists the phases and their steps in the terminal; `mermaid` prints a flowchart for a
Markdown file or a wiki; `html` writes a page with the personas' paths side by side. With
`--preview-url` (where `trialpath templates preview` runs) each message links to its copy; the
preview itself serves the same page at `/journey`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from trialpath.config import get_settings
from trialpath.definition import DefinitionError, load_definition
from trialpath.journeymap import (
    CHANNEL_NAMES,
    JourneyMap,
    journey_map,
    preview_link,
    to_html,
    to_mermaid,
)

journey_app = typer.Typer(
    help="The journey definition (journey.toml): draw it.", no_args_is_help=True
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


@journey_app.command("show")
def show(
    journey: Annotated[
        Path | None,
        typer.Option(help="A journey file; default: the configured one (TRIALPATH_JOURNEY_FILE)."),
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
        raise _fail(f"--format must be text, mermaid or html, got {output!r}", 2)
    if preview_url is not None and not preview_url.startswith(("http://", "https://")):
        raise _fail(f"--preview-url must be an http(s) address, got {preview_url!r}", 2)
    path = journey or get_settings().journey_file
    try:
        drawn = journey_map(load_definition(path))
    except DefinitionError as err:
        raise _fail(str(err), 2) from err
    link = preview_link(preview_url.rstrip("/")) if preview_url else None
    if output == "text":
        if out is not None:
            raise _fail("--out goes with --format mermaid or html", 2)
        console.print(_tree(drawn))
        return
    text = to_mermaid(drawn, link) if output == "mermaid" else to_html(drawn, link)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as err:
        raise _fail(f"cannot write {out}: {err.strerror or err}") from err
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

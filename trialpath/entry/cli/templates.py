"""`trialpath templates`: check and preview the message templates."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from trialpath.entry.cli.common import console, fail
from trialpath.operations.config import get_settings
from trialpath.operations.services import ServiceError, port_open

templates_app = typer.Typer(help="The message templates (templates/).", no_args_is_help=True)


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

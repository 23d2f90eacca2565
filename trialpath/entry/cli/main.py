"""The `trialpath` command line: run the embedded service, the demo, the worker; read trials.

Errors are printed as one plain sentence and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import faulthandler
import signal

import typer

from trialpath.entry.cli import export, keys, kpis, outbox, service, templates, trial
from trialpath.entry.cli.agents import agents_app
from trialpath.entry.cli.common import err_console
from trialpath.entry.cli.db import db_app
from trialpath.entry.cli.journey import journey_app
from trialpath.entry.cli.simulate import simulate_command
from trialpath.entry.cli.tasks import tasks_app
from trialpath.operations.config import SettingsError
from trialpath.operations.history import history_app
from trialpath.operations.temporal import exit_process

app = typer.Typer(
    help="Trialpath: durable onboarding journeys for SaaS trial users.", no_args_is_help=True
)
app.command()(service.up)
app.command()(service.demo)
app.command()(service.worker)
app.command("codec-server")(service.codec_server)
app.command("export")(export.export_command)
app.command("audit")(export.audit)
app.add_typer(outbox.outbox_app, name="outbox")
app.add_typer(trial.trial_app, name="trial")
app.add_typer(templates.templates_app, name="templates")
app.add_typer(db_app, name="db")
app.add_typer(history_app, name="history")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(tasks_app, name="tasks")
app.add_typer(journey_app, name="journey")
app.add_typer(agents_app, name="agents")
app.add_typer(kpis.kpis_app, name="kpis")
app.command("simulate")(simulate_command)


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

"""The `trialpath` command line against the time-skipping server and a real database.

The commands run in this process (`cli`: typer's test runner, in a thread of its own, so the
test's worker keeps running): the same code from parsing the arguments to the exit code and
what is printed, without the second and a half of imports a new process pays each time.
What only a process shows (settings refused before any command runs, the worker and the API
starting) runs as a user runs it (`cli_process`)."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pkgutil
import re
import sys
import threading
import traceback
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner

import trialpath.entry.cli.main as cli_module
from tests.driver import TrialDriver, align
from trialpath.core.contract import Qualification, TrialProfile, workflow_id_for
from trialpath.core.journey import TrialInput
from trialpath.operations.config import Settings, get_settings
from workflows.trial import TrialWorkflow

TRIALPATH = str(Path(sys.executable).parent / "trialpath")


def _environment(settings: Settings, address: str) -> dict[str, str]:
    return {
        "TRIALPATH_DATA_DIR": str(settings.data_dir),
        "TRIALPATH_DATABASE_URL": settings.database_url,
        "TRIALPATH_TEMPORAL_ADDRESS": address,
        "TRIALPATH_TASK_QUEUE": settings.task_queue,
        "COLUMNS": "200",
    }


async def cli(settings: Settings, *args: str, address: str = "127.0.0.1:1") -> tuple[int, str, str]:
    """Runs `trialpath *args` here; returns its exit code, standard output and error (with the
    traceback of anything it raised but did not handle, as Python would print it)."""
    return await asyncio.to_thread(_invoke, _environment(settings, address), args)


_RUNNER = CliRunner()
CLI_MODULES = [
    importlib.import_module(f"trialpath.entry.cli.{m.name}")
    for m in pkgutil.iter_modules(importlib.import_module("trialpath.entry.cli").__path__)
]
"""Every command group's module: each holds the consoles it prints with."""
_INVOKING = threading.Lock()


def _invoke(environment: dict[str, str], args: tuple[str, ...]) -> tuple[int, str, str]:
    # One command at a time: the runner swaps sys.stdout and the environment for the process.
    with _INVOKING, pytest.MonkeyPatch.context() as patch:
        # The command line's consoles, as a process started with COLUMNS=200 would make them.
        console, err_console = Console(width=200), Console(width=200, stderr=True)
        for module in CLI_MODULES:
            if hasattr(module, "console"):
                patch.setattr(module, "console", console)
            if hasattr(module, "err_console"):
                patch.setattr(module, "err_console", err_console)
        get_settings.cache_clear()  # read from this command's environment
        try:
            result = _RUNNER.invoke(cli_module.app, list(args), env=environment)
        finally:
            get_settings.cache_clear()
    err = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        err += "Traceback (most recent call last):\n" + "".join(
            traceback.format_exception(*result.exc_info)
        )
    return result.exit_code, result.stdout, err


async def cli_process(
    settings: Settings, *args: str, address: str = "127.0.0.1:1"
) -> tuple[int, str, str]:
    """Runs `trialpath *args` as a user does, in a process of its own."""
    process = await asyncio.create_subprocess_exec(
        TRIALPATH,
        *args,
        env={**os.environ, **_environment(settings, address)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


@pytest.mark.takes(seconds=12)
async def test_trial_show_and_outbox_list(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, "cli-1", role="executive", urgency="this_week")
    await trial.start()
    await trial.at_day(1.5)

    code, out, err = await cli(settings, "trial", "show", "cli-1", "--json", address=address(env))
    assert code == 0, err
    status = json.loads(out)
    assert (status["user_id"], status["persona"], status["stage"]) == (
        "cli-1",
        "executive",
        "onboarding",
    )
    code, out, _ = await cli(settings, "trial", "show", "cli-1", address=address(env))
    assert code == 0
    assert "executive" in out and "success call" in out and "welcome/email" in out

    code, out, _ = await cli(settings, "outbox", "list", "--user", "cli-1", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    # Channels of one step go out concurrently: compare the first step as a set.
    assert {r["step"] for r in rows[:2]} == {"welcome/email", "welcome/in_app"}
    assert {r["user_id"] for r in rows} == {"cli-1"}
    code, out, _ = await cli(settings, "outbox", "list")
    assert code == 0 and "welcome/email" in out and "ada" not in out.lower().split("cli-1")[0]
    # Each message names its provider: in-app messages go to the inbox.
    assert any("welcome/in_app" in line and "inbox" in line for line in out.splitlines())

    # Out of Temporal's reach, the last recorded status still answers.
    await trial.signal("cancel")
    await trial.result()
    code, out, err = await cli(settings, "trial", "show", "cli-1", "--json")
    assert code == 0, err
    assert json.loads(out)["stage"] == "cancelled"
    assert "unreachable; showing the last recorded status" in err
    code, out, err = await cli(settings, "trial", "show", "cli-2")
    assert code == 1
    assert "cannot reach Temporal" in err and "Traceback" not in err


@pytest.mark.database_agnostic  # times shown from the workflow's clock (the database: above)
async def test_trial_show_and_the_summary_use_one_clock(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    """A demo trial runs at 4 s a journey day: `trial show` gives its times on that journey
    clock, in the user's time zone, as the workflow's summary does (the wall-clock times of a
    14-day trial would all fall within a minute)."""
    await align(env)
    profile = TrialProfile(
        user_id="cli-fast",
        name="Ada Lovelace",
        email="ada@example.com",
        timezone="Europe/Paris",
        qualification=Qualification(role="technical", urgency="this_month"),
        seconds_per_day=4.0,
    )
    handle = await env.client.start_workflow(
        TrialWorkflow.run,
        TrialInput(profile=profile),
        id=workflow_id_for("cli-fast"),
        task_queue=settings.task_queue,
    )
    await env.sleep(timedelta(seconds=4 * 0.5))
    # Stamped with the time they were sent, as the API relays them: on a busy machine the
    # worker may apply them a second later, six journey hours at this clock.
    sent_at = await env.get_current_time()
    events = [{"name": n} for n in ["integration_connected"] + ["api_call"] * 10]
    await handle.signal("events", {"events": events, "accepted_at": sent_at.isoformat()})
    await env.sleep(timedelta(seconds=4 * 1.0))

    code, out, err = await cli(
        settings, "trial", "show", "cli-fast", "--json", address=address(env)
    )
    assert code == 0, err
    summary = json.loads(out)["summary"]
    ends = re.search(r"Trial ends (\d{4}-\d\d-\d\d)", summary)
    call = re.search(r"on (\d{4}-\d\d-\d\d \d\d:\d\d) \(Europe/Paris\)", summary)
    assert ends and call, summary
    code, out, err = await cli(settings, "trial", "show", "cli-fast", address=address(env))
    assert code == 0, err
    rows = {
        cells[0].strip(): cells[1].strip()
        for line in out.splitlines()
        if len(cells := line.strip("│ ").split("│")) == 2
    }
    assert rows["times"].startswith("journey time in Europe/Paris; one journey day = 4 s")
    assert rows["trial ends"] == f"{ends.group(1)} (last day)"
    assert rows["success call"] == f"scheduled, {call.group(1)}, Camille"
    # Activated half a journey day after signup, that is 12 journey hours later.
    signup = await handle.describe()
    activated = datetime.strptime(rows["activated"].removeprefix("yes, at "), "%Y-%m-%d %H:%M")
    started = signup.start_time.astimezone(ZoneInfo("Europe/Paris")).replace(tzinfo=None)
    assert timedelta(hours=11) <= activated - started <= timedelta(hours=14)
    await handle.signal("cancel", {})
    await handle.result()


@pytest.mark.database_agnostic  # input errors, found before any database
async def test_clear_errors_never_tracebacks(settings: Settings) -> None:
    code, _, err = await cli(settings, "trial", "show", "someone@example.com")
    assert code == 2
    assert "looks like an email address" in err and "Traceback" not in err
    code, out, _ = await cli(settings, "outbox", "list", "--user", "nobody")
    assert code == 0
    assert "The outbox is empty for user nobody." in out
    code, _, err = await cli(settings, "outbox", "list", "--limit", "0")
    assert code == 2 and "Traceback" not in err


# Sixteen CLI processes one after the other: minutes on a loaded machine.
@pytest.mark.timeout(300)
@pytest.mark.takes(seconds=25)
@pytest.mark.database_agnostic  # the API's code (Trials), run on PostgreSQL in test_api
async def test_support_actions(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, "cli-act", role=None, urgency=None)
    await trial.start()
    where = address(env)

    async def run(*args: str) -> tuple[int, str, str]:
        return await cli(settings, "trial", *args, address=where)

    code, out, err = await run("qualify", "cli-act", "business", "team_coordination", "this_week")
    assert code == 0, err
    assert "business path" in out
    code, out, err = await run(
        "event", "cli-act", "workflow_created", "-p", "source=cli", "--id", "w1"
    )
    assert code == 0, err
    assert "recorded" in out
    code, out, _ = await run("event", "cli-act", "workflow_created", "--id", "w1")
    assert "already recorded" in out
    at = trial.iso(3.5)
    code, out, err = await run("call", "cli-act", "booked", "--at", at, "--agent", "Samir")
    assert code == 0, err
    assert "call_booked sent" in out
    assert (await run("extend", "cli-act", "5"))[0] == 0
    assert (await run("unsubscribe", "cli-act", "sms"))[0] == 0
    await trial.at_day(0.1)
    status = await trial.status()
    assert (status.persona, status.call.state, status.call.agent) == ("business", "booked", "Samir")
    assert status.events_seen == {"workflow_created": 1}
    assert status.unsubscribed == ["sms"]
    assert (status.trial_ends_at - trial.signup_at).days == 14 + 5

    # Bad input: a clear message and exit code 2, never a traceback.
    for args, needle in (
        (("extend", "cli-act", "61"), "less than or equal to 60"),
        (("call", "cli-act", "dance"), "action"),
        (("call", "cli-act", "booked"), "'at' is required"),
        (("qualify", "cli-act", "wizard", "integrations", "now"), "role"),
        (("event", "cli-act", "x", "-p", "novalue"), "key=value"),
        (("unsubscribe", "cli-act", "fax"), "channel"),
    ):
        code, _, err = await run(*args)
        assert code == 2, (args, err)
        assert needle in err and "Traceback" not in err, (args, err)
    code, _, err = await run("extend", "ghost", "3")
    assert code == 1 and "no trial for user ghost" in err
    # Erasing asks first; with no answer nothing happens.
    code, _, _ = await run("cancel", "cli-act", "--erase")
    assert code == 1
    assert (await trial.status()).stage == "onboarding"

    code, out, err = await run("convert", "cli-act", "team", "--mrr", "49")
    assert code == 0, err
    result = await trial.result()
    assert result.stage == "converted"
    code, _, err = await run("cancel", "cli-act")
    assert code == 1 and "has already ended" in err


def test_templates_preview_refuses_a_missing_folder_or_a_busy_port(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    trialpath = str(Path(sys.executable).parent / "trialpath")
    missing = subprocess.run(
        [trialpath, "templates", "preview", "--templates-dir", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2 and "does not exist" in " ".join(missing.stderr.split())
    assert "Traceback" not in missing.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = subprocess.run(
            [trialpath, "templates", "preview", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert taken.returncode == 2 and "already in use" in " ".join(taken.stderr.split())


@pytest.mark.takes(seconds=10)
@pytest.mark.database_agnostic  # Temporal histories only
async def test_history_export_then_replay(
    env: WorkflowEnvironment, settings: Settings, worker: Worker, tmp_path: Path
) -> None:
    await align(env)
    trial = TrialDriver(env, settings, "cli-history")
    await trial.start()
    await trial.at_day(1)
    await trial.signal("cancel")
    await trial.result()
    out = tmp_path / "cli-history.json"
    code, text, err = await cli(
        settings, "history", "export", "cli-history", "-o", str(out), address=address(env)
    )
    assert code == 0, err
    assert "Wrote" in text and json.loads(out.read_text())["events"]
    code, text, err = await cli(settings, "history", "replay", str(out))
    assert code == 0 and "ok" in text, err

    # A history the code cannot have produced (an activity swapped for another) is reported.
    history = json.loads(out.read_text())
    for event in history["events"]:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled:
            scheduled["activityType"]["name"] = "something_else"
            break
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(history))
    code, text, err = await cli(settings, "history", "replay", str(out), str(broken))
    assert code == 1 and "broken" in text and "1 of 2 histories no longer replay" in err

    code, _, err = await cli(settings, "history", "export", "nobody", address=address(env))
    assert code == 1 and "no workflow history for user nobody" in err
    code, _, err = await cli(settings, "history", "replay", str(tmp_path / "missing.json"))
    assert code == 2 and "Traceback" not in err


@pytest.mark.database_agnostic  # settings, read before any database
async def test_unusable_settings_are_named_not_a_traceback(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setenv("TRIALPATH_WORKER_ACTIVITY_THREADS", "many")
        code, out, err = await cli_process(settings, "trial", "show", "u1")
    assert code == 2
    assert "TRIALPATH_WORKER_ACTIVITY_THREADS" in err and "valid integer" in err
    assert "Traceback" not in out + err

    # Read when connecting to Temporal, by every command that does.
    with monkeypatch.context() as patch:
        patch.setenv("TRIALPATH_CODEC_KEYS", "not-a-key")
        for command in (("trial", "show", "u1"), ("history", "export", "u1")):
            code, out, err = await cli_process(settings, *command)
            assert code == 2, command
            assert "TRIALPATH_CODEC_KEYS" in err and "Traceback" not in out + err, command
    monkeypatch.setenv("TRIALPATH_TEMPORAL_TLS_CERT", str(settings.data_dir / "missing.pem"))
    code, out, err = await cli_process(settings, "history", "export", "u1")
    assert code == 2
    assert "set both TRIALPATH_TEMPORAL_TLS_CERT" in err and "Traceback" not in out + err


def test_the_worker_and_the_api_name_unusable_settings(tmp_path: Path) -> None:
    import subprocess

    env = {**os.environ, "TRIALPATH_DATA_DIR": str(tmp_path), "TRIALPATH_API_PORT": "eighty"}
    commands = {
        "worker": [sys.executable, "-m", "worker"],
        "api": [
            sys.executable,
            *("-m", "uvicorn", "--factory", "trialpath.entry.api.app:create_app"),
            *("--host", "127.0.0.1", "--port", "0"),
        ],
    }
    for name, command in commands.items():
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (name, done.stderr)
        assert "TRIALPATH_API_PORT" in done.stderr and "Traceback" not in done.stderr, name


async def test_agents_commands(settings: Settings) -> None:
    code, out, err = await cli(settings, "agents", "list", "--json")
    assert code == 0, err
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["Camille", "Julia", "Samir"]

    code, out, err = await cli(
        settings,
        "agents",
        "set",
        "Zoe",
        "--timezone",
        "Asia/Tokyo",
        "--start",
        "08:00",
        "--end",
        "12:00",
        "--days",
        "tue,mon",
        "--capacity",
        "3",
    )
    assert code == 0, err
    assert "Agent Zoe added" in out
    # Some settings changed, the others kept.
    code, out, err = await cli(settings, "agents", "set", "Zoe", "--capacity", "5")
    assert code == 0 and "Agent Zoe updated" in out, err
    code, out, _ = await cli(settings, "agents", "list", "--json")
    zoe = next(a for a in map(json.loads, out.splitlines()) if a["name"] == "Zoe")
    assert (zoe["timezone"], zoe["hours"], zoe["days"], zoe["daily_capacity"]) == (
        "Asia/Tokyo",
        {"start": "08:00", "end": "12:00"},
        ["mon", "tue"],
        5,
    )

    for args, problem in (
        (("--timezone", "Mars/Olympus"), "not an IANA time zone"),
        (("--start", "18:00", "--end", "09:00"), "hours.end must be after hours.start"),
        (("--days", "mon,someday"), "days"),
        (("--capacity", "0"), "daily_capacity"),
    ):
        code, _, err = await cli(settings, "agents", "set", "Zoe", *args)
        assert code == 2 and problem in err and "Traceback" not in err, (args, err)
    code, _, err = await cli(settings, "agents", "set", "no spaces")
    assert code == 2 and "agent name" in err and "Traceback" not in err

    code, _, err = await cli(settings, "agents", "remove", "Nobody")
    assert code == 1 and "there is no agent named 'Nobody'" in err
    code, out, err = await cli(settings, "agents", "remove", "Zoe")
    assert code == 0 and "Agent Zoe removed" in out, err
    code, out, _ = await cli(settings, "agents", "list", "--json")
    assert not next(a for a in map(json.loads, out.splitlines()) if a["name"] == "Zoe")["active"]
    code, out, _ = await cli(settings, "agents", "calls")
    assert code == 0 and "No calls booked" in out

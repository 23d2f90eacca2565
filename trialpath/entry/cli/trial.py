"""`trialpath trial`: look at one trial and act on it, as support does."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, TypeVar
from zoneinfo import ZoneInfo

import typer
from rich.table import Table
from sqlmodel import Session

from trialpath.core.contract import Stage, TrialStatus, check_user_id
from trialpath.core.definition import Persona
from trialpath.core.journey import JourneyClock
from trialpath.delivery.preferences import signing_secret
from trialpath.entry.cli.common import _client, _command, _run, console, err_console, fail
from trialpath.entry.commands import (
    Accepted,
    CallCommand,
    ConversionCommand,
    ExtensionCommand,
    NewEvent,
    QualifyCommand,
    TrialProblem,
    UnsubscribeCommand,
)
from trialpath.entry.trials import Trials, recorded_status
from trialpath.operations import audit as audit_log
from trialpath.operations.config import Settings, get_settings
from trialpath.operations.db import engine_for
from trialpath.operations.models import Trial
from trialpath.operations.temporal import connect

trial_app = typer.Typer(help="Look at one trial.", no_args_is_help=True)


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

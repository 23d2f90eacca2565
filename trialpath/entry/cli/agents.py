"""`trialpath agents`: the success-call agents' hours, time zone and capacity, and their calls.

The same operations as /v1/agents (`trialpath.support.agents`); a change is recorded in the audit
log as `cli:<login>`.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from trialpath.entry.cli.common import console, fail
from trialpath.operations import audit as audit_log
from trialpath.operations.config import get_settings
from trialpath.operations.db import engine_for
from trialpath.operations.models import utcnow
from trialpath.support.agents import (
    AgentProblem,
    AgentPublic,
    AgentSettings,
    booked_slots,
    check_name,
    journey_agents,
    list_agents,
    remove_agent,
    set_agent,
)

agents_app = typer.Typer(
    help="Success-call agents: hours, time zone, working days, daily capacity.",
    no_args_is_help=True,
)


def _table(agents: list[AgentPublic]) -> Table:
    table = Table(title=f"Agents ({len(agents)})", title_justify="left")
    for column in ("name", "time zone", "hours", "days", "calls a day", "calls to come", "active"):
        table.add_column(column)
    for agent in agents:
        table.add_row(
            agent.name,
            agent.timezone,
            f"{agent.hours.start}-{agent.hours.end}",
            ",".join(agent.days),
            str(agent.daily_capacity),
            str(agent.upcoming_calls),
            "yes" if agent.active else "no (removed)",
            style=None if agent.active else "dim",
        )
    return table


@agents_app.command("list")
def agents_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The agents (seeded from the journey's `[call] agents` the first time)."""
    settings = get_settings()
    agents = list_agents(engine_for(settings), journey_agents(settings))
    if as_json:
        for agent in agents:
            sys.stdout.write(agent.model_dump_json() + "\n")
        return
    if not agents:
        console.print("No agents: add one with `trialpath agents set NAME`.")
        return
    console.print(_table(agents))


@agents_app.command("set")
def agents_set(
    name: Annotated[str, typer.Argument(help="The agent's name.")],
    timezone: Annotated[
        str | None, typer.Option(help="IANA time zone of the hours, e.g. Europe/Paris.")
    ] = None,
    start: Annotated[str | None, typer.Option(help="Start of the working day, HH:MM.")] = None,
    end: Annotated[str | None, typer.Option(help="End of the working day, HH:MM.")] = None,
    days: Annotated[
        str | None, typer.Option(help="Working days, comma-separated: mon,tue,wed,thu,fri.")
    ] = None,
    capacity: Annotated[int | None, typer.Option(help="Calls a day at most (1-96).")] = None,
) -> None:
    """Add an agent, or change some of an agent's settings (a removed agent is back)."""
    settings = get_settings()
    engine = engine_for(settings)
    seed = journey_agents(settings)
    try:
        check_name(name)
    except AgentProblem as err:
        raise fail(str(err), 2) from err
    current = next((a for a in list_agents(engine, seed) if a.name == name), None)
    fields = current.model_dump(exclude={"name", "upcoming_calls"}) if current else {}
    hours = dict(fields.get("hours") or {"start": "09:00", "end": "17:00"})
    if start is not None:
        hours["start"] = start
    if end is not None:
        hours["end"] = end
    fields["hours"] = hours
    fields["active"] = True
    if timezone is not None:
        fields["timezone"] = timezone
    if days is not None:
        fields["days"] = [d.strip().lower() for d in days.split(",") if d.strip()]
    if capacity is not None:
        fields["daily_capacity"] = capacity
    try:
        wanted = AgentSettings.model_validate(fields)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()
        )
        audit_log.record(engine, audit_log.cli_actor(), "cli", "agent.set", None, 422)
        raise fail(problems, 2) from err
    agent, created = set_agent(engine, name, wanted, seed)
    audit_log.record(engine, audit_log.cli_actor(), "cli", "agent.set", None, 200)
    console.print(f"Agent {name} {'added' if created else 'updated'}.")
    console.print(_table([agent]))


@agents_app.command("remove")
def agents_remove(name: Annotated[str, typer.Argument(help="The agent's name.")]) -> None:
    """Remove an agent: offered no new calls; the calls already booked keep them."""
    settings = get_settings()
    engine = engine_for(settings)
    agent = remove_agent(engine, name, journey_agents(settings))
    audit_log.record(
        engine, audit_log.cli_actor(), "cli", "agent.remove", None, 404 if agent is None else 200
    )
    if agent is None:
        raise fail(f"there is no agent named {name!r} (`trialpath agents list`)", 1)
    console.print(
        f"Agent {name} removed: no new calls; {agent.upcoming_calls} booked still to come."
    )


@agents_app.command("calls")
def agents_calls(
    all_: Annotated[bool, typer.Option("--all", help="Past calls too.")] = False,
) -> None:
    """The calls booked in the agents' calendars, by agent (times in UTC)."""
    settings = get_settings()
    since: datetime | None = None if all_ else utcnow()
    slots = booked_slots(engine_for(settings), since)
    if not slots:
        console.print("No calls booked" + ("." if all_ else " from now on."))
        return
    table = Table(title=f"Booked calls ({len(slots)})", title_justify="left")
    for column in ("agent", "starts (UTC)", "ends", "trial"):
        table.add_column(column)
    for slot in slots:
        table.add_row(
            slot.agent,
            f"{slot.start_at:%Y-%m-%d %H:%M}",
            f"{slot.end_at:%H:%M}",
            slot.workflow_id.removeprefix("trial-"),
        )
    console.print(table)

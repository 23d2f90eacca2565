"""`trialpath simulate`: the journey played by a synthetic (or recorded) population on the
time-skipping server, reported as a table, JSON or an HTML page with charts (docs/simulate.md)."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from trialpath.core.definition import DefinitionError, load_definition
from trialpath.entry.cli.common import console, err_console, fail, moment
from trialpath.growth.simulate import SimulationError, simulate
from trialpath.growth.simulation_report import (
    Difference,
    Simulation,
    compare,
    from_dict,
    problems,
)

FORMATS = ("table", "json", "html")


def simulate_command(
    journey: Annotated[
        Path | None,
        typer.Option(help="The journey to simulate; default: the configured one."),
    ] = None,
    against: Annotated[
        Path | None,
        typer.Option(
            help="Compare with this journey (simulated with the same users) or with a report "
            "saved with --format json."
        ),
    ] = None,
    population: Annotated[
        int, typer.Option(min=1, max=100_000, help="Synthetic trials to play.")
    ] = 200,
    seed: Annotated[int, typer.Option(help="The population's seed: same seed, same users.")] = 7,
    recorded: Annotated[
        str | None,
        typer.Option(
            help="Instead of synthetic users, replay the trials that signed up in this period "
            "(FROM..TO, ISO dates; TO defaults to now) from the database."
        ),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table, json or html.")] = "table",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the report to this file.")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Exit 1 when a drip step is never reached, a user gets more marketing "
            "messages in a day than the cap, or messages per user double against --against.",
        ),
    ] = False,
) -> None:
    """Play a population through the real journey workflow and activities on the time-skipping
    server (every channel to the outbox), then report messages per step and channel, messages
    held by the send window or the daily cap, stale skips, calls per agent and day and the
    funnel, per persona and arm; with --against, both side by side."""
    from trialpath.operations.config import get_settings

    if output not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}, got {output!r}", 2)
    settings = get_settings()
    journey = journey or settings.journey_file
    for path in (journey, against):
        if path is not None and not path.is_file():
            raise fail(f"{path} does not exist", 2)
    try:
        load_definition(journey)
        if against is not None and against.suffix != ".json":
            load_definition(against)
    except DefinitionError as err:
        raise fail(str(err), 2) from err
    users = None
    if recorded is not None:
        users = _recorded(settings, recorded)
        population = len(users)
    baseline = None
    if against is not None and against.suffix == ".json":
        try:
            baseline = from_dict(json.loads(against.read_text()))
        except (ValueError, SimulationError) as err:
            raise fail(f"{against}: {err}", 2) from err
    runs = [journey] + ([against] if against is not None and baseline is None else [])
    results = asyncio.run(_simulate(runs, population, seed, settings.templates_dir, users))
    mine = results[0]
    theirs = baseline or (results[1] if len(results) > 1 else None)
    found = problems(mine, theirs)
    if output == "json":
        text = json.dumps(_as_json(mine, theirs, found), indent=2) + "\n"
    elif output == "html":
        text = html_report(mine, theirs, found)
    else:
        text = ""
    if out is not None:
        try:
            out.write_text(text if output != "table" else _plain(mine, theirs, found))
        except OSError as err:
            raise fail(f"cannot write {out}: {err.strerror or err}") from err
        err_console.print(_headline(mine), highlight=False)
        verdict = "no problem" if not found else f"{len(found)} problem(s)"
        err_console.print(f"{verdict}; report written to {out}", highlight=False)
    elif output == "table":
        show_tables(console, mine, theirs, found)
    else:
        typer.echo(text, nl=False)
    if check and found:
        for problem in found:
            err_console.print(f"[red]check failed:[/] {problem}", soft_wrap=True, highlight=False)
        raise typer.Exit(1)


def _recorded(settings: Any, period: str) -> list[Any]:
    from trialpath.growth.simulate import recorded
    from trialpath.operations.db import engine_for

    first, _, last = period.partition("..")

    since = moment(first, "--recorded")
    until = moment(last, "--recorded") if last.strip() else datetime.now(UTC) + timedelta(seconds=1)
    if until <= since:
        raise fail("--recorded: the period ends before it starts", 2)
    users = recorded(engine_for(settings), since, until)
    if not users:
        raise fail(f"--recorded: no trial signed up between {since} and {until}", 2)
    return users


async def _simulate(
    journeys: list[Path], population: int, seed: int, templates: Path, users: Any
) -> list[Simulation]:
    found = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("trials ended"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        for path in journeys:
            task = progress.add_task(f"Simulating {path.name}", total=population)

            def advance(n: int, task: Any = task) -> None:
                progress.advance(task, n)

            try:
                found.append(
                    await simulate(
                        path,
                        population=population,
                        seed=seed,
                        templates=templates,
                        users=users,
                        progress=advance,
                    )
                )
            except SimulationError as err:
                raise fail(str(err)) from err
    return found


def _as_json(mine: Simulation, theirs: Simulation | None, found: list[str]) -> dict[str, Any]:
    if theirs is None:
        return {**mine.as_dict(), "problems": found}
    return {
        "journey": mine.as_dict(),
        "against": theirs.as_dict(),
        "differences": {
            persona: [
                {"what": d.what, "journey": round(d.journey, 3), "against": round(d.against, 3)}
                for d in rows
                if d.changed
            ]
            for persona, rows in compare(mine, theirs).items()
        },
        "problems": found,
    }


# --- table ---------------------------------------------------------------------------------


def _headline(sim: Simulation) -> str:
    return (
        f"{sim.population} trials of {sim.journey} (version {sim.version}, seed {sim.seed}) "
        f"from {sim.start:%Y-%m-%d %H:%M} UTC, simulated in {sim.seconds:.0f} s "
        f"({sim.trials_per_second:.1f} trials/s"
        + (f", {sim.replayed} part(s) played again" if sim.replayed else "")
        + ")"
    )


def _groups_table(sim: Simulation) -> Table:
    table = Table(title="Per persona and arm", title_justify="left")
    for name in ("persona/arm", "trials", "msgs/user", "held: window", "held: cap", "stale"):
        table.add_column(name, justify="left" if name == "persona/arm" else "right")
    table.add_column("activated", justify="right")
    table.add_column("converted", justify="right")
    for key, g in sorted(sim.groups.items()):
        n = g.trials or 1
        table.add_row(
            key,
            str(g.trials),
            f"{g.per_user():.1f}",
            str(g.held_window),
            str(g.held_cap),
            str(sum(g.stale.values())),
            f"{g.funnel['activated']} ({100 * g.funnel['activated'] / n:.0f} %)",
            f"{g.funnel['converted']} ({100 * g.funnel['converted'] / n:.0f} %)",
        )
    return table


def _steps_table(sim: Simulation) -> Table:
    personas = sim.by_persona()
    table = Table(title="Messages per step and channel", title_justify="left")
    table.add_column("step/channel")
    for persona in personas:
        table.add_column(persona, justify="right")
    steps = sorted({s for g in personas.values() for s in g.messages})
    for step in steps:
        table.add_row(step, *(str(g.messages[step] or "") for g in personas.values()))
    stale = sorted({s for g in personas.values() for s in g.stale})
    for step in stale:
        table.add_row(
            f"[dim]{step} (stale skips)[/]", *(str(g.stale[step] or "") for g in personas.values())
        )
    return table


def _calls_table(sim: Simulation) -> Table:
    table = Table(title="Success calls booked per agent and day", title_justify="left")
    days = sorted({key.split("/")[1] for key in sim.calls})
    agents = sorted({key.split("/")[0] for key in sim.calls})
    table.add_column("agent")
    for day in days:
        table.add_column(day[5:], justify="right")
    for agent in agents:
        table.add_row(agent, *(str(sim.calls.get(f"{agent}/{day}", "")) for day in days))
    return table


def _difference_table(persona: str, rows: list[Difference]) -> Table:
    table = Table(title=f"{persona}: journey against the other", title_justify="left")
    table.add_column("per user")
    table.add_column("journey", justify="right")
    table.add_column("against", justify="right")
    table.add_column("difference", justify="right")
    unchanged = 0
    for i, d in enumerate(rows):
        if i >= 6 and not d.changed:
            unchanged += 1
            continue
        style = "bold red" if d.problem else "bold yellow" if d.changed else ""
        delta = d.journey - d.against
        table.add_row(
            d.what,
            f"{d.journey:.2f}",
            f"{d.against:.2f}",
            f"[{style}]{delta:+.2f}[/]" if style else "",
        )
    if unchanged:
        table.caption = f"{unchanged} step/channel row(s) unchanged"
    return table


def show_tables(
    target: Console, mine: Simulation, theirs: Simulation | None, found: list[str]
) -> None:
    target.print(_headline(mine), highlight=False)
    if theirs is not None:
        target.print(f"against: {_headline(theirs)}", highlight=False)
    target.print(_groups_table(mine))
    if theirs is None:
        target.print(_steps_table(mine))
    else:
        for persona, rows in compare(mine, theirs).items():
            target.print(_difference_table(persona, rows))
    if mine.calls:
        target.print(_calls_table(mine))
    if found:
        for problem in found:
            target.print(f"[red]problem:[/] {problem}", highlight=False)
    else:
        target.print(
            "[green]no problem:[/] every drip step reached, the daily cap kept"
            + (", messages per user not doubled" if theirs is not None else ""),
            highlight=False,
        )


def _plain(mine: Simulation, theirs: Simulation | None, found: list[str]) -> str:
    target = Console(record=True, width=160, file=io.StringIO())
    show_tables(target, mine, theirs, found)
    return target.export_text()


# --- HTML ----------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Simulation of {{ mine.journey_name }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #1d2733 }
table { border-collapse: collapse; margin: .5rem 0 1.5rem } caption { text-align: left;
font-weight: 600; padding: .3rem 0 } td, th { border-bottom: 1px solid #dde3ea;
padding: .2rem .6rem; text-align: right } td:first-child, th:first-child { text-align: left }
.changed { background: #fff3c4; font-weight: 600 } .problem { background: #ffd6d6;
font-weight: 700 } .charts svg { width: 48%; height: auto } .bad { color: #b00020 }
.good { color: #18794e } .muted { color: #6b7785 }
</style></head><body>
<h1>Simulation: {{ mine.journey_name }}</h1>
<p>{{ mine.headline }}</p>
{% if theirs %}<p>Against: {{ theirs.headline }}</p>{% endif %}
{% if problems %}<ul class="bad">{% for p in problems %}<li>{{ p }}</li>{% endfor %}</ul>
{% else %}<p class="good">No problem: every drip step reached, the daily cap kept.</p>{% endif %}
<div class="charts">{% for chart in charts %}{{ chart | safe }}{% endfor %}</div>
{% for sim in [mine, theirs] if sim %}
<table><caption>{{ sim.label }}: per persona and arm</caption>
<tr><th>persona/arm</th><th>trials</th><th>messages/user</th><th>held: send window</th>
<th>held: daily cap</th><th>stale skips</th><th>activated</th><th>converted</th></tr>
{% for key, g in sim.groups %}<tr><td>{{ key }}</td><td>{{ g.trials }}</td>
<td>{{ '%.1f' % g.per_user() }}</td><td>{{ g.held_window }}</td><td>{{ g.held_cap }}</td>
<td>{{ g.stale.values() | sum }}</td><td>{{ g.funnel['activated'] }}</td>
<td>{{ g.funnel['converted'] }}</td></tr>{% endfor %}</table>
{% endfor %}
{% if differences %}{% for persona, rows in differences %}
<table><caption>{{ persona }}: per user, journey against the other</caption>
<tr><th></th><th>journey</th><th>against</th><th>difference</th></tr>
{% for d in rows %}<tr class="{{ 'problem' if d.problem else 'changed' if d.changed else '' }}">
<td>{{ d.what }}</td><td>{{ '%.2f' % d.journey }}</td><td>{{ '%.2f' % d.against }}</td>
<td>{{ '%+.2f' % (d.journey - d.against) if d.changed else '' }}</td></tr>{% endfor %}
</table>{% endfor %}
{% else %}
<table><caption>Messages per step and channel</caption>
<tr><th>step/channel</th>{% for p in personas %}<th>{{ p }}</th>{% endfor %}</tr>
{% for step in steps %}<tr><td>{{ step }}</td>{% for p in personas %}
<td>{{ mine.personas[p].messages[step] or '' }}</td>{% endfor %}</tr>{% endfor %}
{% for step in stale %}<tr class="muted"><td>{{ step }} (stale skips)</td>{% for p in personas %}
<td>{{ mine.personas[p].stale[step] or '' }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endif %}
{% if calls %}<table><caption>Success calls booked per agent and day</caption>
<tr><th>agent</th>{% for d in days %}<th>{{ d }}</th>{% endfor %}</tr>
{% for a in agents %}<tr><td>{{ a }}</td>{% for d in days %}
<td>{{ calls.get(a ~ '/' ~ d, '') }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
</body></html>
"""


def html_report(mine: Simulation, theirs: Simulation | None, found: list[str]) -> str:
    from jinja2 import Environment

    from trialpath.growth.charts import bars_chart, funnel_chart

    def view(sim: Simulation, label: str) -> dict[str, Any]:
        return {
            "label": label,
            "journey_name": Path(sim.journey).name,
            "headline": _headline(sim),
            "groups": sorted(sim.groups.items()),
            "personas": sim.by_persona(),
        }

    personas = mine.by_persona()
    funnels = {
        p: [(step, g.funnel[step]) for step in ("signed_up", "activated", "converted")]
        for p, g in personas.items()
    }
    charts = [funnel_chart(funnels)]
    if theirs is not None:
        other = theirs.by_persona()
        names = sorted(set(personas) | set(other))
        charts.append(
            bars_chart(
                "messages",
                "Messages per user, by persona",
                names,
                {
                    "journey": [personas[p].per_user() if p in personas else 0 for p in names],
                    "against": [other[p].per_user() if p in other else 0 for p in names],
                },
            )
        )
    else:
        names = list(personas)
        charts.append(
            bars_chart(
                "messages",
                "Messages per user, by persona",
                names,
                {"journey": [personas[p].per_user() for p in names]},
            )
        )
    days = sorted({key.split("/")[1] for key in mine.calls})
    page = Environment(autoescape=True).from_string(PAGE)
    return page.render(
        mine=view(mine, "journey"),
        theirs=view(theirs, "against") if theirs is not None else None,
        problems=found,
        charts=[c for c in charts if c],
        differences=sorted(compare(mine, theirs).items()) if theirs is not None else None,
        personas=list(personas),
        steps=sorted({s for g in personas.values() for s in g.messages}),
        stale=sorted({s for g in personas.values() for s in g.stale}),
        calls=mine.calls,
        days=days,
        agents=sorted({key.split("/")[0] for key in mine.calls}),
    )

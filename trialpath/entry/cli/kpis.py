"""`trialpath kpis`: the growth numbers, activation candidates, experiments' power."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from trialpath.entry.cli.common import console, fail
from trialpath.operations.config import get_settings
from trialpath.operations.db import engine_for

# --- kpis ------------------------------------------------------------------------------------


kpis_app = typer.Typer(
    help="The onboarding KPIs of the trials signed up in a period (definitions: docs/kpis.md).",
    invoke_without_command=True,
)


@kpis_app.callback()
def kpis(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(help="Trials signed up on or after this day (YYYY-MM-DD, or ISO date-time)."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Trials signed up up to this day, included.")
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            help="Split: persona, cohort (ISO week of signup), arm, channel, source "
            "(where users came from), qualifier or journey (the journey version)."
        ),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    experiment: Annotated[
        bool,
        typer.Option(
            "--experiment",
            help="Also compare the experiment's arms with the control (csv: only that).",
        ),
    ] = False,
    control: Annotated[str, typer.Option(help="The control arm of --experiment.")] = "generic",
) -> None:
    """The onboarding KPIs of the trials signed up in a period (definitions: docs/kpis.md).

    Rows whose n (denominator) is under 30 are dimmed: too few users to read much into.
    Without a subcommand it prints them; the subcommands answer other growth questions."""
    if ctx.invoked_subcommand is not None:
        return
    from sqlalchemy.exc import SQLAlchemyError

    from trialpath.core.definition import DefinitionError
    from trialpath.growth.experiments import arm_sizes, experiment_note, experiment_report
    from trialpath.growth.kpis import KpiError, check_split, compute_kpis, make_filters, to_csv

    if output not in ("table", "csv", "json"):
        raise fail(f"--format must be table, csv or json, got {output!r}", 2)
    try:
        split = check_split(by)
        filters = make_filters(since, until)
    except KpiError as err:
        raise fail(str(err), 2) from err
    engine = engine_for(get_settings())
    try:
        values = compute_kpis(engine, filters, split)
        note = experiment_note(arm_sizes(engine, filters), control) if experiment else None
        comparisons = experiment_report(engine, filters, control) if experiment else []
    except (KpiError, DefinitionError) as err:
        raise fail(str(err), 2) from err
    except SQLAlchemyError as err:
        raise fail(f"cannot read the KPIs from the database: {err}") from err
    if output == "csv":
        sys.stdout.write(to_csv(comparisons if experiment else values))
    elif output == "json":
        answer: dict[str, Any] = {
            "filters": filters.as_dict(),
            "by": split,
            "kpis": [v.as_dict() for v in values],
        }
        if experiment:
            answer["experiment"] = [c.as_dict() for c in comparisons]
            answer["experiment_note"] = note
        sys.stdout.write(json.dumps(answer, indent=2, ensure_ascii=False) + "\n")
    else:
        console.print(_kpi_table(values, filters.since, filters.until, split))
        if any(v.n < 30 for v in values):
            console.print("[dim]Dimmed: n < 30, too few users to read much into the value.[/]")
        if experiment:
            if note:
                console.print(f"Experiment: {note}.")
            else:
                console.print(_experiment_table(comparisons, control))
                # Verdicts below the table, not in it: they stay readable in a narrow terminal.
                for c in comparisons:
                    console.print(f"{c.kpi}, {c.arm}: {c.verdict}", soft_wrap=True, highlight=False)


@kpis_app.command("discover")
def kpis_discover(
    since: Annotated[
        str | None, typer.Option(help="Trials signed up on or after this day (YYYY-MM-DD).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Trials signed up up to this day.")] = None,
    top: Annotated[int, typer.Option(help="How many rules to show.")] = 10,
    counts: Annotated[str, typer.Option(help="The N to try, comma-separated.")] = "1,2,3,5,10",
    days: Annotated[str, typer.Option(help="The D to try (journey days).")] = "1,3,7,14",
    min_users: Annotated[
        int, typer.Option(help="Leave out rules reached (or missed) by fewer users.")
    ] = 10,
    output: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """Which early behaviour predicts paying: rules "event X at least N times within D days"
    ranked by how well they separate buyers from the others (docs/kpis.md), against the
    journey's own activation rule."""
    import csv
    import io

    from sqlalchemy.exc import SQLAlchemyError

    from trialpath.growth.discover import discover
    from trialpath.growth.kpis import KpiError, make_filters

    if output not in ("table", "json", "csv"):
        raise fail(f"--format must be table, json or csv, got {output!r}", 2)
    try:
        filters = make_filters(since, until)
        grid_counts = [int(v) for v in counts.split(",") if v.strip()]
        grid_days = [int(v) for v in days.split(",") if v.strip()]
        found = discover(
            engine_for(get_settings()),
            filters,
            counts=grid_counts,
            days=grid_days,
            min_users=min_users,
            top=top,
        )
    except (KpiError, ValueError) as err:
        raise fail(str(err), 2) from err
    except SQLAlchemyError as err:
        raise fail(f"cannot read the trials from the database: {err}") from err
    rows = [*found.candidates, *([found.configured] if found.configured else [])]
    if output == "json":
        answer = {
            "filters": filters.as_dict(),
            "users": found.users,
            "buyers": found.buyers,
            "tried": found.tried,
            "note": found.note,
            "candidates": [c.as_dict() for c in found.candidates],
            "configured": found.configured.as_dict() if found.configured else None,
        }
        sys.stdout.write(json.dumps(answer, indent=2, ensure_ascii=False) + "\n")
        return
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        header = "rank,rule,users reached,share,precision,recall,others,lift,separation"
        writer.writerow([*header.split(","), "separation low", "separation high"])
        for c in rows:
            writer.writerow(
                [
                    c.rank,
                    c.rule,
                    c.reached,
                    f"{c.share:.4f}",
                    f"{c.precision:.4f}",
                    f"{c.recall:.4f}",
                    f"{c.others:.4f}",
                    "" if c.lift is None else f"{c.lift:.3f}",
                    f"{c.separation:.4f}",
                    f"{c.separation_ci[0]:.4f}",
                    f"{c.separation_ci[1]:.4f}",
                ]
            )
        sys.stdout.write(buffer.getvalue())
        return
    if found.note:
        console.print(f"Nothing to rank: {found.note}.")
        return
    table = Table(
        "#",
        "Rule",
        "Reached",
        "Bought if reached (95 % CI)",
        "Of buyers",
        "Others",
        "Lift",
        "Separation (95 % CI)",
        title=f"What predicts paying: {found.users} finished trials, {found.buyers} bought, "
        f"{found.tried} rules tried",
    )
    for c in rows:
        style = "bold" if c.event is None else None
        table.add_row(
            str(c.rank),
            c.rule,
            f"{c.share:.0%} ({c.reached})",
            f"{c.precision:.0%} ({c.precision_ci[0]:.0%}–{c.precision_ci[1]:.0%})",
            f"{c.recall:.0%}",
            f"{c.others:.0%}",
            "—" if c.lift is None else f"×{c.lift:.1f}",
            f"{c.separation * 100:+.0f} pts ({c.separation_ci[0] * 100:+.0f} to "
            f"{c.separation_ci[1] * 100:+.0f})",
            style=style,
        )
    console.print(table)
    console.print(
        "[dim]Ranked by the low end of the separation's interval. Correlation, not cause: "
        "test a new activation rule in an experiment before adopting it.[/]"
    )


@kpis_app.command("power")
def kpis_power(
    baseline: Annotated[float, typer.Option(help="The control's rate now, e.g. 0.2 for 20 %.")],
    lift: Annotated[
        float,
        typer.Option(help="The lift to detect: 0.05 = +5 points, or with --relative 0.1 = +10 %."),
    ],
    relative: Annotated[bool, typer.Option("--relative", help="--lift is relative.")] = False,
    alpha: Annotated[float, typer.Option(help="Two-sided significance level.")] = 0.05,
    power: Annotated[float, typer.Option(help="Chance to detect the lift if it is real.")] = 0.8,
    arms: Annotated[int, typer.Option(help="Arms, control included.")] = 2,
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """How many users an experiment on a rate needs before it can show a planned lift."""
    from dataclasses import asdict

    from trialpath.growth.stats import plan_power

    if output not in ("table", "json"):
        raise fail(f"--format must be table or json, got {output!r}", 2)
    try:
        plan = plan_power(baseline, lift, relative=relative, alpha=alpha, power=power, arms=arms)
    except ValueError as err:
        raise fail(str(err), 2) from err
    if output == "json":
        sys.stdout.write(json.dumps({**asdict(plan), "total": plan.total}, indent=2) + "\n")
        return
    console.print(
        f"From {plan.baseline:.1%} to {plan.target:.1%} (Cohen's h {plan.cohen_h:.3f}), "
        f"two-sided at {plan.alpha:g} with {plan.power:.0%} power:\n"
        f"  [b]{plan.per_arm:,}[/] users per arm, {plan.total:,} in all ({plan.arms} arms).\n"
        f"  [dim]Cohen's arcsine method: {plan.per_arm_arcsine:,} per arm.[/]",
        highlight=False,
    )
    if plan.arms > 2:
        console.print(
            "[dim]Each arm against the control, without correction for the several comparisons.[/]"
        )


def _kpi_table(
    values: list[Any], since: datetime | None, until: datetime | None, split: str | None
) -> Table:
    def day(at: datetime) -> str:
        return f"{at:%Y-%m-%d}" if at.time() == datetime.min.time() else f"{at:%Y-%m-%d %H:%M}"

    period = f" from {day(since)}" if since else ""
    if until is not None and until.time() == datetime.min.time():
        period += f" to {day(until - timedelta(days=1))}"  # `until` is exclusive
    elif until is not None:
        period += f" before {day(until)}"
    title = f"Onboarding KPIs, trials signed up{period or ' at any time'}"
    title += f", by {split}" if split else ""
    table = Table(title=title, title_justify="left")
    table.add_column("KPI", no_wrap=True)
    table.add_column("group", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("n", justify="right")
    table.add_column("detail")
    for v in values:
        # Counts only: the rest (distributions, assumptions) is in --format json.
        detail = ", ".join(f"{k} {x}" for k, x in v.detail.items() if type(x) is int)
        if "monthly_churn" in v.detail:  # the CLTV's assumption, next to the figure
            detail = f"assuming {v.detail['monthly_churn']:.1%} monthly churn"
        value = _kpi_number(v.value, v.unit)
        table.add_row(v.kpi, v.group, value, str(v.n), detail, style="dim" if v.n < 30 else None)
    return table


def _kpi_number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return {
        "%": f"{value:.1f} %",
        "hours": f"{value:.1f} h",
        "score": f"{value:.2f}",
        "EUR": f"{value:,.0f} €",
    }.get(unit, f"{value:.2f}")


def _experiment_table(comparisons: list[Any], control: str) -> Table:
    table = Table(title=f"Experiment: each arm against {control}", title_justify="left")
    # Names fold before numbers get cut, in a narrow terminal.
    table.add_column("KPI", overflow="fold")
    table.add_column("arm", overflow="fold")
    for column in ("value", control, "n", "diff", "95 % CI", "p"):
        table.add_column(column, justify="right", no_wrap=True)
    for c in comparisons:
        unit = "%" if c.unit == "pts" else c.unit
        interval = "-"
        if c.ci_low is not None and c.ci_high is not None:
            interval = f"{c.ci_low:+.1f} to {c.ci_high:+.1f}"
        table.add_row(
            c.kpi,
            c.arm,
            _kpi_number(c.value, unit),
            _kpi_number(c.control_value, unit),
            f"{c.n} / {c.control_n}",
            "-" if c.diff is None else f"{c.diff:+.1f}",  # in the value's unit (pts for %)
            interval,
            "-" if c.p_value is None else f"{c.p_value:.3f}",
            style="dim" if min(c.n, c.control_n) < 30 else None,
        )
    return table

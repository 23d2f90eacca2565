"""What the dashboard page shows: `render_page` with its figures, KPI cards, experiment
comparisons and persona table, and how their values are written (`formatted`, `difference`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup
from sqlalchemy import Engine

from trialpath.entry.api.dashboard.period import Period
from trialpath.entry.api.dashboard.templates import PAGES
from trialpath.growth import charts, experiments, kpis
from trialpath.growth.discover import discover


def render_page(engine: Engine, period: Period, signed_in: bool = True) -> str:
    values: dict[str, Any] = {"period": period, "signed_in": signed_in, "small_n": kpis.SMALL_N}
    if period.error:
        return PAGES.get_template("dashboard.html.j2").render(**values)
    filters = period.filters
    funnel = kpis.funnel(engine, filters)
    funnel.pop(kpis.ALL, None)  # the chart compares personas; the cards give the totals
    figures = [
        Figure(
            "funnel",
            "Activation funnel",
            "Share of each persona's sign-ups reaching each step (each step counts only the "
            "trials that reached the ones before it); bar labels are counts.",
            charts.funnel_chart(funnel),
        ),
        Figure(
            "ttfv",
            "Time to first value",
            "Journey hours from sign-up to the persona's first-value milestone; boxes show "
            "the quartiles and median, dots every trial that reached it.",
            charts.ttfv_chart(kpis.ttfv_hours(engine, filters)),
        ),
        Figure(
            "retention",
            "Retention by cohort",
            "Share of each weekly sign-up cohort still active on or after each day; a day "
            "shows once every trial of the cohort has lived it.",
            charts.retention_chart(kpis.retention_curves(engine, filters)),
        ),
    ]
    report = experiments.experiment_report(engine, filters)
    headline = kpis.headline(engine, filters)
    return PAGES.get_template("dashboard.html.j2").render(
        **values,
        has_trials=any(value.n for value in headline.values()),
        clock_note=clock_note(kpis.clocks(engine, filters)),
        cards=[Card.of(value) for value in headline.values()],
        figures=figures,
        experiment=[Comparison.of(row) for row in report],
        experiment_note=(
            None if report else experiments.experiment_note(experiments.arm_sizes(engine, filters))
        ),
        persona_table=PivotTable.of(kpis.compute_kpis(engine, filters, by="persona")),
        discovery=discover(engine, filters, top=5),
    )


@dataclass(frozen=True)
class Figure:
    chart: str
    title: str
    caption: str
    svg: str | None

    @property
    def markup(self) -> Markup:
        # Safe: markup matplotlib wrote from our own labels, group names and numbers.
        return Markup(self.svg or "")


LABELS = {
    "trials": "Trials",
    "time_to_first_value": "Time to first value",
    "ttfv_median": "Time to first value (median)",
    "ttfv_p90": "Time to first value (p90)",
    "activation_rate": "Activation rate",
    "onboarding_completion": "Onboarding completion",
    "adoption_rate": "Adoption rate",
    "time_to_proficiency": "Time to proficiency (median)",
    "retention_7d": "7-day retention",
    "trial_to_paid": "Trial-to-paid conversion",
    "churn_rate": "Trial churn",
    "csat": "CSAT (1–5)",
    "ces": "CES (1–7)",
    "upsell_rate": "Upsell / cross-sell",
    "referral_rate": "Referral rate",
    "cltv": "Customer lifetime value",
    "messages_per_user": "Messages per user",
    "unsubscribe_rate": "Unsubscribe rate",
    "qualifier_answer_rate": "Qualifier answered",
    "support_task_rate": "Trials needing a human",
    "support_reach_rate": "Support reached the user",
}


def label(kpi: str) -> str:
    return LABELS.get(kpi, kpi.replace("_", " ").capitalize())


def formatted(value: float | None, unit: str) -> str:
    """A KPI value as the page shows it; `—` when there is nothing to measure yet."""
    if value is None:
        return "—"
    if unit in ("%", "pts"):  # a rate, in percent (an experiment row says `pts`)
        return f"{value:.1f} %"
    if unit == "hours":
        return duration(value)
    if unit == "count":
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}"
    if unit == "score":
        return f"{value:.2f}"
    if unit == "EUR":
        return f"€{value:,.0f}"
    return f"{value:,.2f} {unit}"


def difference(value: float | None, unit: str) -> str:
    """Arm minus control: rates in percentage points, the rest in the KPI's unit."""
    if value is None:
        return "—"
    sign = "+" if value >= 0 else "−"
    if unit in ("%", "pts"):
        return f"{sign}{abs(value):.1f} pts"
    if unit == "hours":
        return sign + duration(abs(value))
    return f"{sign}{abs(value):.2f}"


def duration(hours: float) -> str:
    """Journey hours as a person reads them: `19.2 h` up to two days, then `3.5 days`."""
    if abs(hours) < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def clock_note(seconds_per_day: list[float]) -> str | None:
    """What the durations mean when the trials ran on an accelerated clock; None in real
    time."""
    fast = [s for s in seconds_per_day if s != 86400.0]
    if not fast:
        return None
    speeds = " and ".join(f"{s:g} s" for s in fast)
    return (
        f"Durations and days are journey time: these trials ran on an accelerated clock "
        f"({speeds} of real time per journey day), and read as they would in real time."
    )


def p_value(value: float | None) -> str:
    if value is None:
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


@dataclass(frozen=True)
class Card:
    kpi: str
    label: str
    value: float | None
    shown: str
    n: int
    note: str

    @classmethod
    def of(cls, value: kpis.KpiValue) -> Card:
        reached = value.detail.get("reached")
        return cls(
            kpi=value.kpi,
            label=label(value.kpi),
            value=value.value,
            shown=formatted(value.value, value.unit),
            n=value.n,
            note=f"{reached} reached it" if reached is not None else "",
        )


@dataclass(frozen=True)
class Comparison:
    kpi: str
    label: str
    arm: str
    control: str
    value: str
    n: int
    control_value: str
    control_n: int
    difference: str
    interval: str
    p_value: str
    verdict: str
    method: str
    always_valid: str = ""
    """The always-valid interval (rates): the one to read before the planned sample is in."""
    cuped: str = ""
    """The CUPED-adjusted difference and interval, with the variance it removed."""

    @classmethod
    def of(cls, row: experiments.ArmComparison) -> Comparison:
        interval = ""
        if row.ci_low is not None and row.ci_high is not None:
            interval = f"{difference(row.ci_low, row.unit)} to {difference(row.ci_high, row.unit)}"
        always_valid = ""
        if row.always_valid_low is not None and row.always_valid_high is not None:
            always_valid = (
                f"{difference(row.always_valid_low, row.unit)} to "
                f"{difference(row.always_valid_high, row.unit)}"
            )
        adjusted = ""
        if (
            row.cuped_diff is not None
            and row.cuped_ci_low is not None
            and row.cuped_ci_high is not None
            and row.variance_reduction
        ):
            adjusted = (
                f"{difference(row.cuped_diff, row.unit)} ({difference(row.cuped_ci_low, row.unit)}"
                f" to {difference(row.cuped_ci_high, row.unit)}), "
                f"variance −{row.variance_reduction:.0%}"
            )
        return cls(
            kpi=row.kpi,
            label=label(row.kpi),
            arm=row.arm,
            control=row.control,
            value=formatted(row.value, row.unit),
            n=row.n,
            control_value=formatted(row.control_value, row.unit),
            control_n=row.control_n,
            difference=difference(row.diff, row.unit),
            interval=interval,
            p_value=p_value(row.p_value),
            verdict=row.verdict,
            method=row.method,
            always_valid=always_valid,
            cuped=adjusted,
        )


@dataclass(frozen=True)
class Cell:
    shown: str
    n: int


@dataclass(frozen=True)
class PivotTable:
    """KPIs down, groups across (`compute_kpis` gives one value per KPI and group)."""

    groups: list[str]
    rows: list[tuple[str, list[Cell | None]]]

    @classmethod
    def of(cls, values: Sequence[kpis.KpiValue]) -> PivotTable:
        groups = list(dict.fromkeys(v.group for v in values))
        cells: dict[str, dict[str, Cell]] = {}
        labels: dict[str, str] = {}
        for v in values:
            cells.setdefault(v.kpi, {})[v.group] = Cell(formatted(v.value, v.unit), v.n)
            labels[v.kpi] = label(v.kpi)
            if "monthly_churn" in v.detail:  # the CLTV's assumption, next to the figure
                labels[v.kpi] += f" (assuming {v.detail['monthly_churn']:.1%} monthly churn)"
        rows = [(labels[kpi], [by_group.get(g) for g in groups]) for kpi, by_group in cells.items()]
        return cls(groups, rows)

"""The growth dashboard's charts: matplotlib figures rendered server-side as inline SVG.

Each function takes what `trialpath.growth.kpis` computes and returns the `<svg>` markup, or None
when there is nothing to draw (the page then says "no data yet" instead of showing empty axes).
Figures are built with `matplotlib.figure.Figure`, never pyplot: no global figure registry, so
concurrent requests cannot draw on each other's axes, and each figure is cleared once rendered.
Text stays text in the SVG (`svg.fonttype = none`): small, selectable, and drawn in the page's
own font, so no font file is embedded or downloaded.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from statistics import median
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from trialpath.core.definition import PERSONAS

# No display here, ever: should anything reach for pyplot, it gets the image-only backend.
matplotlib.use("Agg")

# Okabe & Ito's palette: told apart by every common kind of colour blindness.
PALETTE = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
    "#000000",
)
PERSONA_COLOURS = dict(zip(PERSONAS, PALETTE, strict=False))
INK = "#1f2933"
MUTED = "#6b7785"
GRID = "#dde1e6"

# Keys typed loosely: matplotlib's stubs spell every rcParams name as a Literal.
_STYLE: dict[Any, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.edgecolor": GRID,
    "axes.labelcolor": INK,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.titlecolor": INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "axes.axisbelow": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "xtick.labelcolor": INK,
    "ytick.labelcolor": INK,
    "legend.frameon": False,
    "legend.fontsize": 9,
}

# The font cache and rcParams are process-wide: one figure is rendered at a time.
_lock = threading.Lock()


def colours_for(groups: Sequence[str]) -> dict[str, str]:
    """A stable colour per group: personas keep theirs on every chart, others take the rest."""
    spare = [c for c in PALETTE if c not in PERSONA_COLOURS.values()]
    found: dict[str, str] = {}
    for group in groups:
        if group in PERSONA_COLOURS:
            found[group] = PERSONA_COLOURS[group]
        else:
            found[group] = spare[len([g for g in found if g not in PERSONA_COLOURS]) % len(spare)]
    return found


def ordered(groups: Sequence[str]) -> list[str]:
    """Personas in their usual order, then any other group alphabetically."""
    known = [p for p in PERSONAS if p in groups]
    return known + sorted(g for g in groups if g not in PERSONAS)


@contextmanager
def _figure(width: float = 6.4, height: float = 3.6) -> Iterator[Figure]:
    figure = Figure(figsize=(width, height), layout="constrained")
    try:
        yield figure
    finally:
        figure.clear()


def _svg(figure: Figure, name: str, label: str) -> str:
    """The figure as `<svg>` markup ready to inline: ids prefixed with the chart's name, so
    several charts on one page never share an id (their clip paths would cross-reference),
    and the size left to the page's CSS (the viewBox keeps the proportions)."""
    out = io.StringIO()
    with matplotlib.rc_context({**_STYLE, "svg.hashsalt": name}):
        figure.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    svg = out.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{name}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{name}-\1)", svg)
    svg = re.sub(r'xlink:href="#([^"]+)"', rf'xlink:href="#{name}-\1"', svg)
    svg = re.sub(
        r'<svg ([^>]*?)width="[^"]*" height="[^"]*"',
        rf'<svg \1role="img" aria-label="{_attr(label)}" preserveAspectRatio="xMidYMid meet"',
        svg,
        count=1,
    )
    return svg.strip()


def _attr(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def _legend(axes: Axes, title: str, markerscale: float = 1.0) -> None:
    axes.legend(
        title=title,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        alignment="left",
        markerscale=markerscale,
    )


def funnel_chart(funnel: Mapping[str, Sequence[tuple[str, int]]]) -> str | None:
    """Grouped bars: for each funnel step, one bar per persona with the share of that persona's
    sign-ups who reached it, labelled with the count."""
    groups = ordered([g for g, steps in funnel.items() if steps and steps[0][1] > 0])
    if not groups:
        return None
    steps = [label for label, _ in funnel[groups[0]]]
    colours = colours_for(groups)
    width = 0.8 / len(groups)
    with _lock, matplotlib.rc_context(_STYLE), _figure() as figure:
        axes = figure.subplots()
        for i, group in enumerate(groups):
            counts = dict(funnel[group])
            base = funnel[group][0][1]
            xs = [s + (i - (len(groups) - 1) / 2) * width for s in range(len(steps))]
            shares = [counts.get(step, 0) / base for step in steps]
            bars = axes.bar(
                xs,
                shares,
                width=width * 0.92,
                color=colours[group],
                label=f"{group} (n={base})",
            )
            axes.bar_label(
                bars, labels=[str(counts.get(s, 0)) for s in steps], fontsize=7, color=MUTED
            )
        axes.set_xticks(range(len(steps)), steps)
        axes.set_ylim(0, 1.12)
        axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        axes.set_ylabel("share of sign-ups")
        axes.set_title("Activation funnel by persona", loc="left")
        _legend(axes, "persona")
        return _svg(figure, "funnel", "Activation funnel by persona, share of sign-ups per step")


def ttfv_chart(hours: Mapping[str, Sequence[float]]) -> str | None:
    """A box plot per persona of the hours from sign-up to first value, every trial shown as a
    dot beside its box (a median over 5 trials should look like 5 trials)."""
    groups = ordered([g for g, values in hours.items() if values])
    if not groups:
        return None
    colours = colours_for(groups)
    with _lock, matplotlib.rc_context(_STYLE), _figure() as figure:
        axes = figure.subplots()
        data = [sorted(hours[g]) for g in groups]
        boxes = axes.boxplot(
            data,
            positions=range(len(groups)),
            widths=0.45,
            patch_artist=True,
            showfliers=False,
            medianprops={"color": INK, "linewidth": 1.6},
            whiskerprops={"color": MUTED},
            capprops={"color": MUTED},
            boxprops={"edgecolor": MUTED},
        )
        for patch, group in zip(boxes["boxes"], groups, strict=True):
            patch.set_facecolor(colours[group])
            patch.set_alpha(0.55)
        for i, (group, values) in enumerate(zip(groups, data, strict=True)):
            # A deterministic spread, so the same data always draws the same picture.
            offsets = [((k * 0.618) % 1.0 - 0.5) * 0.18 for k in range(len(values))]
            axes.scatter(
                [i + 0.34 + o for o in offsets],
                values,
                s=9,
                color=colours[group],
                alpha=0.7,
                linewidths=0,
                label=f"{group} (n={len(values)}, median {median(values):.1f} h)",
            )
        axes.set_xticks(
            range(len(groups)), [f"{g}\nn={len(v)}" for g, v in zip(groups, data, strict=True)]
        )
        axes.set_xlim(-0.6, len(groups) - 0.2)
        axes.set_ylim(bottom=0)
        axes.set_ylabel("hours from sign-up to first value")
        axes.set_title("Time to first value by persona", loc="left")
        _legend(axes, "persona", markerscale=2.0)
        return _svg(figure, "ttfv", "Time to first value by persona, in hours")


def retention_chart(curves: Mapping[str, Sequence[tuple[int, float]]]) -> str | None:
    """One line per weekly sign-up cohort: the share of the cohort still active on or after
    each day (`kpis.retention_curves`, percentages)."""
    cohorts = sorted(c for c, points in curves.items() if points)
    if not cohorts:
        return None
    # Cohorts are ordered in time: a sequential, colour-blind-safe scale (viridis, without its
    # palest yellow) reads oldest to newest.
    scale = matplotlib.colormaps["viridis"]
    colours = {
        cohort: scale(0.85 * i / max(1, len(cohorts) - 1)) for i, cohort in enumerate(cohorts)
    }
    with _lock, matplotlib.rc_context(_STYLE), _figure(width=12.8) as figure:
        axes = figure.subplots()
        for cohort in cohorts:
            points = sorted(curves[cohort])
            axes.plot(
                [day for day, _ in points],
                [pct for _, pct in points],
                marker="o",
                markersize=3,
                linewidth=1.6,
                color=colours[cohort],
                label=cohort,
            )
        days = sorted({day for cohort in cohorts for day, _ in curves[cohort]})
        axes.set_xticks(days)
        axes.set_ylim(0, 100)
        axes.set_xlim(-0.5, max(days) + 0.5)
        axes.yaxis.set_major_formatter(PercentFormatter(100.0, decimals=0))
        axes.grid(True, axis="x", color=GRID, linewidth=0.5)
        axes.set_xlabel("days since sign-up")
        axes.set_ylabel("share of the cohort active")
        axes.set_title("Retention by sign-up cohort", loc="left")
        _legend(axes, "cohort (week)")
        return _svg(figure, "retention", "Retention curves by weekly sign-up cohort")


def bars_chart(
    name: str, title: str, categories: Sequence[str], series: Mapping[str, Sequence[float]]
) -> str | None:
    """Grouped bars: one group per category (a persona), one bar per series (a journey),
    labelled with the value."""
    if not categories or not series:
        return None
    colours = dict(zip(series, PALETTE, strict=False))
    width = 0.8 / len(series)
    with _lock, matplotlib.rc_context(_STYLE), _figure() as figure:
        axes = figure.subplots()
        for i, (label, values) in enumerate(series.items()):
            xs = [c + (i - (len(series) - 1) / 2) * width for c in range(len(categories))]
            bars = axes.bar(xs, values, width=width * 0.92, color=colours[label], label=label)
            axes.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=7, color=MUTED)
        axes.set_xticks(range(len(categories)), categories)
        axes.set_title(title, loc="left")
        _legend(axes, "journey")
        return _svg(figure, name, title)

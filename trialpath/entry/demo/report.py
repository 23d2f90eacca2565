"""What the demo prints: the table of its trials and their verdicts, the support queue and the
success calls its journeys opened, and how late its requests went."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
from rich.table import Table
from rich.text import Text

from trialpath.core.definition import JourneyDefinition
from trialpath.core.journey import assign_arm
from trialpath.entry.demo.playing import Tracked, _check, clock_of
from trialpath.operations.models import CallSlot


def _day(item: Tracked, at: datetime | None, seconds_per_day: float) -> str:
    if at is None:
        return "-"
    day = (at - item.signup_at).total_seconds() / clock_of(item, seconds_per_day)
    return f"day {day:.1f}"


def verdict_text(item: Tracked) -> Text:
    if item.verdict is None:
        return Text("…", style="dim")
    if not item.verdict:
        return Text("✓", style="bold green")
    return Text("✗ " + "; ".join(item.verdict), style="red")


def results_table(
    items: list[Tracked],
    seconds_per_day: float,
    title: str,
    definition: JourneyDefinition | None = None,
) -> Table:
    table = Table(title=title, title_justify="left")
    columns = ["user", "behaviour", "arm", "persona", "stage", "activated at", "messages sent"]
    for column in [*columns, "as scripted"]:
        if column == "arm" and definition is None:
            continue
        table.add_column(column, no_wrap=column not in ("behaviour", "as scripted"))
    for item in items:
        arm = [assign_arm(definition, item.user_id)] if definition is not None else []
        st = item.status
        if st is None:
            table.add_row(
                item.user_id,
                item.user.behaviour,
                *arm,
                "?",
                item.error or "starting",
                "-",
                "-",
                verdict_text(item),
            )
            continue
        by_channel: dict[str, int] = {}
        for sent in st.sent:
            by_channel[sent.channel] = by_channel.get(sent.channel, 0) + 1
        counts = ", ".join(f"{n} {c}" for c, n in sorted(by_channel.items()))
        stage = st.stage + (" (existing)" if item.existing else "")
        table.add_row(
            item.user_id,
            item.user.behaviour,
            *arm,
            st.persona or "?",
            stage,
            _day(item, st.activated_at, seconds_per_day),
            f"{len(st.sent)} ({counts})" if counts else "0",
            verdict_text(item),
        )
    return table


async def support_queue(api: httpx.AsyncClient, prefix: str) -> Table | None:
    """The support tasks the demo's journeys opened (`GET /v1/tasks`), oldest first; None when
    the API key may not read the queue."""
    response = await api.get("/v1/tasks", params={"state": "all", "limit": 500})
    if response.status_code in (401, 403):
        return None
    page = _check(response)
    mine = [
        t
        for t in page["tasks"]
        if t["user_id"].startswith(f"{prefix}-") and not t["user_id"].startswith(f"{prefix}-pop-")
    ]
    open_ = sum(t["state"] != "closed" for t in mine)
    table = Table(title=f"Support queue: {open_} open task(s) of {len(mine)}", title_justify="left")
    for column in ("task", "kind", "state", "owner", "reason"):
        table.add_column(column, no_wrap=column != "reason")
    for t in mine:
        table.add_row(t["key"], t["kind"], t["state"], t["owner"] or "nobody", t["reason"])
    return table


def calls_table(slots: Sequence[CallSlot], timezone: str = "Europe/Paris") -> Table:
    """The success calls booked in the agents' calendars: one row per agent, their calls in
    order (journey time, in the demo users' time zone)."""
    zone = ZoneInfo(timezone)
    table = Table(title=f"Success calls by agent ({timezone})", title_justify="left")
    for column in ("agent", "calls", "booked slots"):
        table.add_column(column, no_wrap=column != "booked slots")
    by_agent: dict[str, list[CallSlot]] = {}
    for slot in sorted(slots, key=lambda s: (s.agent, s.start_at)):
        by_agent.setdefault(slot.agent, []).append(slot)
    for agent, calls in by_agent.items():
        table.add_row(
            agent,
            str(len(calls)),
            ", ".join(
                f"{c.start_at.astimezone(zone):%a %H:%M} {c.workflow_id.removeprefix('trial-')}"
                for c in calls
            ),
        )
    return table


def delays(items: list[Tracked]) -> tuple[list[float], list[float]]:
    """Per accepted request, seconds from its scripted moment to its sending, and to the
    API's answer."""
    played = [p for i in items for p in i.played if p.problem is None]
    return [p.late for p in played], [p.answered - p.due for p in played]

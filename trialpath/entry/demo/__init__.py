"""The demo: a dozen sample trial users with different behaviours on an accelerated clock.

Each sample user has a script of actions (events, call outcomes, conversion, extension,
cancellation) and, next to it, what its trial must look like once it is over: stage,
activation, persona, key messages sent or not. The demo starts their trials and plays the
scripts through the HTTP API, as a product's backend would, while showing live progress. Once
every trial has left its trial period and its workflow has caught up with what it was sent,
each is checked against its expectation: the final table gives a ✓, or an ✗ with what
differed. Running it again finds the existing trials (the API answers 200 for them) instead
of starting duplicates, and checks them as they are.

Actions are timed on each trial's own journey clock: a journey day after the signup the API
reported, or after the success call the trial itself scheduled (its day and hour follow the
urgency, the user's time zone and stalls, so a fixed day could fall before it).

The scripts and expectations are in `scripts`, playing them through the API and following the
trials in `playing`, the verdicts in `checking`, and the tables the demo prints in `report`;
`run_demo` here plays and checks them all, and the names the rest of the code uses are imported
below from those modules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn

from trialpath.core.definition import JourneyDefinition
from trialpath.entry.demo.checking import (
    check as check,
    differences as differences,
    message_of as message_of,
)
from trialpath.entry.demo.playing import (
    Played as Played,
    Tracked as Tracked,
    _check as _check,
    batches as batches,
    finished,
    play as play,
    read_status as read_status,
    refresh,
    settled as settled,
    signup_body as signup_body,
    start_trials,
    trial_clock as trial_clock,
)
from trialpath.entry.demo.report import (
    calls_table as calls_table,
    delays as delays,
    results_table as results_table,
    support_queue as support_queue,
)
from trialpath.entry.demo.scripts import (
    Action as Action,
    AfterCall as AfterCall,
    Expected as Expected,
    ScriptedUser as ScriptedUser,
    scripted_users as scripted_users,
)


async def run_demo(
    api: httpx.AsyncClient,
    seconds_per_day: float,
    console: Console,
    definition: JourneyDefinition,
    prefix: str = "demo",
    check_alive: Callable[[], None] | None = None,
    caught_up: Callable[[], Awaitable[None]] | None = None,
    max_seconds: float | None = None,
) -> list[Tracked]:
    """Plays the demo through the API until every trial is over and settled, then checks each
    against its expectation (`Tracked.verdict`). `check_alive` raises if a service died;
    `caught_up` waits until the worker has no backlog (before the trials start, and before
    they are checked). Past `max_seconds` (default: twice the longest trial, plus a minute)
    the trials are checked as they stand."""
    if caught_up is not None:
        await caught_up()
    items = await start_trials(api, prefix)
    new = [i for i in items if not i.existing]
    for item in items:
        item.script_done = item.existing
    if len(new) < len(items):
        console.print(
            f"[yellow]{len(items) - len(new)} demo trials already exist; checking them as they "
            f"are (use --prefix to start a fresh set).[/]"
        )
    players = [asyncio.create_task(play(api, i, seconds_per_day, dated=True)) for i in new]
    longest = 14 + 3 + 1
    if max_seconds is None:
        max_seconds = 2 * longest * seconds_per_day + 60
    progress = Progress(
        TextColumn("[bold]journey day {task.completed:.1f} of ~{task.total:.0f}"),
        BarColumn(),
        TextColumn("{task.fields[done]} of {task.fields[trials]} trials over"),
    )
    task = progress.add_task("demo", total=longest, done=0, trials=len(items))
    started = min(i.signup_at for i in items)
    deadline = time.monotonic() + max_seconds
    poll = max(0.5, seconds_per_day / 4)
    try:
        with Live(console=console, refresh_per_second=2, transient=True) as live:
            while True:
                if check_alive:
                    check_alive()
                await refresh(api, items)
                done = sum(finished(i) for i in items)
                elapsed_days = (datetime.now(UTC) - started).total_seconds() / seconds_per_day
                progress.update(task, completed=min(elapsed_days, longest), done=done)
                live.update(
                    Group(progress, results_table(items, seconds_per_day, "Trials", definition))
                )
                late = time.monotonic() > deadline
                if all(settled(i, seconds_per_day) for i in items) or late:
                    break
                await asyncio.sleep(poll)
    finally:
        for player in players:
            player.cancel()
    if caught_up is not None and not late:
        await caught_up()
        await refresh(api, items)
    for item in items:
        item.verdict = check(item, seconds_per_day, definition)
        if late and not settled(item, seconds_per_day):
            item.verdict.insert(0, f"not settled after {max_seconds:.0f} s")
    return items

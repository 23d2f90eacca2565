"""Temporal actions over a whole trial, from its full histories (every run of it).

    .venv/bin/python bench/trial_actions.py [--events 50] [--per-signal 10] [--price-per-million 50]

One technical user on the time-skipping server (started and stopped here, on 127.0.0.1) with the
real worker and activities, a SQLite database and the outbox in a temporary folder: `--events`
product events spread over the first nine days, the success call the journey books, held and
completed, and a purchase on day 8; then the trial runs to its end. The same trial is played
twice, side by side: one event per signal (`event`, as the API relays a request of one event),
then `--per-signal` events to a signal (`events`, as it relays a request carrying several).
Every history of the trial (it continues as new when its history grows) is read and its billable
actions counted as `bench/load.py` counts them (`ACTION_EVENTS`: starts, signals, activities and
their retries, timers, search-attribute and memo upserts, markers, updates), beside the messages
sent (`count_messages`: one per channel of a step). It prints actions by kind, activities by
type, actions minus messages (the target: at most 15), and the cost per 1,000 such trials at
`--price-per-million` dollars per million actions.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import count_actions, count_messages

from trialpath.core.contract import (
    SIGNAL_EVENT,
    SIGNAL_EVENTS,
    Qualification,
    TrialProfile,
    workflow_id_for,
)
from trialpath.core.journey import TrialInput
from trialpath.growth.simulate import next_monday, signal_when_clear, skip_to
from trialpath.operations.config import PROJECT_ROOT, Settings
from trialpath.operations.temporal import (
    DATA_CONVERTER,
    bundled_binary,
    register_search_attributes,
)
from worker import build_worker
from workflows.trial import TrialWorkflow

DAY = timedelta(days=1)


async def histories(client: Client, workflow_id: str, first_run: str) -> list[Any]:
    """Every run of the workflow, following continue-as-new from the first."""
    runs, run_id = [], first_run
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        runs.append(history)
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            else ""
        )
    return runs


def count(runs: list[Any]) -> tuple[Counter[str], int, Counter[str]]:
    """Actions by kind, messages sent, and the activities scheduled by type."""
    kinds: Counter[str] = Counter()
    activities: Counter[str] = Counter()
    messages = 0
    for history in runs:
        by_type, scheduled = count_actions(history.events)
        kinds.update(by_type)
        activities.update(scheduled)
        messages += count_messages(history.events)
    return kinds, messages, activities


async def play(settings: Settings, events: int, per_signal: int) -> Played:
    """One whole trial on its own time-skipping server; `per_signal` events in each signal
    (1: the `event` signal, as the API relays one event per request; more: `events`, as it
    relays a request carrying several)."""
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER,
        test_server_existing_path=str(bundled_binary("temporal-test-server")),
    ) as env:
        await register_search_attributes(env.client)
        start = next_monday(await env.get_current_time())
        await skip_to(env, start)
        user_id = f"actions-{per_signal}"
        with ThreadPoolExecutor(max_workers=4) as pool:
            async with build_worker(env.client, settings, pool):
                profile = TrialProfile(
                    user_id=user_id,
                    name="Ada Lovelace",
                    email=f"{user_id}@example.com",
                    signup_at=start,
                    timezone="Europe/Paris",
                    qualification=Qualification(role="technical", urgency="this_week"),
                )
                handle = await env.client.start_workflow(
                    TrialWorkflow.run,
                    TrialInput(profile=profile),
                    id=workflow_id_for(user_id),
                    task_queue=settings.task_queue,
                )
                first_run = handle.result_run_id or ""
                names = ["integration_connected", *["api_call"] * (events - 1)]
                moments = [0.3 + 8.7 * i / max(1, events - 1) for i in range(events)]
                plan: list[tuple[float, str, dict[str, Any]]] = []
                for i in range(0, events, per_signal):
                    batch = [{"name": n} for n in names[i : i + per_signal]]
                    if per_signal == 1:
                        plan.append((moments[i], SIGNAL_EVENT, batch[0]))
                    else:
                        # A batch goes when its last event happened.
                        last = moments[min(i + per_signal, events) - 1]
                        plan.append((last, SIGNAL_EVENTS, {"events": batch}))
                plan.append((8.0, "converted", {"plan": "team", "mrr": 99}))
                called = False
                for day, name, payload in sorted(plan, key=lambda p: p[0]):
                    status = await handle.query(TrialWorkflow.status)
                    call_at = status.call.at
                    if not called and call_at and call_at + DAY / 24 < start + day * DAY:
                        await skip_to(env, call_at + DAY / 24)
                        await signal_when_clear(env, handle, "call_completed", {"notes": "bench"})
                        called = True
                    await skip_to(env, start + day * DAY)
                    await signal_when_clear(env, handle, name, payload)
                final = await handle.result()
                runs = await histories(env.client, workflow_id_for(user_id), first_run)
    kinds, messages, activities = count(runs)
    return Played(per_signal, final.stage, len(runs), called, kinds, messages, activities)


@dataclass
class Played:
    per_signal: int
    stage: str
    runs: int
    called: bool
    kinds: Counter[str]
    messages: int
    activities: Counter[str]

    @property
    def actions(self) -> int:
        return sum(self.kinds.values())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument(
        "--per-signal",
        type=int,
        default=10,
        help="events in each signal of the batched trial (the other trial sends one each)",
    )
    parser.add_argument("--price-per-million", type=float, default=50.0)
    args = parser.parse_args()
    if args.events < 1:
        parser.error(f"--events must be at least 1, got {args.events}")
    if args.per_signal < 2:
        parser.error(
            f"--per-signal must be at least 2 (the other trial sends one), got {args.per_signal}"
        )
    played = []
    with tempfile.TemporaryDirectory(prefix="trial-actions-") as tmp:
        for per_signal in (1, args.per_signal):
            settings = Settings(
                data_dir=Path(tmp) / str(per_signal),
                database_url="",
                task_queue="trial-actions",
                templates_dir=PROJECT_ROOT / "templates",
                worker_shutdown_seconds=0,
            )
            played.append(await play(settings, args.events, per_signal))
    first = played[0]
    print(
        f"one trial: {args.events} events, success call "
        f"{'completed' if first.called else 'none'}, ended {first.stage} after "
        f"{first.runs} run(s); the same trial twice, events one per signal, then "
        f"{args.per_signal} per signal"
    )
    header = "".join(f"{f'{p.per_signal} per signal':>16}" for p in played)
    print(f"  {'':<40}{header}")
    kinds = sorted({k for p in played for k in p.kinds}, key=lambda k: -first.kinds[k])
    for kind in kinds:
        print(f"  {kind:<40}" + "".join(f"{p.kinds[kind]:>16}" for p in played))
        if kind == "activity_task_scheduled":
            names = sorted(
                {n for p in played for n in p.activities}, key=lambda n: -first.activities[n]
            )
            for name in names:
                label = f"  {name}"
                print(f"  {label:<40}" + "".join(f"{p.activities[name]:>16}" for p in played))
    for label, value in (
        ("actions", lambda p: p.actions),
        ("messages", lambda p: p.messages),
        ("actions - messages (target <= 15)", lambda p: p.actions - p.messages),
    ):
        print(f"  {label:<40}" + "".join(f"{value(p):>16}" for p in played))
    for p in played:
        cost = p.actions * 1000 / 1e6 * args.price_per_million
        print(
            f"per 1,000 such trials, {p.per_signal} event(s) per signal: "
            f"{p.actions * 1000:,} actions, ${cost:,.2f} at ${args.price_per_million:g} per million"
        )


if __name__ == "__main__":
    asyncio.run(main())

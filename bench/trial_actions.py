"""Temporal actions over a whole trial, from its full histories (every run of it).

    .venv/bin/python bench/trial_actions.py [--events 50] [--price-per-million 50]

One technical user on the time-skipping server (started and stopped here, on 127.0.0.1) with the
real worker and activities, a SQLite database and the outbox in a temporary folder: `--events`
product events spread over the first nine days (each one signal, as the API relays them), the
success call the journey books, held and completed, and a purchase on day 8; then the trial runs
to its end. Every history of the trial (it continues as new when its history grows) is read and
its billable actions counted as `bench/load.py` counts them (`ACTION_EVENTS`: starts, signals,
activities and their retries, timers, search-attribute and memo upserts, markers, updates),
beside the messages sent (`send_message` activities). It prints actions by kind, actions minus
messages (the issue's target: at most 15), and the cost per 1,000 such trials at
`--price-per-million` dollars per million actions.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import count_actions

from trialpath.core.contract import Qualification, TrialProfile, workflow_id_for
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


def count(runs: list[Any]) -> tuple[Counter[str], int]:
    kinds: Counter[str] = Counter()
    messages = 0
    for history in runs:
        by_type, sent = count_actions(history.events)
        kinds.update(by_type)
        messages += sent
    return kinds, messages


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--price-per-million", type=float, default=50.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trial-actions-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            database_url="",
            task_queue="trial-actions",
            templates_dir=PROJECT_ROOT / "templates",
            worker_shutdown_seconds=0,
        )
        async with await WorkflowEnvironment.start_time_skipping(
            data_converter=DATA_CONVERTER,
            test_server_existing_path=str(bundled_binary("temporal-test-server")),
        ) as env:
            await register_search_attributes(env.client)
            start = next_monday(await env.get_current_time())
            await skip_to(env, start)
            with ThreadPoolExecutor(max_workers=4) as pool:
                async with build_worker(env.client, settings, pool):
                    profile = TrialProfile(
                        user_id="actions",
                        name="Ada Lovelace",
                        email="actions@example.com",
                        signup_at=start,
                        timezone="Europe/Paris",
                        qualification=Qualification(role="technical", urgency="this_week"),
                    )
                    handle = await env.client.start_workflow(
                        TrialWorkflow.run,
                        TrialInput(profile=profile),
                        id=workflow_id_for("actions"),
                        task_queue=settings.task_queue,
                    )
                    first_run = handle.result_run_id or ""
                    names = ["integration_connected", *["api_call"] * (args.events - 1)]
                    moments = [0.3 + 8.7 * i / max(1, args.events - 1) for i in range(args.events)]
                    plan = [
                        (day, "event", {"name": n}) for day, n in zip(moments, names, strict=True)
                    ]
                    plan.append((8.0, "converted", {"plan": "team", "mrr": 99}))
                    called = False
                    for day, name, payload in sorted(plan, key=lambda p: p[0]):
                        status = await handle.query(TrialWorkflow.status)
                        call_at = status.call.at
                        if not called and call_at and call_at + DAY / 24 < start + day * DAY:
                            await skip_to(env, call_at + DAY / 24)
                            await signal_when_clear(
                                env, handle, "call_completed", {"notes": "bench"}
                            )
                            called = True
                        await skip_to(env, start + day * DAY)
                        await signal_when_clear(env, handle, name, payload)
                    final = await handle.result()
                    runs = await histories(env.client, workflow_id_for("actions"), first_run)
    kinds, messages = count(runs)
    actions = sum(kinds.values())
    print(
        f"one trial: {args.events} events, success call {'completed' if called else 'none'}, "
        f"ended {final.stage} after {len(runs)} run(s)"
    )
    for kind, n in kinds.most_common():
        print(f"  {kind:<40} {n:>5}")
    print(f"actions {actions}, messages {messages}, actions - messages {actions - messages}")
    cost = actions * 1000 / 1e6 * args.price_per_million
    print(
        f"per 1,000 such trials: {actions * 1000:,} actions, ${cost:,.2f} at "
        f"${args.price_per_million:g} per million"
    )


if __name__ == "__main__":
    asyncio.run(main())

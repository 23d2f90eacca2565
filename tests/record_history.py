"""Records the committed workflow histories replayed by tests/test_replay.py.

    .venv/bin/python -m tests.record_history v4

Run it when a released version should be protected (see docs/versioning.md): a later change
to the workflow that would break trials already running with that version then fails the
replay test. It plays one trial through most of the journey with the shipped journey file
(experiment and surveys included) and writes tests/histories/trial_business_<version>.json.
Histories of real trials can be exported with `trialpath history export` instead.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.driver import TrialDriver, align
from trialpath.core.definition import load_definition
from trialpath.core.journey import assign_arm
from trialpath.operations.config import PACKAGE_DIR, Settings
from trialpath.operations.temporal import DATA_CONVERTER, bundled_binary, register_search_attributes
from worker import build_worker

HISTORIES = Path(__file__).parent / "histories"


async def record(version: str) -> None:
    number = int(version.removeprefix("v"))
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER,
        test_server_existing_path=str(bundled_binary("temporal-test-server")),
    ) as env:
        await register_search_attributes(env.client)
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(4) as pool:
            settings = Settings(
                data_dir=Path(tmp),
                task_queue=f"record-{uuid.uuid4()}",
                journey_file=PACKAGE_DIR / "journey.toml",
            )
            async with build_worker(env.client, settings, pool):
                await align(env)
                # A user of the generic arm: its path differs from its persona's.
                user_id = next(
                    f"history-{i}"
                    for i in range(1000)
                    if assign_arm(load_definition(settings.journey_file), f"history-{i}")
                    == "generic"
                )
                # Signals stamped with their acceptance time, as the API relays them, since v4.
                trial = TrialDriver(
                    env,
                    settings,
                    user_id,
                    role=None,
                    urgency=None,
                    company="Acme Corp",
                    stamp_signals=True,
                )
                # Started as the API starts trials (no signup time) since v3.
                handle = await trial.start(as_the_api=True)
                # Since v7 (rules 4) an evaluating user gets no call with an agent: this one
                # is offered a call in the agents' calendars, and support closes its task.
                urgency = "this_month" if number >= 7 else "evaluating"
                await trial.qualify("business", "team_coordination", urgency)
                await trial.event("login")
                if number >= 9:
                    # Since v9 the API relays a request's events in one `events` signal; logins
                    # move nothing, so the running timer is kept.
                    await trial.at_day(0.7)
                    logins = [{"name": "login", "id": f"login-{i}"} for i in range(3)]
                    await trial.signal("events", {"events": logins})
                await trial.at_day(1.5)
                await trial.signal("call_rescheduled", {"at": trial.iso(5.1)})
                if number >= 7:
                    await trial.at_day(3.5)
                    task = f"{handle.id}:support_alert.1"
                    await trial.signal(
                        "task_closed", {"task": task, "kind": "stalled", "outcome": "reached_user"}
                    )
                await trial.at_day(5.2)
                await trial.signal("call_completed", {"notes": "demo of workflows"})
                await trial.event("workflow_created")
                await trial.event("teammate_invited")
                await trial.at_day(6)
                await trial.signal("unsubscribe", {"channel": "sms"})
                await trial.at_day(12.2)
                await trial.signal("extend_trial", {"days": 5})
                await trial.at_day(15)
                await trial.signal("converted", {"plan": "team", "mrr": 120})
                await handle.result()
                history = await handle.fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    out = HISTORIES / f"trial_business_{version}.json"
    out.write_text(history.to_json())
    print(f"wrote {out} ({len(history.events)} events)")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].removeprefix("v").isdigit():
        sys.exit("usage: python -m tests.record_history VERSION   (e.g. v4)")
    asyncio.run(record(sys.argv[1]))

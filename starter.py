"""Starts one sample trial and sends it a few signals, for developers trying things out.

Needs a running Temporal server and worker (`trialpath up --no-demo` in another terminal).

    python starter.py [USER_ID]
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime

from temporalio.common import WorkflowIDReusePolicy

from trialpath.core.contract import (
    EventSignal,
    QualifyInput,
    QualifyResult,
    TrialProfile,
    workflow_id_for,
)
from trialpath.core.journey import TrialInput
from trialpath.operations.config import get_settings
from trialpath.operations.temporal import connect, exit_process
from workflows.trial import TrialWorkflow


async def main() -> None:
    settings = get_settings()
    client = await connect(settings)
    user_id = sys.argv[1] if len(sys.argv) > 1 else f"dev-{uuid.uuid4().hex[:8]}"
    profile = TrialProfile(
        user_id=user_id,
        name="Ada Lovelace",
        email="ada@example.com",
        locale="en",
        timezone="Europe/Paris",
        company="Analytical Engines",
        signup_at=datetime.now(UTC),
        seconds_per_day=settings.seconds_per_day,
    )
    handle = await client.start_workflow(
        TrialWorkflow.run,
        TrialInput(profile=profile),
        id=workflow_id_for(user_id),
        task_queue=settings.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )
    print(f"started {handle.id}")
    result = await handle.execute_update(
        "qualify",
        QualifyInput(role="technical", challenge="integrations", urgency="this_week"),
        result_type=QualifyResult,
    )
    print(f"qualified: persona {result.persona}")
    await handle.signal(TrialWorkflow.event, EventSignal(name="integration_connected", id="first"))
    for i in range(10):
        await handle.signal(TrialWorkflow.event, EventSignal(name="api_call", id=f"call-{i}"))
    await asyncio.sleep(1)
    status = await handle.query(TrialWorkflow.status)
    print(status.model_dump_json(indent=2))


if __name__ == "__main__":
    asyncio.run(main())
    exit_process(0)

"""Temporal's hello-world, the baseline `load.py` compares trials with; run by its own worker.

    .venv/bin/python bench/hello_world.py TASK_QUEUE     (TRIALPATH_TEMPORAL_ADDRESS: the server)

Kept apart from `load.py` because the workflow sandbox re-imports the module that defines a
workflow, and this one imports nothing but the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

HELLO_TYPE = "bench_hello"


@activity.defn(name="bench_say_hello")
async def say_hello(name: str) -> str:
    return f"Hello, {name}!"


@workflow.defn(name=HELLO_TYPE)
class HelloWorkflow:
    """One activity, then done. No signals, queries or timers."""

    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(
            say_hello, name, start_to_close_timeout=timedelta(seconds=30)
        )


async def main(address: str, task_queue: str) -> None:
    # The same data converter as Trialpath's client and worker.
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with Worker(
        client, task_queue=task_queue, workflows=[HelloWorkflow], activities=[say_hello]
    ):
        await stop.wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(os.environ["TRIALPATH_TEMPORAL_ADDRESS"], sys.argv[1]))
    sys.stdout.flush()
    os._exit(
        0
    )  # as trialpath.operations.temporal.exit_process: the SDK's threads can outlive the loop

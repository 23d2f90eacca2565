"""Metrics: the counters the activities move, the API's `/metrics` and its auth, and the worker
process serving the SDK's metrics and ours, then stopping cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.records import RecordActivities, RecordProgressInput, TrialSnapshot
from tests.test_activities import AT, request
from tests.test_delivery_activity import Scripted, acts, run
from trialpath.delivery import DeliveryError
from trialpath.operations.access import parse_api_keys
from trialpath.operations.config import PROJECT_ROOT, Settings
from trialpath.operations.db import make_engine
from worker import build_worker

pytestmark = pytest.mark.database_agnostic  # its subject is not the database


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return make_engine(settings.effective_database_url)


def test_a_send_counts_the_message_and_times_the_provider(engine: Engine) -> None:
    sent = sample("trialpath_messages_total", channel="email", status="sent")
    failed = sample("trialpath_messages_total", channel="email", status="failed")
    timed = sample("trialpath_provider_latency_seconds_count", provider="scripted")

    run(acts(engine, Scripted("id-1")))
    assert sample("trialpath_messages_total", channel="email", status="sent") == sent + 1
    assert sample("trialpath_provider_latency_seconds_count", provider="scripted") == timed + 1
    # A retried activity finding the message sent counts nothing more.
    run(acts(engine, Scripted("id-2")))
    assert sample("trialpath_messages_total", channel="email", status="sent") == sent + 1

    refusing = Scripted(DeliveryError("bad address", permanent=True))
    with pytest.raises(ApplicationError):
        run(acts(engine, refusing), request(message="welcome"))
    assert sample("trialpath_messages_total", channel="email", status="failed") == failed + 1
    assert sample("trialpath_provider_latency_seconds_count", provider="scripted") == timed + 2


def test_activation_is_counted_once(engine: Engine) -> None:
    snapshot = TrialSnapshot(
        user_id="u-act",
        workflow_id="trial-u-act",
        signup_at=AT,
        persona="technical",
        stage="onboarding",
        urgency=None,
        activated=False,
        activated_at=None,
        trial_ends_at=AT + timedelta(days=14),
        cs_owner=None,
        experiment_arm="default",
        converted_plan=None,
        mrr=None,
        converted_at=None,
        ended_at=None,
        status={},
    )
    records = RecordActivities(engine)
    env = ActivityEnvironment()
    before = sample("trialpath_activation_events_total")
    env.run(records.record_progress, RecordProgressInput(trial=snapshot))
    assert sample("trialpath_activation_events_total") == before
    activated = snapshot.model_copy(update={"activated": True, "activated_at": AT})
    env.run(records.record_progress, RecordProgressInput(trial=activated))
    env.run(records.record_progress, RecordProgressInput(trial=activated))
    assert sample("trialpath_activation_events_total") == before + 1


async def test_api_metrics_show_requests_by_route_template(api: httpx.AsyncClient) -> None:
    user_id = f"u-{uuid.uuid4().hex[:8]}"
    missing = await api.get(f"/v1/trials/{user_id}")
    assert missing.status_code == 404
    await api.get("/v1/healthz")
    metrics = await api.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert (
        'trialpath_http_requests_total{method="GET",route="/v1/trials/{user_id}",status="404"}'
        in text
    )
    assert 'trialpath_http_request_duration_seconds_count{method="GET",route="/v1/healthz"}' in (
        text
    )
    assert user_id not in text  # Route templates, never raw paths.


METRICS_KEY = "metrics-key-0123456789abcdef"
METRICS_KEYS = parse_api_keys([f"scraper:analyst:{METRICS_KEY}"])


def metrics_app(settings: Settings, **changes: Any) -> httpx.AsyncClient:
    from trialpath.entry.api.app import create_app

    settings = settings.model_copy(update={"api_keys": METRICS_KEYS, **changes})
    app = create_app(settings, client=object())  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def test_api_metrics_need_an_api_key_unless_made_public(settings: Settings) -> None:
    async with metrics_app(settings) as http:
        assert (await http.get("/metrics")).status_code == 401
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 403
        allowed = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"})
        assert allowed.status_code == 200
        await http.get("/no/such/path/u-123")
        text = (await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"})).text
        assert 'route="unmatched",status="404"' in text and "u-123" not in text
    async with metrics_app(settings, metrics_public=True) as http:
        assert (await http.get("/metrics")).status_code == 200


async def test_build_worker_gives_running_activities_the_configured_time_on_shutdown(
    settings: Settings, env: WorkflowEnvironment, executor: ThreadPoolExecutor
) -> None:
    settings = settings.model_copy(update={"worker_shutdown_seconds": 12.5})
    worker = build_worker(env.client, settings, executor)
    assert worker.config()["graceful_shutdown_timeout"] == timedelta(seconds=12.5)


def two_free_ports() -> int:
    """A port p such that p and p + 1 are both free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two adjacent free ports")


async def get_until_up(http: httpx.AsyncClient, url: str, within: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + within
    while True:
        try:
            return await http.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_worker_process_serves_metrics_and_stops_cleanly_on_sigterm(
    env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    port = two_free_ports()
    environ = {
        **os.environ,
        "TRIALPATH_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TRIALPATH_TASK_QUEUE": settings.task_queue,
        "TRIALPATH_DATA_DIR": str(settings.data_dir),
        "TRIALPATH_DATABASE_URL": settings.database_url,
        "TRIALPATH_WORKER_METRICS_PORT": str(port),
        "TRIALPATH_METRICS_HOST": "127.0.0.1",
        "TRIALPATH_LOG_FORMAT": "json",
        "TRIALPATH_WORKER_SHUTDOWN_SECONDS": "5",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            cwd=PROJECT_ROOT,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while b"worker polling task queue" not in log.read_bytes():
            assert process.returncode is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
        async with httpx.AsyncClient() as http:
            sdk = await get_until_up(http, f"http://127.0.0.1:{port}/metrics")
            assert sdk.status_code == 200
            # The SDK's core records its first samples once the pollers run.
            while "temporal_" not in sdk.text and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                sdk = await http.get(f"http://127.0.0.1:{port}/metrics")
            assert "temporal_" in sdk.text, sdk.text[:500]
            ours = await get_until_up(http, f"http://127.0.0.1:{port + 1}/metrics")
            assert ours.status_code == 200
            assert "trialpath_messages_total" in ours.text
            assert "trialpath_provider_latency_seconds" in ours.text

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    events = [json.loads(line)["event"] for line in log.read_text().splitlines() if line]
    assert any(e.startswith("worker polling task queue") for e in events), events
    assert any(e.startswith("stopping: no new tasks") for e in events), events
    assert events[-1] == "worker stopped", events

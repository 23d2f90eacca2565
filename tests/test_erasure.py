"""Erasure reaches every store, every run of the workflow, and settles: it reports what it
erased, and a second call finds nothing left. Store by store on the test database (SQLite, or
PostgreSQL in the PostgreSQL pass), and on the dev server for the histories."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import Session, SQLModel, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.records import RecordActivities, RecordProgressInput, TrialSnapshot
from tests.conftest import API_KEY, dev_server
from trialpath.core.contract import TrialProfile
from trialpath.entry.api.app import create_app
from trialpath.operations.config import PACKAGE_DIR, Settings
from trialpath.operations.db import make_engine
from trialpath.operations.erasure import COVERAGE, erase_rows
from trialpath.operations.models import CallSlot, Message, MessageEvent, PendingSignal, Trial
from worker import build_worker

NAME, EMAIL, PHONE = "Grace Hopper", "grace.hopper@navy.example", "+33612345678"
PERSONAL = (NAME, EMAIL, PHONE, "Grace", "navy.example", "33612345678", "1.2.3.4")


def test_every_table_says_what_erasure_does_to_it(settings: Settings) -> None:
    """A new table fails here until `trialpath.operations.erasure.COVERAGE` says how it is erased
    (or that it holds no personal data)."""
    engine = make_engine(settings.effective_database_url)
    tables = set(sa.inspect(engine).get_table_names())
    assert tables == set(SQLModel.metadata.tables) | {"alembic_version"}
    assert sorted(tables - set(COVERAGE)) == [], "tables erasure does not cover"
    assert sorted(set(COVERAGE) - tables) == [], "COVERAGE names tables that do not exist"


def everything_stored(engine: sa.Engine) -> str:
    """Every row of every table, as text."""
    dumped = []
    with engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            for row in connection.execute(sa.select(table)):
                dumped.append(f"{table.name}: {tuple(row)}")
    return "\n".join(dumped)


async def test_erasure_reaches_every_store_and_settles(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    user = "erase-all"
    signup = {"user_id": user, "email": EMAIL, "name": NAME, "phone": PHONE, "company": "Navy"}
    started = await api.post("/v1/trials", json=signup, headers={"Idempotency-Key": "s-1"})
    assert started.status_code == 201, started.text
    await api.post(
        f"/v1/trials/{user}/events",
        json={"name": "login", "properties": {"ip": "1.2.3.4", "email": EMAIL}},
        headers={"Idempotency-Key": "e-1"},
    )
    await env.sleep(timedelta(hours=2))  # past the qualifier's hour: the welcome is out
    engine = make_engine(settings.effective_database_url)
    with Session(engine) as session:
        # What providers and retries leave behind: an error quoting the address, a webhook
        # body, a signal still waiting for delivery.
        message = session.exec(select(Message).where(Message.user_id == user)).first()
        assert message is not None
        message.error = f"550 5.1.1 <{EMAIL}>: mailbox unavailable"
        session.add(message)
        session.add(
            MessageEvent(
                id=f"sg-{uuid.uuid4()}",
                provider="sendgrid",
                message_key=message.key,
                type="open",
                at=datetime.now(UTC),
                payload={"email": EMAIL, "ip": "1.2.3.4", "useragent": "Mail/1.0"},
            )
        )
        session.add(
            PendingSignal(
                workflow_id=f"trial-{user}",
                signal="event",
                payload={"name": "login", "properties": {"email": EMAIL}},
            )
        )
        session.commit()
    before = everything_stored(engine)
    assert EMAIL in before and NAME in before and PHONE in before

    erased = (await api.delete(f"/v1/trials/{user}", params={"erase": "true"})).json()
    assert erased["erased"] is True and erased["nothing_left"] is False
    for store in (
        "trials",
        "trial_events",
        "messages",
        "message_events",
        "pending_signals",
        "idempotency_records",
    ):
        assert erased["erased_rows"].get(store, 0) >= 1, (store, erased["erased_rows"])

    after = everything_stored(engine)
    for personal in PERSONAL:
        assert personal not in after, f"{personal!r} is still stored"
    assert not [p for p in settings.outbox_dir.rglob("*") if f"trial-{user}" in p.name]

    again = (await api.delete(f"/v1/trials/{user}", params={"erase": "true"})).json()
    assert again["nothing_left"] is True
    assert again["erased_rows"] == {} and again["runs_deleted"] == 0


def test_a_write_on_its_way_at_erasure_writes_nothing_back(settings: Settings) -> None:
    """`record_progress` still running when the workflow was terminated finds the trial erased
    and leaves it so (the profile, and the stage the erasure set)."""
    engine = make_engine(settings.effective_database_url)
    now = datetime.now(UTC)
    profile = TrialProfile(user_id="erase-late", name=NAME, email=EMAIL, phone=PHONE)
    snapshot = TrialSnapshot(
        user_id="erase-late",
        workflow_id="trial-erase-late",
        signup_at=now,
        persona="technical",
        stage="onboarding",
        urgency=None,
        activated=False,
        activated_at=None,
        trial_ends_at=now + timedelta(days=14),
        cs_owner=None,
        experiment_arm="default",
        converted_plan=None,
        mrr=None,
        converted_at=None,
        ended_at=None,
        status={"stage": "onboarding"},
    )
    records = RecordActivities(engine)
    records.record_progress(RecordProgressInput(trial=snapshot, profile=profile))
    erase_rows(engine, "erase-late", settings.outbox_dir, cancelled=True)
    records.record_progress(RecordProgressInput(trial=snapshot, profile=profile))
    with Session(engine) as session:
        trial = session.get(Trial, "erase-late")
        assert trial is not None
        assert (trial.name, trial.email, trial.phone) == (None, None, None)
        assert trial.stage == "cancelled" and trial.erased_at is not None


def test_erasure_frees_the_calls_still_to_come(settings: Settings) -> None:
    """The erased trial's workflow is terminated before it could release its call: erasure
    frees the agent's slot (a call that took place stays, for the agent's day)."""
    engine = make_engine(settings.effective_database_url)
    now = datetime.now(UTC)
    with Session(engine) as session:
        for request, start in ((1, now - timedelta(days=1)), (2, now + timedelta(days=2))):
            session.add(
                CallSlot(
                    agent="Camille",
                    start_at=start,
                    end_at=start + timedelta(minutes=30),
                    workflow_id="trial-erase-call",
                    request=request,
                )
            )
        session.commit()
    erased = erase_rows(engine, "erase-call", settings.outbox_dir, cancelled=True, now=now)
    assert erased.counts.get("call_slots") == 1
    with Session(engine) as session:
        left = session.exec(select(CallSlot)).all()
        assert [s.request for s in left] == [1]


# --- histories, on the dev server -----------------------------------------------------------


@pytest.fixture(scope="module")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    async with dev_server() as environment:
        yield environment


async def runs_of(env: WorkflowEnvironment, workflow_id: str) -> list[str]:
    return [e.run_id async for e in env.client.list_workflows(f"WorkflowId = '{workflow_id}'")]


@pytest.mark.takes(seconds=35)
async def test_erasure_deletes_every_run_of_the_history(
    dev_env: WorkflowEnvironment, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    journey = tmp_path / "journey.toml"
    shipped = (PACKAGE_DIR / "journey.toml").read_text()
    journey.write_text(shipped.replace("max_history_events = 2000", "max_history_events = 100"))
    settings = Settings(
        data_dir=tmp_path / "data",
        task_queue=f"erase-{uuid.uuid4()}",
        journey_file=journey,
        api_keys=[f"tests:admin:{API_KEY}"],
        # The dev server deletes a just-closed workflow in about 30 s; room for a slow machine.
        erase_wait_seconds=120,
    )
    app = create_app(settings, client=dev_env.client)
    user = "erase-runs"
    worker: Worker
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=30,
        ) as api,
        build_worker(dev_env.client, settings, executor) as worker,
    ):
        assert worker is not None
        body: dict[str, Any] = {"user_id": user, "email": EMAIL, "name": NAME}
        assert (await api.post("/v1/trials", json=body)).status_code == 201
        # Enough signals for the history to pass 100 events: the trial continues as new.
        deadline = asyncio.get_running_loop().time() + 60
        while len(await runs_of(dev_env, f"trial-{user}")) < 2:
            assert asyncio.get_running_loop().time() < deadline, "no continue-as-new"
            await api.post(f"/v1/trials/{user}/events", json=[{"name": "login"}] * 10)
            await asyncio.sleep(0.3)

        started = asyncio.get_running_loop().time()
        erased = (await api.delete(f"/v1/trials/{user}", params={"erase": "true"})).json()
        took = asyncio.get_running_loop().time() - started
        assert erased.get("history_deleted") is True, (erased, took)
        assert erased["runs_deleted"] >= 2 and erased["history_pending"] == 0
        # Settled when the call returns: no run is found, by id or by listing.
        handle = dev_env.client.get_workflow_handle(f"trial-{user}")
        with pytest.raises(Exception, match="not found"):
            await handle.describe()
        assert await runs_of(dev_env, f"trial-{user}") == []
        again = (await api.delete(f"/v1/trials/{user}", params={"erase": "true"})).json()
        assert again["nothing_left"] is True


def test_retention_purges_what_is_kept_only_for_a_while(settings: Settings) -> None:
    """Stored retry answers and delivered signals go after their retention; undelivered
    signals and answers still being made stay, whatever their age."""
    from trialpath.operations.erasure import purge_expired
    from trialpath.operations.models import IdempotencyRecord

    engine = make_engine(settings.effective_database_url)
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=10), now - timedelta(hours=1)
    with Session(engine) as session:
        for key, created, status in (
            ("old", old, 201),
            ("recent", recent, 201),
            ("in-flight", old, None),
        ):
            session.add(
                IdempotencyRecord(
                    key=key, request_hash="h", status_code=status, body="{}", created_at=created
                )
            )
        for delivered, failed in ((old, False), (recent, False), (None, True), (None, False)):
            session.add(
                PendingSignal(
                    workflow_id="trial-u",
                    signal="event",
                    payload={},
                    created_at=old,
                    delivered_at=delivered,
                    failed=failed,
                )
            )
        session.commit()

    purged = purge_expired(engine, idempotency_hours=48, delivered_signal_days=7, now=now)
    assert (purged.idempotency_records, purged.pending_signals) == (1, 2)
    with Session(engine) as session:
        keys = sorted(r.key for r in session.exec(select(IdempotencyRecord)))
        assert keys == ["in-flight", "recent"]
        left = session.exec(select(PendingSignal)).all()
        assert sorted((s.delivered_at is not None, s.failed) for s in left) == [
            (False, False),
            (True, False),
        ]
    again = purge_expired(engine, idempotency_hours=48, delivered_signal_days=7, now=now)
    assert (again.idempotency_records, again.pending_signals) == (0, 0)

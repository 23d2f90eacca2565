"""A message with a fallback channel uses it when its own channel fails: at once when the
provider refuses it for good, after `fallback_after_attempts` when it keeps failing."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.driver import TrialDriver, align
from trialpath.operations.config import Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message
from worker import build_worker


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sms_settings(tmp_path: Path, database_url: str) -> Settings:
    """Real Twilio provider aimed at a port nobody listens on: every send is refused."""
    return Settings(
        data_dir=tmp_path / "data",
        task_queue=f"tq-{uuid.uuid4()}",
        database_url=database_url,
        sms_provider="twilio",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token=SecretStr("token"),
        twilio_from_number="+15005550006",
        twilio_base_url=f"http://127.0.0.1:{closed_port()}",
        delivery_timeout_seconds=2,
    )


@pytest.fixture
async def sms_worker(
    env: WorkflowEnvironment, sms_settings: Settings, executor: ThreadPoolExecutor
) -> AsyncIterator[Worker]:
    async with build_worker(env.client, sms_settings, executor) as w:
        yield w


def reminder_rows(settings: Settings, user_id: str) -> dict[str, Message]:
    with Session(make_engine(settings.effective_database_url)) as session:
        found = session.exec(select(Message).where(Message.user_id == user_id)).all()
    return {m.channel: m for m in found if m.message == "call_reminder_hour"}


@pytest.mark.parametrize(
    ("phone", "attempts", "error"),
    [
        ("+33 6 12 34 56 78", 3, "gave up after 3 attempts"),
        ("+1 555", 1, "not a valid E.164 phone number"),
    ],
    ids=["provider-down", "invalid-number"],
)
async def test_sms_falls_back_to_email(
    env: WorkflowEnvironment,
    sms_settings: Settings,
    sms_worker: Worker,
    phone: str,
    attempts: int,
    error: str,
) -> None:
    await align(env)
    user_id = f"fb-{attempts}"
    trial = TrialDriver(env, sms_settings, user_id, phone=phone, urgency="this_month")
    await trial.start()
    await trial.at_day(4.9)
    sent = {s.key.split(":", 1)[1] for s in (await trial.status()).sent}
    assert "call_reminder_hour.1/email" in sent
    assert "call_reminder_hour.1/in_app" in sent
    assert "call_reminder_hour.1/sms" not in sent
    rows = reminder_rows(sms_settings, user_id)
    assert rows["sms"].status == "failed"
    assert rows["sms"].attempts == attempts
    assert error in (rows["sms"].error or "")
    assert rows["email"].status == "sent" and rows["in_app"].status == "sent"
    await trial.signal("cancel", {})
    await trial.result()

"""A template broken after deploy never loses the message nor stops the journey: the send
fails with a named error, support is alerted, and the step is tried again later, so the fixed
template goes out."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.driver import TrialDriver, align
from trialpath.operations.config import PACKAGE_DIR, PROJECT_ROOT, Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message
from worker import build_worker

pytestmark = pytest.mark.database_agnostic  # its subject is not the database

WELCOME = "email/welcome.technical.en.html.j2"


@pytest.fixture
def broken_settings(settings: Settings, tmp_path: Path) -> Settings:
    templates = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", templates)
    path = templates / WELCOME
    path.write_text(path.read_text().replace("{{ user.first_name }}", "{{ user.frist_name }}", 1))
    journey = tmp_path / "journey.toml"
    journey.write_text(
        (PACKAGE_DIR / "journey.toml")
        .read_text()
        .replace("template_retry_max = 24", "template_retry_max = 2")
    )
    settings.templates_dir = templates
    settings.journey_file = journey
    return settings


@pytest.fixture
async def broken_worker(
    env: WorkflowEnvironment, broken_settings: Settings, executor: ThreadPoolExecutor
) -> AsyncIterator[Worker]:
    async with build_worker(env.client, broken_settings, executor) as w:
        yield w


def messages(settings: Settings, user_id: str) -> list[Message]:
    with Session(make_engine(settings.effective_database_url)) as session:
        return list(session.exec(select(Message).where(Message.user_id == user_id)).all())


async def test_a_fixed_template_goes_out_on_the_retry(
    env: WorkflowEnvironment, broken_settings: Settings, broken_worker: Worker
) -> None:
    assert "user.frist_name" in (broken_settings.templates_dir / WELCOME).read_text()
    await align(env)
    trial = TrialDriver(env, broken_settings, "tpl-fixed")
    await trial.start()
    await env.sleep(timedelta(minutes=5))

    status = await trial.status()
    steps = [s.key.split(":", 1)[1] for s in status.sent]
    assert "welcome/in_app" in steps and "welcome/email" not in steps
    rows = messages(broken_settings, "tpl-fixed")
    alerts = [m for m in rows if m.message == "template_failure"]
    assert len(alerts) == 1 and alerts[0].status == "sent" and alerts[0].channel == "support"
    assert f"{WELCOME}:" in alerts[0].text and "frist_name" in alerts[0].text
    assert "tried again at" in alerts[0].text
    assert not [m for m in rows if m.step == "welcome/email"]

    # A marketer fixes the file; the next try (an hour later) sends the corrected text.
    shutil.copy(PROJECT_ROOT / "templates" / WELCOME, broken_settings.templates_dir / WELCOME)
    await env.sleep(timedelta(hours=1, minutes=5))
    status = await trial.status()
    steps = [s.key.split(":", 1)[1] for s in status.sent]
    assert steps.count("welcome/email") == 1 and steps.count("welcome/in_app") == 1
    sent = [m for m in messages(broken_settings, "tpl-fixed") if m.step == "welcome/email"]
    assert len(sent) == 1 and sent[0].status == "sent" and "Ada" in sent[0].html
    # The journey went on meanwhile (the call invitation was not held up).
    assert any(k.startswith("call_invite") for k in steps)
    await trial.signal("cancel", {})
    await trial.result()


async def test_a_template_never_fixed_is_given_up_after_the_retries(
    env: WorkflowEnvironment, broken_settings: Settings, broken_worker: Worker
) -> None:
    await align(env)
    trial = TrialDriver(env, broken_settings, "tpl-broken")
    await trial.start()
    await env.sleep(timedelta(hours=3, minutes=5))
    alerts = [m for m in messages(broken_settings, "tpl-broken") if m.message == "template_failure"]
    assert len(alerts) == 3  # the first try and template_retry_max = 2 retries
    assert "will not be tried again" in sorted(alerts, key=lambda m: m.key)[-1].text
    status = await trial.status()
    steps = [s.key.split(":", 1)[1] for s in status.sent]
    assert "welcome/email" not in steps and steps.count("welcome/in_app") == 1
    await trial.signal("cancel", {})
    await trial.result()

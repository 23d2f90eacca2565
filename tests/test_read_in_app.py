"""A drip step with `unless_read_hours`, end to end on the time-skipping server: the in-app copy
goes first, and its email follows a day later only if the user has not read it meanwhile. The
read is a fact of the database (the inbox's read mark), checked by the send activity; the
copy not sent is recorded as skipped, and nothing is sent twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from tests.driver import TrialDriver, align, sent_log
from tests.test_workflow_scenarios import rows
from trialpath.operations.config import Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message
from worker import build_worker

STEP = '{ message = "drip_integration_guides", day = 7 }'
OCCURRENCE = "drip.drip_integration_guides"
FOLLOW_UP = f"{OCCURRENCE}.unless_read"

pytestmark = pytest.mark.database_agnostic


@pytest.fixture
def in_app_first(settings: Settings, tmp_path: Path) -> Settings:
    """The test journey with the technical day-7 tip sent in-app first, by email a day later
    unless it was read."""
    text = settings.journey_file.read_text()
    assert STEP in text, "the technical day-7 drip step changed: update this test"
    path = tmp_path / "journey.toml"
    path.write_text(text.replace(STEP, STEP[:-2] + ", unless_read_hours = 24 }"))
    settings.journey_file = path
    return settings


def message(settings: Settings, user_id: str, step: str) -> Message:
    (found,) = [m for m in rows(settings, Message, user_id) if m.step == step]
    return found


@pytest.mark.takes(seconds=20)
async def test_the_email_copy_goes_only_if_the_in_app_copy_is_unread(
    env: WorkflowEnvironment, in_app_first: Settings, executor: ThreadPoolExecutor
) -> None:
    settings = in_app_first
    async with build_worker(env.client, settings, executor):
        await align(env)
        reader = TrialDriver(env, settings, "reads-in-app")
        other = TrialDriver(env, settings, "never-reads")
        await reader.start()
        await other.start()
        await reader.at_day(7.5)  # the tip went out in-app at 09:00 on day 7, nothing else
        for trial in (reader, other):
            log = sent_log(await trial.status())
            assert (7, f"{OCCURRENCE}/in_app") in log
            assert not [step for _, step in log if step.startswith(f"{OCCURRENCE}/email")]

        # The user reads the card (what POST .../inbox/{id}/read records).
        engine = make_engine(settings.effective_database_url)
        with Session(engine) as session:
            card = session.get(Message, f"trial-{reader.user_id}:{OCCURRENCE}/in_app")
            assert card is not None and card.status == "sent"
            card.read_at = datetime.now(UTC)
            session.add(card)
            session.commit()

        await reader.at_day(8.5)
        read_log = sent_log(await reader.status())
        unread_log = sent_log(await other.status())

    # Read: the email copy is recorded as skipped, with the reason, and never sent.
    skipped = message(settings, reader.user_id, f"{FOLLOW_UP}/email")
    assert skipped.status == "skipped"
    assert skipped.sent_at is None and skipped.attempts == 0
    assert skipped.error and "in-app copy was read" in skipped.error
    assert not [step for _, step in read_log if step.startswith(FOLLOW_UP)]
    # Unread: the email copy went out on day 8, once, and only by email.
    assert [(d, s) for d, s in unread_log if s.startswith(FOLLOW_UP)] == [(8, f"{FOLLOW_UP}/email")]
    sent = message(settings, other.user_id, f"{FOLLOW_UP}/email")
    assert (sent.status, sent.attempts) == ("sent", 1)
    for trial in (reader, other):
        copies = [m for m in rows(settings, Message, trial.user_id) if OCCURRENCE in m.step]
        assert {m.step for m in copies} == {f"{OCCURRENCE}/in_app", f"{FOLLOW_UP}/email"}
        assert len(copies) == 2

"""Loading the journey at a trial's start (`load_journey_version`): a worker parses and stores
an unchanged file once, reads an edited one anew, and reports a bad file as the activity's
error (a real database: SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.journey import JourneyActivities, LoadJourneyInput
from trialpath.operations.config import PACKAGE_DIR, Settings
from trialpath.operations.db import make_engine


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return make_engine(settings.effective_database_url)


@pytest.fixture
def journey_file(tmp_path: Path) -> Path:
    path = tmp_path / "journey.toml"
    path.write_text((PACKAGE_DIR / "journey.toml").read_text(encoding="utf-8"), encoding="utf-8")
    return path


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements the engine runs while the test does."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_an_unchanged_file_is_parsed_and_stored_once(
    engine: Engine, journey_file: Path, statements: list[str]
) -> None:
    acts = JourneyActivities(journey_file, engine)
    first = ActivityEnvironment().run(acts.load_journey_version, LoadJourneyInput())
    assert statements, "the first start stores the version"
    statements.clear()
    again = ActivityEnvironment().run(acts.load_journey_version, LoadJourneyInput())
    assert again == first
    assert statements == []
    # Another worker (a new process) finds the stored version: the same one.
    other = ActivityEnvironment().run(
        JourneyActivities(journey_file, engine).load_journey_version, LoadJourneyInput()
    )
    assert other.version == first.version


def test_an_edited_file_is_read_anew_and_stored_as_a_new_version(
    engine: Engine, journey_file: Path
) -> None:
    acts = JourneyActivities(journey_file, engine)
    first = ActivityEnvironment().run(acts.load_journey_version, LoadJourneyInput())
    text = journey_file.read_text(encoding="utf-8")
    assert text.count("trial_days = 14") == 1
    journey_file.write_text(text.replace("trial_days = 14", "trial_days = 21"), encoding="utf-8")
    edited = ActivityEnvironment().run(acts.load_journey_version, LoadJourneyInput())
    assert (first.definition.trial_days, edited.definition.trial_days) == (14, 21)
    assert edited.version.id == first.version.id + 1
    # Back to the first text: its version, stored before.
    journey_file.write_text(text, encoding="utf-8")
    back = ActivityEnvironment().run(acts.load_journey_version, LoadJourneyInput())
    assert back.version == first.version


def test_a_missing_or_broken_file_fails_the_activity_with_the_reason(
    engine: Engine, journey_file: Path
) -> None:
    acts = JourneyActivities(journey_file, engine)
    ActivityEnvironment().run(acts.load_journey_version, LoadJourneyInput())
    journey_file.write_text("trial_days = [", encoding="utf-8")
    with pytest.raises(ApplicationError, match="is not valid TOML") as broken:
        ActivityEnvironment().run(acts.load_journey_version, LoadJourneyInput())
    assert broken.value.type == "JourneyDefinitionError"
    journey_file.unlink()
    with pytest.raises(ApplicationError, match="does not exist"):
        ActivityEnvironment().run(acts.load_journey, LoadJourneyInput())

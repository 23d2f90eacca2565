"""Journey versions: identity by content, storage under concurrency, diffs, the move rules, the
plan over the database, the CLI, the KPI split, and a trial carrying its version (time-skipping
server). Moving real running trials is tested on the dev server (tests/test_journey_migrate.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.conftest import run_cli
from tests.driver import TrialDriver
from trialpath.core import moves
from trialpath.core.contract import UPDATE_MOVE_JOURNEY, MoveJourney, workflow_id_for
from trialpath.core.definition import load_definition
from trialpath.growth import kpis
from trialpath.operations import versions
from trialpath.operations.config import PACKAGE_DIR, Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message, Trial

SHIPPED = PACKAGE_DIR / "journey.toml"


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.effective_database_url)
    yield engine
    engine.dispose()


def variant(tmp_path: Path, *changes: tuple[str, str], name: str = "journey.toml") -> Path:
    text = SHIPPED.read_text(encoding="utf-8")
    for old, new in changes:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


AUTOMATE_DAY_5 = (
    '{ message = "drip_automate", day = 4 }',
    '{ message = "drip_automate", day = 5 }',
)
NO_FIRST_WORKFLOW = (
    '  { message = "drip_first_workflow", day = 1, skip_if = ["workflow_created"] },\n',
    "",
)


def test_a_version_is_its_content_not_its_layout(tmp_path: Path) -> None:
    shipped = load_definition(SHIPPED)
    commented = variant(tmp_path, ("[stall]\n", "# a marketer's note\n\n[stall]\n"))
    assert versions.content_hash(load_definition(commented)) == versions.content_hash(shipped)
    changed = variant(tmp_path, AUTOMATE_DAY_5, name="changed.toml")
    assert versions.content_hash(load_definition(changed)) != versions.content_hash(shipped)
    assert len(versions.content_hash(shipped)) == 64


def test_storing_is_idempotent_and_safe_under_concurrency(engine: Engine, tmp_path: Path) -> None:
    shipped = load_definition(SHIPPED)
    first = versions.register(engine, shipped, "journey.toml")
    assert (first.id, first.label, first.name) == (1, "2026-11-25", "v1")
    assert versions.register(engine, shipped) == first
    changed = load_definition(variant(tmp_path, AUTOMATE_DAY_5))
    with ThreadPoolExecutor(8) as pool:
        refs = list(pool.map(lambda _: versions.register(engine, changed), range(8)))
    assert {ref.id for ref in refs} == {2}
    ref, loaded = versions.load(engine, 2)
    assert ref == refs[0] and loaded == changed
    with pytest.raises(versions.VersionError, match="no journey version v7"):
        versions.load(engine, 7)
    assert [(r.ref.id, r.trials) for r in versions.list_versions(engine)] == [(1, 0), (2, 0)]


def test_the_diff_names_each_changed_setting(tmp_path: Path) -> None:
    before = load_definition(SHIPPED)
    after = load_definition(
        variant(
            tmp_path,
            AUTOMATE_DAY_5,
            NO_FIRST_WORKFLOW,
            ("max_marketing_per_day = 1", "max_marketing_per_day = 2"),
        )
    )
    changes = {c.path: (c.before, c.after) for c in versions.diff(before, after)}
    assert changes == {
        "max_marketing_per_day": (1, 2),
        "personas.business.drip[drip_first_workflow].message": ("drip_first_workflow", None),
        "personas.business.drip[drip_first_workflow].day": (1, None),
        "personas.business.drip[drip_first_workflow].skip_if": (["workflow_created"], None),
        "personas.business.drip[drip_first_workflow].channels": (["email", "in_app"], None),
        "personas.business.drip[drip_first_workflow].unless_read_hours": (None, None),
        "personas.business.drip[drip_automate].day": (4, 5),
    }
    assert versions.diff(before, before) == []


def test_the_move_rules(tmp_path: Path) -> None:
    old = load_definition(SHIPPED)
    new = load_definition(variant(tmp_path, AUTOMATE_DAY_5, NO_FIRST_WORKFLOW))
    done = ["welcome", "drip.drip_first_workflow", "drip.drip_invite_team"]
    assert moves.current_step(done, old, "business") == "drip_invite_team"
    assert moves.current_step(["welcome"], old, "business") is None
    # On a step both versions have: it moves.
    assert moves.problems(new, persona="business", arm="default", current="drip_invite_team",
                          pending=[], old=old) == []  # fmt: skip
    # On a step the new version removed: it stays.
    assert moves.problems(
        new, persona="business", arm="default", current="drip_first_workflow", pending=[], old=old
    ) == ["its current step 'drip_first_workflow' is not on the business path in the new version"]
    # The generic arm follows the experiment's path, not the user's persona.
    assert (
        moves.problems(
            new, persona="technical", arm="generic", current="drip_first_workflow", pending=[]
        )
        != []
    )
    # Something waiting that the new version does not send.
    assert moves.problems(
        new, persona="business", arm="default", current=None, pending=["spring_offer"]
    ) == ["it has spring_offer waiting, which the new version does not send"]
    assert moves.message_of("stall_nudge.2") == "stall_nudge"
    assert moves.message_of("drip.drip_automate") == "drip_automate"

    before = moves.upcoming(old, "business", 3, {"drip_first_workflow", "drip_invite_team"})
    after = moves.upcoming(new, "business", 3, {"drip_first_workflow", "drip_invite_team"})
    assert [m for m in before] == [
        "drip_automate",
        "drip_optimise_workflows",
        "drip_team_collaboration",
        "trial_ending_3",
        "trial_ending_1",
        "trial_ending_0",
    ]
    changes = {d.message: d.change for d in moves.compare(before, after) if d.change != "same"}
    assert changes == {"drip_automate": "changed"}
    # On day 5, the automate step is behind the old version but ahead on the new one.
    late = moves.compare(
        moves.upcoming(old, "business", 5, set()), moves.upcoming(new, "business", 5, set())
    )
    assert {d.message: d.change for d in late if d.change != "same"} == {"drip_automate": "appears"}


def _trial(
    user: str, persona: str, version: int | None, signup: datetime, **fields: object
) -> Trial:
    return Trial(
        user_id=user,
        workflow_id=workflow_id_for(user),
        persona=persona,
        stage="onboarding",
        signup_at=signup,
        journey_version=version,
        **fields,  # type: ignore[arg-type]
    )


def _sent(user: str, occurrence: str) -> Message:
    return Message(
        key=f"{workflow_id_for(user)}:{occurrence}/email",
        workflow_id=workflow_id_for(user),
        user_id=user,
        step=f"{occurrence}/email",
        message=occurrence.removeprefix("drip."),
        channel="email",
        category="marketing",
        recipient=f"{user}@example.com",
        template="t",
        content_hash="h",
        status="sent",
    )


def test_the_plan_reads_the_running_trials(engine: Engine, tmp_path: Path) -> None:
    old = load_definition(SHIPPED)
    v1 = versions.register(engine, old)
    new_path = variant(tmp_path, AUTOMATE_DAY_5, NO_FIRST_WORKFLOW)
    new = load_definition(new_path)
    now = datetime(2026, 12, 5, 12, tzinfo=UTC)
    with Session(engine) as session:
        # b1, b2: business on day 3, at the invite step (v1): both move, automate moves to day 5.
        # b3: business on day 1, at the first-workflow step v2 removes: stays.
        # old: started before versions were recorded. done: ended (not running).
        for user, day in (("b1", 3), ("b2", 3), ("b3", 1)):
            session.add(_trial(user, "business", v1.id, now - timedelta(days=day, hours=1)))
        session.add(_trial("old", "technical", None, now - timedelta(days=2)))
        session.add(_trial("done", "business", v1.id, now - timedelta(days=20), ended_at=now))
        for user in ("b1", "b2"):
            session.add(_sent(user, "drip.drip_first_workflow"))
            session.add(_sent(user, "drip.drip_invite_team"))
        session.add(_sent("b3", "drip.drip_first_workflow"))
        session.commit()
    plan = versions.plan(engine, new, "v2", now=now)
    assert (plan.trials, plan.movable) == (4, 2)
    groups = {(g.version, g.path, g.current): g for g in plan.groups}
    invited = groups[(1, "business", "drip_invite_team")]
    assert (invited.trials, invited.movable) == (2, 2)
    assert dict(invited.differences) == {("drip_automate", "changed"): 2}
    first = groups[(1, "business", "drip_first_workflow")]
    assert (first.trials, first.movable) == (1, 0)
    assert list(first.problems) == [
        "its current step 'drip_first_workflow' is not on the business path in the new version"
    ]
    unrecorded = groups[(None, "technical", None)]
    assert unrecorded.movable == 0 and "not known" in next(iter(unrecorded.problems))


def test_the_kpis_split_by_journey_version(engine: Engine) -> None:
    signup = datetime(2026, 11, 2, 10, tzinfo=UTC)
    with Session(engine) as session:
        session.add(_trial("a", "business", 1, signup, activated=True, activated_at=signup))
        session.add(_trial("b", "business", 1, signup))
        session.add(_trial("c", "business", 2, signup, activated=True, activated_at=signup))
        session.add(_trial("d", "business", None, signup))
        session.commit()
    rows = kpis.activation_rate(engine, kpis.make_filters(), "journey")
    assert {r.group: (r.value, r.n) for r in rows} == {
        "v1": (50.0, 2),
        "v2": (100.0, 1),
        "unrecorded": (0.0, 1),
    }


def test_the_cli_lists_diffs_and_draws_versions(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    empty = run_cli(settings, "journey", "versions")
    assert empty.exit_code == 0 and "No journey version stored yet" in empty.output
    versions.register(engine, load_definition(SHIPPED), str(SHIPPED))
    listed = run_cli(settings, "journey", "versions")
    assert listed.exit_code == 0, listed.output
    assert "v1" in listed.output and "2026-11-25" in listed.output

    changed = variant(tmp_path, AUTOMATE_DAY_5)
    diff = run_cli(settings, "journey", "diff", "v1", str(changed), "--format", "json")
    assert diff.exit_code == 0, diff.output
    assert json.loads(diff.stdout) == [
        {"path": "personas.business.drip[drip_automate].day", "before": 4, "after": 5}
    ]
    table = run_cli(settings, "journey", "diff", "v1", str(changed))
    # The setting column, folded on narrow terminals, read back whole.
    settings_column = "".join(
        line.split("│")[1].strip() for line in table.output.splitlines() if line.count("│") == 4
    )
    assert settings_column == "personas.business.drip[drip_automate].day", table.output

    drawn = run_cli(settings, "journey", "show", "--version", "v1", "--format", "mermaid")
    assert drawn.exit_code == 0 and "Journey 2026-11-25" in drawn.stdout
    for args, message in (
        (("journey", "show", "--version", "v9"), "no journey version v9"),
        (("journey", "diff", "v1", "vx"), "vx"),
        (("journey", "plan", str(tmp_path / "missing.toml")), "does not exist"),
    ):
        refused = run_cli(settings, *args)
        assert refused.exit_code == 2, refused.output
        assert message in refused.output and "Traceback" not in refused.output


async def test_a_trial_carries_its_version_and_refuses_an_unsafe_move(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    trial = TrialDriver(env, settings, f"u-{uuid.uuid4().hex[:8]}", role="business")
    handle = await trial.start()
    await trial.at_day(0.5)
    status = await trial.status()
    assert status.journey_version == "v1"
    engine = make_engine(settings.effective_database_url)
    ref, defn = versions.load(engine, 1)
    assert ref.content_hash == versions.content_hash(load_definition(settings.journey_file))
    attributes = (await handle.describe()).typed_search_attributes
    assert any(pair.key.name == "JourneyVersion" and pair.value == "v1" for pair in attributes)
    # Moving to the version it runs is refused, with the reason.
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(UPDATE_MOVE_JOURNEY, MoveJourney(version=ref, definition=defn))
    assert "it already runs v1" in str(refused.value.cause)

"""`trialpath simulate`: a population played through the real workflow and activities on
time-skipping servers, its report, the comparison of two journeys and the checks CI runs."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

from tests.conftest import run_cli
from trialpath.core.contract import CallStatus, SentStatus, TrialStatus
from trialpath.core.definition import load_definition
from trialpath.growth.simulate import Played, actions_of, recorded, simulate, synthetic
from trialpath.growth.simulation_report import Simulation, analyse, from_dict, problems
from trialpath.operations.config import PACKAGE_DIR, PROJECT_ROOT, Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Trial, TrialEvent

SHIPPED = PACKAGE_DIR / "journey.toml"
TEMPLATES = PROJECT_ROOT / "templates"
MONDAY = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def status(user_id: str, persona: str, sent: list[SentStatus], **fields: object) -> TrialStatus:
    return TrialStatus.model_validate(
        {
            "user_id": user_id,
            "persona": persona,
            "stage": "expired",
            "activated": False,
            "activated_at": None,
            "trial_ends_at": MONDAY + timedelta(days=14),
            "next_wakeup": None,
            "call": CallStatus(state="none", at=None, agent=None),
            "sent": sent,
            "events_seen": {},
            **fields,
        }
    )


def sent(message: str, at: datetime, due: datetime | None, channel: str = "email") -> SentStatus:
    return SentStatus(
        key=f"{message}-{at.isoformat()}-{channel}",
        channel=channel,
        template=message,
        at=at,
        day=0,
        message=message,
        due=due,
    )


def test_the_report_tells_holds_by_window_and_cap_apart_and_finds_a_broken_cap() -> None:
    defn = load_definition(SHIPPED)
    first, second = synthetic(defn, 2, seed=3)
    users = [first, replace(second, timezone=first.timezone)]
    a, b = users[0].key, users[1].key
    tz = users[0].timezone
    # Local times for user a, whatever its zone.
    local = MONDAY.astimezone(ZoneInfo(tz))
    day2_midnight = local.replace(hour=0, minute=0) + timedelta(days=2)
    day2_nine = day2_midnight.replace(hour=9)
    day3_nine = day2_nine + timedelta(days=1)
    statuses = [
        status(
            a,
            "technical",
            [
                # Due at midnight, sent when the window opened: held by the window.
                sent("drip_connect_integration", day2_nine, day2_midnight),
                sent("drip_connect_integration", day2_nine, day2_midnight, "in_app"),
                # Due at 09:00 on day 2, sent on day 3: the cap pushed it.
                sent("stall_nudge", day3_nine, day2_nine),
            ],
            skipped=["drip.drip_api_quickstart", "trial_ending_3"],
            events_seen={"api_call": 3},
        ),
        status(
            b,
            "technical",
            [
                sent("stall_nudge", day2_nine, day2_nine),
                sent("activated", day2_nine + timedelta(hours=1), day2_nine),
            ],
        ),
    ]
    sim = analyse(defn, SHIPPED, users, Played(statuses, 2.0, MONDAY), seed=3)
    groups = sim.by_persona()["technical"]
    assert (groups.held_window, groups.held_cap) == (1, 1)
    assert groups.messages["drip_connect_integration/in_app"] == 1
    # api_call seen: the quickstart's skip is "done already"; the trial-ending step went stale.
    assert groups.done_already == Counter({"drip_api_quickstart": 1})
    assert groups.stale == Counter({"trial_ending_3": 1})
    # Two marketing messages on one local day for b: the cap (1 a day) is broken.
    assert len(sim.over_cap) == 1 and sim.over_cap[0].startswith(f"{b}/")
    assert "technical/drip_webhooks" in sim.unreachable
    assert "technical/drip_connect_integration" not in sim.unreachable
    assert any("daily cap broken" in p for p in problems(sim))
    # A saved report reads back to the same figures.
    again = from_dict(json.loads(json.dumps(sim.as_dict())))
    assert again.as_dict() == sim.as_dict()


def test_scripts_become_signals_on_the_quarter_hour() -> None:
    user = synthetic(load_definition(SHIPPED), 5, seed=11)[0]
    actions = actions_of(user)
    assert actions and all(a["at"] % 900 == 0 for a in actions)
    signals = {a["signal"] for a in actions}
    assert signals <= {"event", "call_completed", "converted", "cancel"}
    assert len([k for _, k, _ in user.script if k != "survey"]) == len(actions)


def test_recorded_trials_become_users_at_the_same_journey_time(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    signup = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    with Session(engine) as session:
        session.add(
            Trial(
                user_id="u-fast",
                workflow_id="trial-u-fast",
                persona="executive",
                persona_source="qualifier",
                urgency="this_week",
                signup_at=signup,
                seconds_per_day=60.0,  # a demo trial: a journey day a minute
                converted_at=signup + timedelta(minutes=5),
                converted_plan="team",
                mrr=99,
                timezone="Asia/Tokyo",
            )
        )
        session.add(
            TrialEvent(
                id="e1",
                user_id="u-fast",
                name="report_shared",
                occurred_at=signup + timedelta(minutes=2),
            )
        )
        session.add(
            Trial(
                user_id="u-old",
                workflow_id="trial-u-old",
                persona="business",
                persona_source="inferred",
                signup_at=signup - timedelta(days=30),
            )
        )
        session.commit()
    users = recorded(engine, signup - timedelta(days=1), signup + timedelta(days=1))
    assert len(users) == 1
    (user,) = users
    assert (user.persona, user.urgency, user.timezone) == ("executive", "this_week", "Asia/Tokyo")
    assert user.script == [
        (2.0, "event", {"name": "report_shared"}),
        (5.0, "conversion", {"plan": "team", "mrr": 99.0}),
    ]
    assert "u-fast" not in user.key  # no identifier of the real user is carried over
    engine.dispose()


@pytest.mark.takes(seconds=40)
async def test_the_shipped_journey_played_by_a_population() -> None:
    ended: list[int] = []
    sim = await simulate(SHIPPED, population=14, seed=5, templates=TEMPLATES, progress=ended.append)
    assert sim.population == 14 and sum(ended) == 14
    assert sum(g.trials for g in sim.groups.values()) == 14
    assert sum(g.funnel["signed_up"] for g in sim.groups.values()) == 14
    assert sim.over_cap == []
    defn = load_definition(SHIPPED)
    users = synthetic(defn, 14, seed=5)
    for key, group in sim.groups.items():
        arm = key.split("/")[1]
        if "holdout" in arm:
            assert not any(m.startswith(("welcome/", "drip_")) for m in group.messages)
        else:
            # Every user out of the holdouts is welcomed once per channel.
            assert group.messages["welcome/email"] == group.trials
    # One database for every part: no agent takes more calls a day than its capacity.
    capacity = {agent.name: agent.daily_capacity for agent in defn.call.agents}
    for key, calls in sim.calls.items():
        assert calls <= capacity[key.split("/")[0]], key
    converted = sum(g.funnel["converted"] for g in sim.groups.values())
    assert converted == len([u for u in users if any(k == "conversion" for _, k, _ in u.script)])
    assert sim.trials_per_second > 0


def broken_templates(tmp_path: Path, message: str) -> Path:
    """The templates with `message` broken on every channel (an include that does not exist)."""
    folder = tmp_path / "templates"
    shutil.copytree(TEMPLATES, folder)
    for path in folder.glob(f"*/{message}.*"):
        path.write_text(path.read_text() + '\n{% include "no-such-part.j2" %}\n')
    return folder


@pytest.mark.takes(seconds=40)
async def test_a_broken_template_makes_its_step_unreachable(tmp_path: Path) -> None:
    defn = load_definition(SHIPPED)
    # Technical users only: the broken step is theirs.
    users = [u for u in synthetic(defn, 40, seed=2) if u.persona == "technical"][:8]
    sim = await simulate(
        SHIPPED,
        population=len(users),
        seed=2,
        templates=broken_templates(tmp_path, "drip_webhooks"),
        users=users,
    )
    assert "technical/drip_webhooks" in sim.unreachable
    assert "step never reached: technical/drip_webhooks" in problems(sim)
    assert not any(m.startswith("drip_webhooks/") for m in sim.by_persona()["technical"].messages)


@pytest.mark.takes(seconds=60)
def test_simulate_against_a_variant_and_a_saved_baseline(
    settings: Settings, tmp_path: Path
) -> None:
    variant = tmp_path / "variant.toml"
    text = SHIPPED.read_text()
    assert '  { message = "drip_webhooks", day = 4 },\n' in text
    variant.write_text(text.replace('  { message = "drip_webhooks", day = 4 },\n', ""))
    settings.journey_file = SHIPPED
    result = run_cli(
        settings,
        "simulate",
        "--journey",
        str(variant),
        "--against",
        str(SHIPPED),
        "--population",
        "12",
        "--seed",
        "4",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # The step taken out is not reported unreachable: it is no longer in the journey.
    assert not any("drip_webhooks" in p for p in report["problems"])
    assert report["journey"]["population"] == report["against"]["population"] == 12
    technical = {d["what"]: d for d in report["differences"]["technical"]}
    assert technical["drip_webhooks/email"]["journey"] == 0
    assert technical["drip_webhooks/email"]["against"] > 0

    # Saved as a baseline with half the messages: the journey now doubles them.
    baseline = report["against"]
    for group in baseline["groups"].values():
        group["by_step_and_channel"] = {k: v // 2 for k, v in group["by_step_and_channel"].items()}
    saved = tmp_path / "baseline.json"
    saved.write_text(json.dumps(baseline))
    html = tmp_path / "report.html"
    result = run_cli(
        settings,
        "simulate",
        "--against",
        str(saved),
        "--population",
        "12",
        "--seed",
        "4",
        "--format",
        "html",
        "--out",
        str(html),
        "--check",
    )
    assert result.exit_code == 1, result.output
    assert "messages per user doubled for" in result.output
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert 'class="problem"' in page and "messages per user doubled" in page


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--format", "xml"], "--format must be one of table, json, html"),
        (["--journey", "/nonexistent/journey.toml"], "does not exist"),
        (["--population", "0"], "greater than or equal to 1"),
        (["--recorded", "yesterday"], "--recorded must be an ISO 8601 date"),
        (["--recorded", "2020-01-01..2020-01-02"], "no trial signed up"),
    ],
)
def test_bad_input_is_a_clear_error(settings: Settings, args: list[str], expected: str) -> None:
    result = run_cli(settings, "simulate", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


def test_a_bad_saved_report_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    saved = tmp_path / "bad.json"
    saved.write_text('{"groups": {}}')
    result = run_cli(settings, "simulate", "--against", str(saved))
    assert result.exit_code == 2
    assert "not a saved simulation report" in result.output


def test_a_saved_report_compares_with_its_simulation(tmp_path: Path) -> None:
    defn = load_definition(SHIPPED)
    users = synthetic(defn, 1, seed=1)
    one = status(users[0].key, "business", [sent("welcome", MONDAY, MONDAY)])
    sim = analyse(defn, SHIPPED, users, Played([one], 1.0, MONDAY), seed=1)
    same: Simulation = from_dict(sim.as_dict())
    assert not any("doubled" in p for p in problems(sim, same))


def test_a_part_played_again_starts_from_none_of_its_rows(tmp_path: Path) -> None:
    from trialpath.growth.simulate import _forget
    from trialpath.operations.models import CallSlot

    database = tmp_path / "shared.db"
    engine = make_engine(f"sqlite:///{database}")
    signup = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    with Session(engine) as session:
        for hour, user in enumerate(("stuck-1", "other-1")):
            session.add(Trial(user_id=user, workflow_id=f"trial-{user}", signup_at=signup))
            session.add(TrialEvent(id=f"e-{user}", user_id=user, name="login", occurred_at=signup))
            session.add(
                CallSlot(
                    agent="Camille",
                    start_at=signup + timedelta(hours=hour),
                    end_at=signup + timedelta(hours=hour, minutes=30),
                    workflow_id=f"trial-{user}",
                    request=1,
                )
            )
        session.commit()
    _forget(database, ["stuck-1"])
    with Session(engine) as session:
        assert [t.user_id for t in session.exec(select(Trial)).all()] == ["other-1"]
        assert [e.user_id for e in session.exec(select(TrialEvent)).all()] == ["other-1"]
        assert [c.workflow_id for c in session.exec(select(CallSlot)).all()] == ["trial-other-1"]
    engine.dispose()

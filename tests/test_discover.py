"""Activation-metric discovery: the figures of one rule by hand, and a synthetic population
where the true rule is planted (it must come first), through the module, the API, the CLI and
the dashboard."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from rich.console import Console
from sqlalchemy import Engine
from sqlmodel import Session

from tests.conftest import run_cli
from trialpath.entry.cli import kpis as kpis_cli
from trialpath.growth import discover as discovery
from trialpath.growth.kpis import Filters
from trialpath.operations.config import Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Trial, TrialEvent

SIGNUP = datetime(2026, 10, 5, 9, tzinfo=UTC)
PLANTED = ("teammate_invited", 2, 3)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.effective_database_url)
    yield engine
    engine.dispose()


def test_one_rule_by_hand() -> None:
    # 10 users, 4 bought. Reached: u1-u4 (3 buyers) and u5 (no). Others: 5 users, 1 buyer.
    reached = [True, True, True, True, True, False, False, False, False, False]
    bought = [True, True, True, False, False, True, False, False, False, False]
    c = discovery.measure("x ≥ 1 within 3 d", reached, bought)
    assert c is not None
    assert (c.users, c.reached, c.buyers, c.buyers_reached) == (10, 5, 4, 3)
    assert (c.share, c.precision, c.recall, c.others) == (0.5, 0.6, 0.75, 0.2)
    assert c.lift == pytest.approx(3.0)
    assert c.separation == pytest.approx(0.4)
    # Wilson: 3/5 → (0.2307, 0.8824), 1/5 → (0.0362, 0.6245). Newcombe's interval of the
    # difference: 0.4 - sqrt(0.3693² + 0.4245²) = -0.1626, 0.4 + sqrt(0.2824² + 0.1638²) = 0.7265.
    assert c.precision_ci == pytest.approx((0.2307, 0.8824), abs=1e-4)
    assert c.separation_ci == pytest.approx((-0.1626, 0.7265), abs=1e-3)
    assert discovery.measure("all", [True] * 3, [True, False, False]) is None


def plant(engine: Engine, users: int = 500, seed: int = 3) -> None:
    """Each user invites 0 to 3 teammates at random days of the first week. Those with two
    invitations within 3 days buy at 60 %, the others at 10 %. Decoys: logins (everyone, no
    signal), API calls (buyers make a few more), and exports after buying (leak: not counted)."""
    rng = random.Random(seed)
    with Session(engine) as session:
        for i in range(users):
            user = f"p{i}"
            invites = sorted(rng.uniform(0, 6.5) for _ in range(rng.randint(0, 3)))
            planted = sum(1 for d in invites if d <= 3) >= 2
            bought = rng.random() < (0.6 if planted else 0.1)
            converted = SIGNUP + timedelta(days=10) if bought else None
            session.add(
                Trial(
                    user_id=user,
                    workflow_id=f"trial-{user}",
                    persona="business",
                    stage="converted" if bought else "expired",
                    signup_at=SIGNUP,
                    converted_at=converted,
                    activated=bool(invites),  # a looser configured rule: one invitation
                )
            )
            days = [("teammate_invited", d) for d in invites]
            days += [("login", rng.uniform(0, 13)) for _ in range(rng.randint(1, 8))]
            calls = rng.randint(0, 6) + (2 if bought else 0)
            days += [("api_call", rng.uniform(0, 9)) for _ in range(calls)]
            if bought:
                days += [("report_exported", 10.5)]  # after paying
            for k, (name, day) in enumerate(days):
                session.add(
                    TrialEvent(
                        id=f"{user}:{k}",
                        user_id=user,
                        name=name,
                        occurred_at=SIGNUP + timedelta(days=day),
                    )
                )
        session.commit()


def test_the_planted_rule_comes_first(engine: Engine) -> None:
    plant(engine)
    found = discovery.discover(engine, Filters())
    best = found.candidates[0]
    assert (best.event, best.at_least, best.within_days) == PLANTED, [
        c.rule for c in found.candidates[:5]
    ]
    assert best.rank == 1 and best.separation_ci[0] > 0.3
    assert best.precision > 0.45 and best.others < 0.2  # planted: 60 % against 10 %
    # What buyers did after paying is no evidence.
    assert all(c.event != "report_exported" for c in found.candidates)
    # The configured rule (one invitation, any time) separates less: ranked below.
    assert found.configured is not None and found.configured.rank > 1
    assert found.configured.separation < best.separation
    assert found.users == 500 and found.tried >= len(found.candidates)


def test_no_trial_over_yet_says_so(engine: Engine) -> None:
    found = discovery.discover(engine, Filters())
    assert (found.candidates, found.note) == ([], "no trial of this period is over yet")


def test_the_command_line(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The command line's console, as a process started in a wide terminal makes it.
    monkeypatch.setattr(kpis_cli, "console", Console(width=200))
    plant(engine, users=300)
    shown = run_cli(settings, "kpis", "discover", "--top", "3", "--format", "json")
    assert shown.exit_code == 0, shown.output  # type: ignore[attr-defined]
    body = json.loads(shown.stdout)  # type: ignore[attr-defined]
    first = body["candidates"][0]
    assert (first["event"], first["at_least"], first["within_days"]) == PLANTED
    assert len(body["candidates"]) == 3 and body["configured"]["rank"] > 1
    table = run_cli(settings, "kpis", "discover", "--top", "3")
    assert "teammate_invited ≥ 2 within 3 d" in table.output  # type: ignore[attr-defined]
    assert "configured activation rule" in table.output  # type: ignore[attr-defined]
    bad = run_cli(settings, "kpis", "discover", "--days", "0")
    assert bad.exit_code == 2 and "Traceback" not in bad.output  # type: ignore[attr-defined]


async def test_the_api_and_the_dashboard(api: httpx.AsyncClient, settings: Settings) -> None:
    plant(make_engine(settings.effective_database_url), users=300)
    answer = await api.get("/v1/kpis/activation-candidates", params={"top": 5})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    first = body["candidates"][0]
    assert (first["event"], first["at_least"], first["within_days"]) == PLANTED
    assert body["users"] == 300 and body["configured"]["rule"] == "configured activation rule"
    refused = await api.get("/v1/kpis/activation-candidates", params={"top": 0})
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    page = await api.get("/dashboard")
    assert page.status_code == 200
    assert 'data-testid="candidates-table"' in page.text
    assert "teammate_invited ≥ 2 within 3 d" in page.text

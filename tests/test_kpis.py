"""Every KPI on ten hand-made trials, each expected value worked out by hand in the test.

The database is the test's own (SQLite, or PostgreSQL when TRIALPATH_TEST_DATABASE_URL is set),
so the SQL is checked on both.

The ten trials (signup 2026, UTC; ISO weeks: Mon 2 Nov starts W45, Mon 9 Nov W46):

user persona   arm           signup        milestone  activated  stage      converted
u1   technical personalized  Mon 02 Nov 10h  +2 h      +24 h      converted  day 10, 100 €
u2   technical generic       Tue 03 Nov 10h  +10 h     +48 h      expired    -
u3   business  personalized  Wed 04 Nov 09h  +4 h      +6 h       converted  day 5, 50 €
u4   business  generic       Thu 05 Nov 12h  +30 h     no         cancelled  -
u5   executive personalized  Mon 09 Nov 08h  +1 h      +2 h       converted  day 12, 200 €
u6   executive holdout       Tue 10 Nov 10h  never     no         expired    -
u7   (none)    generic       Wed 11 Nov 10h  never     no         qualifying -
u8   technical personalized  Thu 12 Nov 10h  +20 h     no         onboarding -   (all 8 key events)
u9   business  holdout       Wed 25 Nov 10h  +1 h      no         onboarding -   (W48)
u10  technical personalized  Fri 30 Oct 10h  +100 h    no         expired    -   (W44)
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from trialpath.entry.cli.main import app
from trialpath.growth import experiments, kpis
from trialpath.growth.kpis import Filters, KpiError, KpiValue
from trialpath.growth.stats import always_valid_diff, needed_per_arm, two_proportions
from trialpath.operations.config import Settings, SettingsError, get_settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message, Preference, Trial, TrialEvent

UNTIL = datetime(2026, 12, 1, tzinfo=UTC)
AT = Filters(until=UNTIL)


def signup(day: int, hour: int, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


TRIALS: dict[str, dict[str, Any]] = {
    "u1": dict(persona="technical", experiment_arm="personalized", signup_at=signup(2, 10),
               activated=True, activated_h=24, stage="converted", converted_d=10, mrr=100.0,
               persona_source="signup", persona_h=0),
    "u2": dict(persona="technical", experiment_arm="generic", signup_at=signup(3, 10),
               activated=True, activated_h=48, stage="expired", ended_d=14,
               persona_source="qualifier", persona_h=2),
    "u3": dict(persona="business", experiment_arm="personalized", signup_at=signup(4, 9),
               activated=True, activated_h=6, stage="converted", converted_d=5, mrr=50.0,
               persona_source="qualifier", persona_h=6),
    "u4": dict(persona="business", experiment_arm="generic", signup_at=signup(5, 12),
               stage="cancelled", ended_d=3, persona_source="inferred", persona_h=1),
    "u5": dict(persona="executive", experiment_arm="personalized", signup_at=signup(9, 8),
               activated=True, activated_h=2, stage="converted", converted_d=12, mrr=200.0,
               persona_source="signup", persona_h=0),
    "u6": dict(persona="executive", experiment_arm="holdout", signup_at=signup(10, 10),
               stage="expired", ended_d=14, persona_source="defaulted", persona_h=1),
    "u7": dict(persona=None, experiment_arm="generic", signup_at=signup(11, 10),
               stage="qualifying"),
    "u8": dict(persona="technical", experiment_arm="personalized", signup_at=signup(12, 10),
               stage="onboarding", persona_source="qualifier", persona_h=4),
    "u9": dict(persona="business", experiment_arm="holdout", signup_at=signup(25, 10),
               stage="onboarding", persona_source="signup", persona_h=0),
    "u10": dict(persona="technical", experiment_arm="personalized", signup_at=signup(30, 10, 10),
                stage="expired", ended_d=14, persona_source="inferred", persona_h=1),
}  # fmt: skip

KEY_EVENTS = [
    "integration_connected", "api_call", "workflow_created", "teammate_invited",
    "dashboard_configured", "data_source_connected", "report_shared", "login",
]  # fmt: skip

# (user, event, hours after signup, properties, counted)
EVENTS: list[tuple[str, str, float, dict[str, Any], bool]] = [
    ("u1", "integration_connected", 2, {}, True),
    ("u1", "api_call", 3, {}, True),
    ("u1", "survey_csat", 48, {"score": 5}, True),
    ("u1", "survey_ces", 48, {"score": 6}, True),
    ("u1", "login", 8 * 24, {}, True),
    # After its conversion (day 10): stored uncounted (not for activation), as the API does.
    ("u1", "plan_upgraded", 11 * 24, {"plan": "scale"}, False),
    ("u1", "referral_sent", 12 * 24, {}, False),
    ("u2", "integration_connected", 10, {}, True),
    ("u2", "api_call", 11, {}, True),
    ("u2", "dashboard_configured", 12, {}, True),
    ("u2", "survey_csat", 48, {"score": 3}, True),
    ("u2", "survey_ces", 48, {"score": 2}, True),
    ("u2", "login", 15 * 24, {}, True),  # after day 14: not 7-day retention
    ("u3", "workflow_created", 4, {}, True),
    ("u3", "teammate_invited", 5, {}, True),
    ("u3", "survey_csat", 48, {"score": "4"}, True),  # a form sends text
    ("u3", "addon_purchased", 3 * 24, {}, True),  # before its conversion (day 5): no upsell
    # Day 7 exactly, after buying on day 5 (uncounted): retained all the same (inclusive).
    ("u3", "login", 7 * 24, {}, False),
    ("u4", "workflow_created", 30, {}, True),
    ("u4", "survey_csat", 48, {"score": 9}, True),  # off the 1-5 scale: ignored
    ("u4", "login", 14 * 24, {}, True),  # day 14 exactly: not retained (exclusive)
    ("u5", "dashboard_configured", 1, {}, True),
    ("u5", "report_shared", 2, {}, True),
    ("u5", "data_source_connected", 3, {}, True),
    ("u5", "survey_csat", 48, {"score": "great"}, True),  # not a number: ignored
    ("u5", "survey_ces", 48, {"score": 7}, True),
    ("u5", "login", 9 * 24, {}, True),
    ("u5", "referral_sent", 13 * 24, {}, False),  # after its conversion (day 12)
    ("u6", "login", 1, {}, True),
    *[("u8", name, 20 + i, {}, True) for i, name in enumerate(KEY_EVENTS)],
    ("u8", "api_call", 8 * 24, {}, True),
    ("u9", "workflow_created", 1, {}, True),
    ("u10", "integration_connected", -24, {}, False),  # before the trial: not counted
    ("u10", "integration_connected", 100, {}, True),
]

# (user, channel, status)
MESSAGES = [
    ("u1", "email", "sent"),
    ("u1", "email", "sent"),
    ("u1", "in_app", "sent"),
    ("u1", "email", "failed"),  # not sent
    ("u1", "support", "sent"),  # to the CS team, not the user
    ("u2", "sms", "sent"),
    ("u5", "email", "sent"),
]

# (user, channel, subscribed)
PREFERENCES = [
    ("u1", "email", False),
    ("u2", "email", True),  # subscribed again: not counted
    ("u4", "sms", False),
    ("u4", "email", False),
]


def insert(engine: Engine) -> None:
    with Session(engine) as session:
        for user_id, spec in TRIALS.items():
            spec = dict(spec)
            start: datetime = spec["signup_at"]
            activated_h = spec.pop("activated_h", None)
            persona_h = spec.pop("persona_h", None)
            converted_d = spec.pop("converted_d", None)
            ended_d = spec.pop("ended_d", converted_d)
            session.add(
                Trial(
                    user_id=user_id,
                    workflow_id=f"trial-{user_id}",
                    activated_at=start + timedelta(hours=activated_h) if activated_h else None,
                    persona_at=start + timedelta(hours=persona_h)
                    if persona_h is not None
                    else None,
                    converted_at=start + timedelta(days=converted_d) if converted_d else None,
                    converted_plan="team" if converted_d else None,
                    ended_at=start + timedelta(days=ended_d) if ended_d else None,
                    **spec,
                )
            )
        for i, (user_id, name, hours, properties, counted) in enumerate(EVENTS):
            start = TRIALS[user_id]["signup_at"]
            session.add(
                TrialEvent(
                    id=f"{user_id}:e{i}",
                    user_id=user_id,
                    name=name,
                    occurred_at=start + timedelta(hours=hours),
                    counted=counted,
                    properties=properties,
                )
            )
        for i, (user_id, channel, status) in enumerate(MESSAGES):
            session.add(
                Message(
                    key=f"trial-{user_id}:m{i}/{channel}",
                    workflow_id=f"trial-{user_id}",
                    user_id=user_id,
                    step=f"m{i}",
                    message="welcome",
                    channel=channel,
                    category="marketing",
                    recipient=f"{user_id}@example.com",
                    template="welcome",
                    content_hash="x",
                    status=status,
                )
            )
        for user_id, channel, subscribed in PREFERENCES:
            session.add(
                Preference(user_id=user_id, channel=channel, subscribed=subscribed, source="api")
            )
        session.commit()


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.effective_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    insert(engine)
    return engine


def value(rows: list[KpiValue], kpi: str | None = None, group: str = "all") -> KpiValue:
    found = [r for r in rows if r.group == group and (kpi is None or r.kpi == kpi)]
    assert len(found) == 1, (kpi, group, rows)
    return found[0]


def groups(rows: list[KpiValue]) -> dict[str, tuple[float | None, int]]:
    return {r.group: (None if r.value is None else pytest.approx(r.value), r.n) for r in rows}


# --- each KPI, all ten trials ----------------------------------------------------------------


def test_time_to_first_value(seeded: Engine) -> None:
    rows = kpis.time_to_first_value(seeded, AT)
    # Hours to the persona milestone: u1 2, u2 10, u3 4, u4 30, u5 1, u8 20, u9 1, u10 100
    # (its earlier, uncounted event does not count); u6 and u7 never.
    reached = sorted([2, 10, 4, 30, 1, 20, 1, 100])  # 1 1 2 4 10 20 30 100
    median = value(rows, "ttfv_median")
    assert (median.value, median.n, median.detail, median.unit) == (
        (4 + 10) / 2,
        10,
        {"reached": 8},
        "hours",
    )
    # p90: rank 0.9 * 7 = 6.3, between 30 and 100: 30 + 0.3 * 70 = 51.
    assert value(rows, "ttfv_p90").value == pytest.approx(30 + 0.3 * (100 - 30)) == 51
    assert reached[6:] == [30, 100]


def test_activation_completion_and_adoption(seeded: Engine) -> None:
    # Activated: u1 u2 u3 u5 = 4 of 10.
    activation = value(kpis.activation_rate(seeded, AT))
    assert (activation.value, activation.n, activation.detail) == (40.0, 10, {"count": 4})
    # Each step of the user's own persona (its milestone and the events its activation rule
    # needs, once each): u1, u2, u8 (technical: integration, api_call), u3 (business: workflow,
    # teammate), u5 (executive: dashboard, report) = 5 of 10. Not u4, u9 (no teammate), u6
    # (a login), u10 (no api_call), u7 (no persona). u8 completed without activating (1 API
    # call of 10): seed 003's point, completion is not activation.
    completion = value(kpis.onboarding_completion(seeded, AT))
    assert (completion.value, completion.n, completion.detail["count"]) == (50.0, 10, 5)
    by_persona = {v.group: v.value for v in kpis.onboarding_completion(seeded, AT, "persona")}
    assert by_persona == {
        "technical": 75.0,
        "business": pytest.approx(100 / 3),
        "executive": 50.0,
        "unknown": 0.0,
    }
    # At least 3 distinct progress events (a login is none): u2 (4), u5 (dashboard, report,
    # data source), u8 (7) = 3; u1 (integration, api_call), u3 (workflow, teammate) and u4
    # have 2.
    adoption = value(kpis.adoption_rate(seeded, AT))
    assert (adoption.value, adoption.detail["count"]) == (30.0, 3)


def test_time_to_proficiency(seeded: Engine) -> None:
    # Signup to activation: u1 24 h, u2 48 h, u3 6 h, u5 2 h -> 2 6 24 48, median 15.
    row = value(kpis.time_to_proficiency(seeded, AT))
    assert (row.value, row.n, row.detail) == ((6 + 24) / 2, 10, {"reached": 4})


def test_retention_7d(seeded: Engine) -> None:
    # Signed up at least 7 days before 1 Dec: all but u9 (25 Nov) = 9. A counted event from
    # day 7 (included) to day 14 (excluded): u1 (login day 8), u3 (login day 7 exactly), u5
    # (login day 9), u8 (api_call day 8) = 4. Not u2 (day 15), u4 (day 14 exactly).
    row = value(kpis.retention_7d(seeded, AT))
    assert (row.value, row.n, row.detail["count"]) == (pytest.approx(100 * 4 / 9), 9, 4)
    assert row.detail["read_at"] == UNTIL.isoformat()


def test_trial_to_paid_and_churn(seeded: Engine) -> None:
    # Over: u1 u3 u5 (converted), u2 u6 u10 (expired), u4 (cancelled) = 7; u7 u8 u9 run.
    paid = value(kpis.trial_to_paid(seeded, AT))
    assert (paid.value, paid.n, paid.detail) == (pytest.approx(100 * 3 / 7), 7, {"count": 3})
    churn = value(kpis.churn_rate(seeded, AT))
    assert (churn.value, churn.n) == (pytest.approx(100 * 4 / 7), 7)
    assert churn.detail == {"count": 4, "expired": 3, "cancelled": 1}


def test_csat_and_ces(seeded: Engine) -> None:
    # CSAT answers: 5 (u1), 3 (u2), "4" (u3); 9 (u4) and "great" (u5) are ignored.
    row = value(kpis.csat(seeded, AT))
    assert (row.value, row.n, row.unit) == ((5 + 3 + 4) / 3, 3, "score")
    assert row.detail["ignored"] == 2 and row.detail["users"] == 3
    assert row.detail["distribution"] == {"1": 0, "2": 0, "3": 1, "4": 1, "5": 1}
    assert row.detail["share_4_or_more_pct"] == pytest.approx(100 * 2 / 3)
    # CES (1 very hard .. 7 very easy): 6, 2, 7.
    ces = value(kpis.ces(seeded, AT))
    assert (ces.value, ces.n, ces.detail["share_5_or_more_pct"]) == (
        5.0,
        3,
        pytest.approx(100 * 2 / 3),
    )


def test_upsell_referral_and_cltv(seeded: Engine) -> None:
    # Converted: u1, u3, u5. Upsell after conversion: u1 only (u3's add-on came before).
    upsell = value(kpis.upsell_rate(seeded, AT))
    assert (upsell.value, upsell.n) == (pytest.approx(100 / 3), 3)
    # Referral: u1 and u5.
    referral = value(kpis.referral_rate(seeded, AT))
    assert (referral.value, referral.n) == (pytest.approx(200 / 3), 3)
    # Mean MRR (100 + 50 + 200) / 3 = 116.67 € over 1 / 0.03 = 33.3 months = 3888.89 €.
    cltv = value(kpis.cltv(seeded, AT))
    assert (cltv.value, cltv.n, cltv.unit) == (pytest.approx(350 / 3 / 0.03), 3, "EUR")
    assert cltv.detail["mean_mrr"] == pytest.approx(350 / 3)
    assert cltv.detail["lifetime_months"] == pytest.approx(1 / 0.03)
    assert value(kpis.cltv(seeded, AT, monthly_churn=0.05)).value == pytest.approx(350 / 3 * 20)


def test_qualifier_answers_and_the_split_by_them(seeded: Engine) -> None:
    # Persona known: all but u7 = 9. Answered: at signup u1 u5 u9, in the qualifier u2 (2 h),
    # u3 (6 h), u8 (4 h) = 6 of 9; inferred u4 u10, defaulted u6. Median answer time: 4 h.
    rate = value(kpis.qualifier_answer_rate(seeded, AT))
    assert (rate.value, rate.n) == (pytest.approx(200 / 3), 9)
    assert {k: rate.detail[k] for k in ("signup", "qualifier", "inferred", "defaulted")} == {
        "signup": 3,
        "qualifier": 3,
        "inferred": 2,
        "defaulted": 1,
    }
    assert rate.detail["median_hours_to_answer"] == pytest.approx(4.0)
    # Activation by how the persona was known: answered u1 u2 u3 u5 of 6; none of the others.
    split = groups(kpis.activation_rate(seeded, AT, "qualifier"))
    assert split == {
        "answered": (pytest.approx(200 / 3), 6),
        "defaulted": (0.0, 1),
        "inferred": (0.0, 2),
        "unknown": (0.0, 1),
    }


def test_the_cltv_churn_is_a_setting_shown_with_the_figure(
    seeded: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIALPATH_CLTV_MONTHLY_CHURN", "0.1")
    get_settings.cache_clear()
    try:
        cltv = value(kpis.cltv(seeded, AT))
        assert cltv.value == pytest.approx(350 / 3 * 10)
        assert cltv.detail["monthly_churn"] == 0.1
        monkeypatch.setenv("TRIALPATH_CLTV_MONTHLY_CHURN", "0")
        get_settings.cache_clear()
        with pytest.raises(
            SettingsError, match="TRIALPATH_CLTV_MONTHLY_CHURN: Input should be greater than 0"
        ):
            get_settings()
    finally:
        get_settings.cache_clear()
    with pytest.raises(KpiError, match="monthly_churn"):
        kpis.cltv(seeded, AT, monthly_churn=0)


def test_messages_and_unsubscribes(seeded: Engine) -> None:
    # Sent to users: u1 2 email + 1 in-app, u2 1 sms, u5 1 email = 5 (u1's failed email and
    # support alert are not) over 10 trials.
    row = value(kpis.messages_per_user(seeded, AT))
    assert (row.value, row.n, row.detail) == (0.5, 10, {"sent": 5})
    assert groups(kpis.messages_per_user(seeded, AT, "channel")) == {
        "email": (3 / 10, 10),
        "sms": (1 / 10, 10),
        "in_app": (1 / 10, 10),
    }
    # Unsubscribed somewhere: u1 (email), u4 (sms and email); u2 subscribed again = 2 of 10.
    assert (value(kpis.unsubscribe_rate(seeded, AT)).value) == 20.0
    assert groups(kpis.unsubscribe_rate(seeded, AT, "channel")) == {
        "email": (20.0, 10),
        "sms": (10.0, 10),
        "in_app": (0.0, 10),
    }


def test_compute_kpis_has_every_kpi_once_without_split(seeded: Engine) -> None:
    rows = kpis.compute_kpis(seeded, AT)
    names = [r.kpi for r in rows]
    assert names == [
        "ttfv_median", "ttfv_p90", "activation_rate", "onboarding_completion", "adoption_rate",
        "time_to_proficiency", "retention_7d", "trial_to_paid", "churn_rate", "csat",
        "csat_onboarding", "ces", "upsell_rate", "referral_rate", "cltv", "messages_per_user",
        "unsubscribe_rate", "qualifier_answer_rate", "support_task_rate", "support_reach_rate",
        "incremental_conversion", "incremental_revenue",
    ]  # fmt: skip
    assert {r.group for r in rows} == {"all"}
    assert {r.unit for r in rows} == {"hours", "%", "score", "EUR", "count", "pts"}


# --- splits ----------------------------------------------------------------------------------


def test_split_by_persona(seeded: Engine) -> None:
    # technical u1 u2 u8 u10; business u3 u4 u9; executive u5 u6; unknown u7.
    assert groups(kpis.activation_rate(seeded, AT, "persona")) == {
        "technical": (50.0, 4),  # u1 u2
        "business": (100 / 3, 3),  # u3
        "executive": (50.0, 2),  # u5
        "unknown": (0.0, 1),
    }
    ttfv = [r for r in kpis.time_to_first_value(seeded, AT, "persona") if r.kpi == "ttfv_median"]
    assert groups(ttfv) == {
        "technical": (statistics.median([2, 10, 20, 100]), 4),  # 15
        "business": (4.0, 3),  # 1 4 30
        "executive": (1.0, 2),
        "unknown": (None, 1),  # no persona, no milestone
    }
    assert [r.group for r in ttfv] == ["technical", "business", "executive", "unknown"]


def test_split_by_cohort(seeded: Engine) -> None:
    # W44: u10; W45: u1-u4 (u1 u2 u3 activated); W46: u5-u8 (u5); W48: u9.
    assert groups(kpis.activation_rate(seeded, AT, "cohort")) == {
        "2026-W44": (0.0, 1),
        "2026-W45": (75.0, 4),
        "2026-W46": (25.0, 4),
        "2026-W48": (0.0, 1),
    }


def test_iso_week_matches_python_around_new_year(engine: Engine) -> None:
    """The dialect's ISO week (SQLite has no %V before 3.46) against Python's, over days where
    the ISO year differs from the calendar year."""
    days = [datetime(2020, 12, 25, 23, tzinfo=UTC) + timedelta(days=d) for d in range(0, 20)]
    days += [datetime(year, 12, 31, 12, tzinfo=UTC) for year in range(2024, 2033)]
    days += [datetime(year, 1, 1, 0, 30, tzinfo=UTC) for year in range(2024, 2033)]
    with Session(engine) as session:
        for i, day in enumerate(days):
            session.add(Trial(user_id=f"w{i}", workflow_id=f"trial-w{i}", signup_at=day))
        session.commit()
    rows = kpis.activation_rate(engine, Filters(), "cohort")
    expected: dict[str, int] = {}
    for day in days:
        year, week, _ = day.isocalendar()
        key = f"{year}-W{week:02d}"
        expected[key] = expected.get(key, 0) + 1
    assert {r.group: r.n for r in rows} == expected
    assert "2020-W53" in expected and "2026-W53" in expected


def test_split_by_arm(seeded: Engine) -> None:
    # personalized u1 u3 u5 u8 u10; generic u2 u4 u7; holdout u6 u9.
    assert groups(kpis.activation_rate(seeded, AT, "arm")) == {
        "generic": (100 / 3, 3),  # u2
        "holdout": (0.0, 2),
        "personalized": (60.0, 5),  # u1 u3 u5
    }
    # Converted per arm: personalized u1 u3 u5 (MRR 100, 50, 200).
    assert groups(kpis.cltv(seeded, AT, "arm"))["personalized"] == (350 / 3 / 0.03, 3)


def test_split_by_channel_only_splits_message_kpis(seeded: Engine) -> None:
    rows = kpis.compute_kpis(seeded, AT, "channel")
    assert {r.group for r in rows if r.kpi == "activation_rate"} == {"all"}
    assert {r.group for r in rows if r.kpi == "messages_per_user"} == {"email", "sms", "in_app"}
    assert value(rows, "activation_rate").value == 40.0


def test_since_filter(seeded: Engine) -> None:
    # From 1 Nov: u10 (30 Oct) is out, 9 trials left; 4 of them activated.
    since = Filters(since=datetime(2026, 11, 1, tzinfo=UTC), until=UNTIL)
    activation = value(kpis.activation_rate(seeded, since))
    assert (activation.value, activation.n) == (pytest.approx(400 / 9), 9)
    # TTFV without u10's 100 h: 1 1 2 4 10 20 30 -> median 4.
    assert value(kpis.time_to_first_value(seeded, since), "ttfv_median").value == 4.0
    # Until is exclusive: until 9 Nov 08:00 leaves u5 out (signed up at that very time).
    early = kpis.make_filters("2026-11-01", "2026-11-08")  # a bare date includes its day
    assert early.until == datetime(2026, 11, 9, tzinfo=UTC)
    assert value(kpis.activation_rate(seeded, early)).n == 4  # u1-u4


def test_empty_database_gives_none_with_n_zero(engine: Engine) -> None:
    for by in (None, "persona", "cohort", "arm", "channel"):
        rows = kpis.compute_kpis(engine, Filters(), by)
        assert rows
        assert all(r.value is None and r.n == 0 for r in rows), [r for r in rows if r.n]
    assert kpis.funnel(engine, Filters())["all"] == [(step, 0) for step in kpis.FUNNEL_STEPS]
    assert kpis.retention_curves(engine, Filters()) == {}
    assert experiments.experiment_report(engine, Filters()) == []
    assert kpis.headline(engine, Filters())["trials"].value == 0


# --- dashboard data --------------------------------------------------------------------------


def test_funnel(seeded: Engine) -> None:
    # Each step counts those that also made every step before it.
    # all: 10 signed up, 9 qualified (not u7), 8 first value (not u6), 4 activated (u1 u2 u3
    # u5), 3 converted (u1 u3 u5).
    funnel = kpis.funnel(seeded, AT)
    steps = list(kpis.FUNNEL_STEPS)
    assert funnel["all"] == list(zip(steps, [10, 9, 8, 4, 3], strict=True))
    assert funnel["technical"] == list(zip(steps, [4, 4, 4, 2, 1], strict=True))  # u1 u2 u8 u10
    assert funnel["business"] == list(zip(steps, [3, 3, 3, 1, 1], strict=True))  # u3 u4 u9
    assert funnel["executive"] == list(zip(steps, [2, 2, 1, 1, 1], strict=True))  # u5 u6
    assert funnel["unknown"] == list(zip(steps, [1, 0, 0, 0, 0], strict=True))  # u7


def test_ttfv_hours(seeded: Engine) -> None:
    assert kpis.ttfv_hours(seeded, AT) == {
        "technical": [2.0, 10.0, 20.0, 100.0],
        "business": [1.0, 4.0, 30.0],
        "executive": [1.0],
    }


def test_retention_curves(seeded: Engine) -> None:
    # Last counted event, in days after signup: u1 12, u2 15, u3 7, u4 14 | u5 13, u6 0.04,
    # u7 none, u8 8 | u9 0.04 | u10 4.2. A day shows once the cohort's newest signup has
    # lived it by 1 Dec.
    curves = kpis.retention_curves(seeded, AT)
    assert curves == {
        "2026-W44": [(0, 100.0), (7, 0.0), (14, 0.0), (21, 0.0), (28, 0.0)],
        # Newest 5 Nov 12:00: day 28 = 3 Dec is after 1 Dec. Day 14: u2 and u4 of 4.
        "2026-W45": [(0, 100.0), (7, 100.0), (14, 50.0), (21, 0.0)],
        # Newest 12 Nov: up to day 14. u7 never came: 3 of 4 at day 0; u5 and u8 at day 7.
        "2026-W46": [(0, 75.0), (7, 50.0), (14, 0.0)],
        "2026-W48": [(0, 100.0)],
    }
    assert list(kpis.retention_curves(seeded, AT, weeks=2)) == ["2026-W46", "2026-W48"]


def test_headline(seeded: Engine) -> None:
    headline = kpis.headline(seeded, AT)
    assert list(headline) == [
        "trials", "activation_rate", "ttfv_median", "trial_to_paid", "retention_7d",
    ]  # fmt: skip
    assert (headline["trials"].value, headline["trials"].n) == (10.0, 10)
    assert headline["activation_rate"].value == 40.0
    assert headline["ttfv_median"].value == 7.0
    assert headline["trial_to_paid"].value == pytest.approx(300 / 7)
    assert headline["retention_7d"].value == pytest.approx(400 / 9)


# --- experiment ------------------------------------------------------------------------------


def test_experiment_report_on_few_trials_says_too_few(seeded: Engine) -> None:
    report = experiments.experiment_report(seeded, AT, control="generic")
    assert {(r.kpi, r.arm) for r in report} == {
        (kpi, arm) for kpi in experiments.EXPERIMENT_KPIS for arm in ("personalized", "holdout")
    }
    row = next(r for r in report if (r.kpi, r.arm) == ("activation_rate", "personalized"))
    # personalized 3/5 against generic 1/3.
    result = two_proportions(3, 5, 1, 3)
    need = needed_per_arm(1 / 3, 3 / 5)
    assert need == 54  # (1.96 sqrt(2 .4667 .5333) + .8416 sqrt(.3333 .6667 + .6 .4))^2 / .2667^2
    assert (row.value, row.control_value, row.n, row.control_n) == (
        60.0,
        pytest.approx(100 / 3),
        5,
        3,
    )
    assert row.diff == pytest.approx(100 * (3 / 5 - 1 / 3))
    assert (row.ci_low, row.ci_high) == (
        pytest.approx(100 * result.ci_low),
        pytest.approx(100 * result.ci_high),
    )
    assert row.p_value == pytest.approx(result.p_value)
    assert row.needed_per_arm == 54
    assert row.verdict == "too few trials to conclude (n=5 and 3; need about 54 per arm)"
    ttfv = next(r for r in report if (r.kpi, r.arm) == ("ttfv_median", "personalized"))
    # Reached: personalized u1 2, u3 4, u5 1, u8 20, u10 100 (median 4); generic u2 10, u4 30.
    assert (ttfv.value, ttfv.control_value, ttfv.diff) == (4.0, 20.0, -16.0)
    assert (ttfv.n, ttfv.control_n) == (5, 2)
    assert ttfv.verdict == "too few trials to conclude (n=5 and 2; need at least 30 per arm)"
    # Retention 4/5 against 0/3 is "significant" for the z-test (p = 0.03), but the normal
    # approximation needs 5 expected in each cell: pooled 4/8, so 10 per arm, and the report
    # asks for 30 per arm at least (the formula alone would say 5).
    retention = next(r for r in report if (r.kpi, r.arm) == ("retention_7d", "personalized"))
    assert retention.p_value is not None and retention.p_value < 0.05
    assert retention.needed_per_arm == needed_per_arm(0, 0.8) == 5
    assert retention.verdict == "too few trials to conclude (n=5 and 3; need about 30 per arm)"
    csat = next(r for r in report if (r.kpi, r.arm) == ("csat", "holdout"))
    assert csat.verdict == "no data for holdout"


def experiment_rows(engine: Engine, arm: str, n: int, activated: int, start: int = 0) -> None:
    with Session(engine) as session:
        for i in range(n):
            session.add(
                Trial(
                    user_id=f"{arm}-{start + i}",
                    workflow_id=f"trial-{arm}-{start + i}",
                    persona="business",
                    experiment_arm=arm,
                    activated=i < activated,
                    signup_at=datetime(2026, 11, 2, tzinfo=UTC) + timedelta(minutes=i),
                )
            )
        session.commit()


def test_experiment_report_with_a_clear_winner(engine: Engine) -> None:
    # The seed's numbers: 34 % activated with personalized paths against 12 % generic.
    experiment_rows(engine, "personalized", 100, 34)
    experiment_rows(engine, "generic", 100, 12)
    experiment_rows(engine, "default", 7, 0)  # before the experiment: left out
    report = experiments.experiment_report(engine, AT)
    row = next(r for r in report if r.kpi == "activation_rate")
    assert (row.arm, row.control, row.unit) == ("personalized", "generic", "pts")
    assert row.diff == pytest.approx(22.0)
    # Newcombe interval 10.43 to 32.93 pts; z = 3.6966, p = 0.00022 (tests/test_stats.py).
    assert (row.ci_low, row.ci_high) == (
        pytest.approx(10.43, abs=0.01),
        pytest.approx(32.93, abs=0.01),
    )
    assert row.p_value == pytest.approx(0.000218536, rel=1e-5)
    assert row.needed_per_arm == 57
    assert row.verdict == "personalized beats generic by +22 pts (95 % CI +10 to +33)"
    # Nobody completed in either arm: sized for 5 points from 0 %, needed_per_arm(0, 0.05).
    completion = next(r for r in report if r.kpi == "onboarding_completion")
    assert completion.needed_per_arm == needed_per_arm(0, 0.05) == 152
    assert completion.verdict == (
        "too few trials to conclude (n=100 and 100; need about 152 per arm)"
    )
    assert [r.arm for r in report if r.kpi == "activation_rate"] == ["personalized"]


def test_experiment_report_when_the_arm_is_worse(engine: Engine) -> None:
    experiment_rows(engine, "holdout", 100, 12)
    experiment_rows(engine, "generic", 100, 34)
    row = next(r for r in experiments.experiment_report(engine, AT) if r.kpi == "activation_rate")
    assert row.verdict == "holdout trails generic by −22 pts (95 % CI −33 to −10)"


def test_experiment_report_with_large_arms_and_no_difference(engine: Engine) -> None:
    # 30 % activated in both arms. Sizing for a 5-point difference (the observed one is 0):
    # 30 % against 35 % needs (1.96 sqrt(2 .325 .675) + .8416 sqrt(.3 .7 + .35 .65))^2 / .05^2
    # = 1377 per arm. With 1000 per arm that is still too few; with 2000 it is no difference.
    assert needed_per_arm(0.30, 0.35) == 1377
    experiment_rows(engine, "personalized", 1000, 300)
    experiment_rows(engine, "generic", 1000, 300)
    row = next(r for r in experiments.experiment_report(engine, AT) if r.kpi == "activation_rate")
    assert (row.diff, row.p_value, row.needed_per_arm) == (0.0, 1.0, 1377)
    assert row.verdict == "too few trials to conclude (n=1000 and 1000; need about 1377 per arm)"
    experiment_rows(engine, "personalized", 1000, 300, start=1000)
    experiment_rows(engine, "generic", 1000, 300, start=1000)
    row = next(r for r in experiments.experiment_report(engine, AT) if r.kpi == "activation_rate")
    assert row.verdict == (
        "no clear difference between personalized and generic (+0 pts, 95 % CI −3 to +3, p = 1.00)"
    )


def test_no_experiment(engine: Engine) -> None:
    experiment_rows(engine, "default", 5, 1)
    assert experiments.experiment_report(engine, AT) == []
    sizes = experiments.arm_sizes(engine, AT)
    assert sizes == {"default": 5}
    assert experiments.experiment_note(sizes) == (
        "no experiment in this period: every trial is in arm 'default'"
    )
    assert "control arm 'control'" in (
        experiments.experiment_note({"a": 1, "b": 2}, "control") or ""
    )
    assert experiments.experiment_note({"generic": 1, "personalized": 2}) is None


# --- filters ---------------------------------------------------------------------------------


def test_filters_parsing() -> None:
    assert kpis.make_filters("2026-11-01", None).since == datetime(2026, 11, 1, tzinfo=UTC)
    moment = kpis.make_filters(None, "2026-11-01T10:00:00+01:00").until
    assert moment == datetime(2026, 11, 1, 9, tzinfo=UTC)
    assert kpis.make_filters(None, "2026-11-01T10:00").until == datetime(
        2026, 11, 1, 10, tzinfo=UTC
    )
    with pytest.raises(KpiError, match="not a date"):
        kpis.make_filters("yesterday")
    with pytest.raises(KpiError, match="before until"):
        kpis.make_filters("2026-11-02", "2026-11-01")
    with pytest.raises(KpiError, match="between 1970 and 9000"):
        kpis.make_filters("0001-01-01")
    with pytest.raises(KpiError, match="between 1970 and 9000"):
        kpis.make_filters(None, "9999-12-31")
    with pytest.raises(KpiError, match="--by must be one of"):
        kpis.check_split("country")


# --- CLI and API -----------------------------------------------------------------------------


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The command reads its settings from the environment (cached once read)."""
    monkeypatch.setenv("TRIALPATH_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TRIALPATH_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("cli_env")
def test_cli(seeded: Engine) -> None:
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, ["kpis", *args])
        assert result.exception is None or isinstance(result.exception, SystemExit), result
        return result.exit_code, result.stdout, result.stderr

    period = ("--since", "2026-10-01", "--until", "2026-11-30")
    code, out, err = run(*period)
    assert code == 0, err
    assert "trials signed up from 2026-10-01 to 2026-11-30" in out
    for name in ("ttfv_median", "activation_rate", "onboarding_completion", "unsubscribe_rate"):
        assert name in out
    assert "40.0 %" in out and "Dimmed: n < 30" in out

    code, out, err = run(*period, "--by", "persona", "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    row = next(r for r in rows if (r["kpi"], r["group"]) == ("activation_rate", "technical"))
    assert (float(row["value"]), row["n"], json.loads(row["detail"])) == (50.0, "4", {"count": 2})

    code, out, err = run(*period, "--format", "json", "--experiment")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["by"] is None and answer["filters"]["until"] == "2026-12-01T00:00:00+00:00"
    assert value([KpiValue(**v) for v in answer["kpis"]], "activation_rate").value == 40.0
    assert answer["experiment_note"] is None and len(answer["experiment"]) == 12

    code, out, err = run(*period, "--experiment")
    assert code == 0, err
    assert "Experiment: each arm against generic" in out
    assert "activation_rate, personalized: too few trials to conclude (n=5 and 3" in out

    code, out, err = run(*period, "--experiment", "--format", "csv")
    assert code == 0, err
    assert next(csv.DictReader(io.StringIO(out)))["verdict"].startswith("too few trials")

    for args, message in (
        (("--by", "country"), "--by must be one of persona, cohort, arm, channel"),
        (("--since", "last week"), "not a date"),
        (("--since", "2026-12-01", "--until", "2026-11-01"), "must be before until"),
        (("--format", "xml"), "--format must be table, csv or json"),
    ):
        code, out, err = run(*args)
        assert (code, out) == (2, ""), args
        assert message in err and len(err.strip().splitlines()) == 1, err


async def test_api(api: httpx.AsyncClient, settings: Settings) -> None:
    insert(make_engine(settings.effective_database_url))
    response = await api.get("/v1/kpis", params={"until": "2026-11-30", "by": "arm"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"filters", "by", "kpis", "experiment", "experiment_note"}
    assert body["by"] == "arm" and body["filters"]["since"] is None
    kpi_rows = [KpiValue(**v) for v in body["kpis"]]
    assert value(kpi_rows, "activation_rate", "personalized").value == 60.0
    assert body["experiment_note"] is None
    verdicts = {(c["kpi"], c["arm"]): c["verdict"] for c in body["experiment"]}
    assert verdicts[("activation_rate", "personalized")].startswith("too few trials")

    response = await api.get("/v1/kpis", params={"format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text.startswith("kpi,group,value,n,unit,detail\n")

    experiment = await api.get("/v1/kpis/experiment", params={"control": "holdout"})
    assert experiment.status_code == 200, experiment.text
    report = experiment.json()
    assert report["arms"] == {"generic": 3, "holdout": 2, "personalized": 5}
    assert {c["arm"] for c in report["comparisons"]} == {"generic", "personalized"}

    bad = await api.get("/v1/kpis", params={"since": "soon", "by": "planet"})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert "by" in bad.json()["detail"]
    bad = await api.get("/v1/kpis", params={"since": "soon"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.since"
    bad = await api.get("/v1/kpis", params={"since": "2026-12-01", "until": "2026-11-01"})
    assert bad.status_code == 422 and "before until" in bad.json()["detail"]
    no_key = await api.get("/v1/kpis", headers={"Authorization": ""})
    assert no_key.status_code == 401


def test_experiment_report_reads_any_time_and_adjusts_by_what_was_known_at_signup(
    engine: Engine,
) -> None:
    """40 users per arm; half told at signup they buy this week. Those activate at 75 %
    (personalized) and 55 % (generic), the others at 25 % and 5 %: a 20-point effect in both
    halves. Urgency explains much of who activates, so CUPED narrows the interval."""
    with Session(engine) as session:
        for arm, rates in (("personalized", (15, 5)), ("generic", (11, 1))):
            for i in range(40):
                urgent = i < 20
                activated = (i < rates[0]) if urgent else (i - 20 < rates[1])
                session.add(
                    Trial(
                        user_id=f"{arm}-{i}",
                        workflow_id=f"trial-{arm}-{i}",
                        persona="business",
                        persona_source="signup",
                        urgency="this_week" if urgent else "evaluating",
                        experiment_arm=arm,
                        activated=activated,
                        signup_at=datetime(2026, 11, 2, tzinfo=UTC) + timedelta(minutes=i),
                    )
                )
        session.commit()
    row = next(r for r in experiments.experiment_report(engine, AT) if r.kpi == "activation_rate")
    assert row.diff == pytest.approx(20.0)  # 50 % against 30 %
    valid = always_valid_diff(20, 40, 12, 40)
    assert (row.always_valid_low, row.always_valid_high) == (
        pytest.approx(100 * valid.ci_low),
        pytest.approx(100 * valid.ci_high),
    )
    assert row.always_valid_low < row.ci_low and row.always_valid_high > row.ci_high
    # CUPED: y on the covariates (urgency this week is the only one that varies) pooled,
    # theta = cov / var = 0.5 (urgent: 65 %, others 15 %); within each arm urgency is balanced,
    # so the adjusted difference is the same 20 points with less variance.
    assert row.cuped_diff == pytest.approx(20.0)
    # Variance of y: 0.4 * 0.6 = 0.24; left within the two urgency groups: their mean variance.
    within = (0.65 * 0.35 + 0.15 * 0.85) / 2
    assert row.variance_reduction == pytest.approx(1 - within / 0.24, abs=0.01)
    assert row.cuped_ci_high - row.cuped_ci_low < row.ci_high - row.ci_low


async def test_the_power_calculator_over_http_and_the_command_line(
    api: httpx.AsyncClient,
) -> None:
    answer = await api.get("/v1/kpis/power", params={"baseline": 0.2, "lift": 0.05})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["per_arm"], body["total"], body["per_arm_arcsine"]) == (1094, 2188, 1092)
    assert body["target"] == pytest.approx(0.25)
    for params, detail in (
        ({"baseline": 1.5, "lift": 0.05}, "baseline"),
        ({"baseline": 0.9, "lift": 0.2}, "not a rate"),
        ({"baseline": 0.2}, "lift"),
    ):
        refused = await api.get("/v1/kpis/power", params=params)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert detail in refused.text
    runner = CliRunner()
    shown = runner.invoke(app, ["kpis", "power", "--baseline", "0.2", "--lift", "0.25",
                                "--relative", "--format", "json"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["per_arm"] == 1094
    refused_cli = runner.invoke(app, ["kpis", "power", "--baseline", "0.2", "--lift", "0"])
    assert refused_cli.exit_code == 2 and "lift must not be 0" in refused_cli.output


def test_what_the_journey_adds_against_the_global_holdout(engine: Engine) -> None:
    """Ended trials: 10 in the global holdout (1 bought at 50 €), 20 on the journey (6 bought
    at 100 €); a running trial and the experiment's own holdout arm count as journey or not
    at all as stated below."""
    signup = datetime(2026, 11, 2, tzinfo=UTC)
    with Session(engine) as session:
        rows = [("global_holdout", i, i < 1, 50.0) for i in range(10)]
        rows += [("personalized", i, i < 6, 100.0) for i in range(20)]
        for arm, i, bought, mrr in rows:
            session.add(
                Trial(
                    user_id=f"{arm}-{i}",
                    workflow_id=f"trial-{arm}-{i}",
                    persona="business",
                    experiment_arm=arm,
                    stage="converted" if bought else "expired",
                    converted_at=signup + timedelta(days=5) if bought else None,
                    mrr=mrr if bought else None,
                    signup_at=signup,
                )
            )
        session.add(  # still running: not counted yet
            Trial(user_id="running", workflow_id="trial-running", experiment_arm="generic",
                  stage="onboarding", signup_at=signup)
        )  # fmt: skip
        session.commit()
    (conversion,) = kpis.incremental_conversion(engine, Filters())
    # 6/20 = 30 % against 1/10 = 10 %: +20 points, 200 more buyers per 1,000 trials.
    assert (conversion.value, conversion.n, conversion.unit) == (pytest.approx(20.0), 10, "pts")
    expected = two_proportions(6, 20, 1, 10)
    assert conversion.detail["ci_low"] == pytest.approx(100 * expected.ci_low)
    assert conversion.detail["extra_conversions_per_1000"] == pytest.approx(200.0)
    (revenue,) = kpis.incremental_revenue(engine, Filters())
    # MRR per ended trial: 600 / 20 = 30 € against 50 / 10 = 5 €: +25 € a trial, 25,000 €
    # a month per 1,000 trials.
    assert revenue.value == pytest.approx(25_000.0)
    assert revenue.detail["journey_mrr_per_trial"] == pytest.approx(30.0)
    assert revenue.detail["holdout_mrr_per_trial"] == pytest.approx(5.0)
    # The experiment report leaves the global holdout out of the experiment's arms.
    assert all(r.arm != "global_holdout" for r in experiments.experiment_report(engine, Filters()))


def test_the_onboarding_csat_is_reported_beside_the_call_csat(engine: Engine) -> None:
    signup = datetime(2026, 11, 2, tzinfo=UTC)
    with Session(engine) as session:
        for i, (survey, score) in enumerate(
            [("survey_csat", 5), ("survey_onboarding", 2), ("survey_onboarding", 4),
             ("survey_onboarding", 5)]
        ):  # fmt: skip
            user = f"s{i}"
            session.add(Trial(user_id=user, workflow_id=f"trial-{user}", signup_at=signup))
            session.add(
                TrialEvent(
                    id=f"{user}:{survey}",
                    user_id=user,
                    name=survey,
                    occurred_at=signup + timedelta(days=3),
                    properties={"score": score},
                )
            )
        session.commit()
    (call,) = kpis.csat(engine, Filters())
    (onboarding,) = kpis.csat_onboarding(engine, Filters())
    assert (call.value, call.n) == (5.0, 1)
    assert (onboarding.value, onboarding.n) == (pytest.approx(11 / 3), 3)
    assert onboarding.detail["share_4_or_more_pct"] == pytest.approx(200 / 3)

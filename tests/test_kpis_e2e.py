"""End to end: a small population runs through the time-skipping server, then the KPIs read
from what the workflows recorded must be what the scenario implies."""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.driver import TrialDriver, align
from trialpath.growth import kpis
from trialpath.operations.config import Settings
from trialpath.operations.db import make_engine


def value(rows: list[kpis.KpiValue], kpi: str, group: str = kpis.ALL) -> kpis.KpiValue:
    return next(r for r in rows if r.kpi == kpi and r.group == group)


async def test_kpis_match_a_population_played_through_the_journey(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> None:
    await align(env)
    fast = TrialDriver(env, settings, "kpi-fast", role="technical")  # first value day 1, buys day 3
    idle = TrialDriver(env, settings, "kpi-idle", role="technical")  # does nothing: expires
    half = TrialDriver(env, settings, "kpi-half", role="business")  # first value day 2, no more
    gone = TrialDriver(env, settings, "kpi-gone", role="executive")  # cancels on day 1
    trials = [fast, idle, half, gone]
    for trial in trials:
        await trial.start()

    await fast.at_day(1)
    await fast.event("integration_connected")
    await fast.event("api_call", 10)
    await gone.signal("cancel", {"reason": "not for us"})
    await half.at_day(2)
    await half.event("workflow_created")
    await fast.at_day(3)
    await fast.signal("converted", {"plan": "team", "mrr": 99.0})
    # One wait at a time: the time-skipping server's clock locks do not nest across waits.
    for trial in trials:
        await trial.result()  # expiry and win-back run to the end

    engine = make_engine(settings.effective_database_url)
    rows = kpis.compute_kpis(engine, kpis.Filters(), None)
    assert value(rows, "activation_rate").value == pytest.approx(25.0)  # 1 of 4
    assert value(rows, "activation_rate").n == 4
    assert value(rows, "trial_to_paid").value == pytest.approx(25.0)  # 1 of 4 ended
    assert value(rows, "churn_rate").value == pytest.approx(75.0)  # idle, half, gone
    ttfv = value(rows, "ttfv_median")
    assert ttfv.value == pytest.approx(36.0, abs=0.1)  # 24 h and 48 h
    assert ttfv.detail["reached"] == 2
    proficiency = value(rows, "time_to_proficiency")
    assert proficiency.value == pytest.approx(24.0, abs=0.1)

    by_persona = kpis.compute_kpis(engine, kpis.Filters(), "persona")
    assert value(by_persona, "activation_rate", "technical").value == pytest.approx(50.0)
    assert value(by_persona, "activation_rate", "technical").n == 2
    assert value(by_persona, "activation_rate", "business").value == pytest.approx(0.0)
    assert value(by_persona, "ttfv_median", "business").value == pytest.approx(48.0, abs=0.1)
    sent = value(rows, "messages_per_user")
    assert sent.value is not None and sent.value > 3  # welcome, call invite, end of trial...

"""Exactly-once delivery under provider faults: 50 trials, SendGrid and Twilio played by a local
server that answers 30 % of requests with 429, 500, 503 or no answer in time.

The worker is the real one (`build_worker`) with the real SendGrid and Twilio providers pointed
at the server; the trials run their whole journey on the time-skipping server. At the end every
message row must be `sent`, and the server must have accepted each email and SMS exactly once.

The SMS call reminder falls back to email after three failed attempts; scripted faults check
that the fallback neither doubles a reminder Twilio took nor leaves the SMS row unsettled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from tests.conftest import always_free_agents
from tests.driver import TrialDriver, align
from tests.faulty_provider import (
    ACCEPTED_TIMEOUT,
    LOOKUP_ERROR,
    SENDGRID_FAULTS,
    TWILIO_FAULTS,
    UNAVAILABLE,
    FaultPlan,
    FaultyProvider,
)
from trialpath.core.contract import workflow_id_for
from trialpath.operations.config import PACKAGE_DIR, Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message
from worker import build_worker

TRIALS = 30
FAULT_RATE = 0.30
PERSONAS = ("technical", "business", "executive")
URGENCIES = ("this_week", "this_month", "evaluating")
GOALS = {
    "technical": [("integration_connected", 1), ("api_call", 10)],
    "business": [("workflow_created", 1), ("teammate_invited", 1)],
    "executive": [("dashboard_configured", 1), ("report_shared", 1)],
}
ACCOUNT_SID = "AC" + "5e" * 16


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib (SendGrid) and requests (Twilio) honour proxy variables; the server is local.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def fault_settings(tmp_path: Path, database_url: str, server_url: str) -> Settings:
    # The shipped journey (experiment and surveys on) with its agents free at any hour and a
    # call for every trial: the mix of messages, and so of faults, is the same whatever the
    # weekday the test runs on.
    journey = tmp_path / "journey.toml"
    journey.write_text(always_free_agents((PACKAGE_DIR / "journey.toml").read_text()))
    return Settings(
        journey_file=journey,
        data_dir=tmp_path / "data",
        task_queue=f"tq-{uuid.uuid4()}",
        database_url=database_url,
        email_provider="sendgrid",
        support_provider="sendgrid",
        sms_provider="twilio",
        sendgrid_api_key="SG.test",
        sendgrid_base_url=server_url,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token="token",
        twilio_from_number="+15005550006",
        twilio_base_url=server_url,
        # Room for a loaded machine: an accepted send answered after the client's timeout is
        # in doubt, and SendGrid (no lookup; this server posts no webhook) would rightly get it
        # again after `reconcile_after`, which this test counts as a duplicate. The server's
        # timeouts stall longer than this (`FaultPlan.stall_seconds`).
        delivery_timeout_seconds=2.0,
        reconcile_after_seconds=2,
    )


def trial_for(env: WorkflowEnvironment, settings: Settings, i: int) -> TrialDriver:
    """A mix: three personas, three urgencies (call day), two trials in three with a phone."""
    return TrialDriver(
        env,
        settings,
        f"fault-{i:02d}",
        role=PERSONAS[i % 3],
        urgency=URGENCIES[(i // 3) % 3],
        phone=None if i % 3 == 2 else f"+3361234{i:04d}",
    )


@pytest.mark.takes(seconds=90)
@pytest.mark.slow
async def test_every_message_is_delivered_exactly_once_despite_faults(
    env: WorkflowEnvironment,
    executor: ThreadPoolExecutor,
    tmp_path: Path,
    database_url: str,
    no_proxy: None,
) -> None:
    started = time.monotonic()
    with FaultyProvider(FaultPlan(rate=FAULT_RATE, seed=20261125)) as server:
        settings = fault_settings(tmp_path, database_url, server.url)
        async with build_worker(env.client, settings, executor):
            trials = [trial_for(env, settings, i) for i in range(TRIALS)]
            try:
                await drive(env, trials)
            finally:
                # Trials left running would hold the time-skipping clock for later tests: end
                # them through the journey while the worker and the server still run.
                await end_unfinished(trials)
    elapsed = time.monotonic() - started

    with Session(make_engine(settings.effective_database_url)) as session:
        rows = list(session.exec(select(Message)).all())
    accepted = server.accepted_keys()
    summary = server.summary()
    attempts = sum(row.attempts for row in rows)
    by_channel = Counter(row.channel for row in rows)
    print(
        f"\nfaults: {TRIALS} trials, {len(rows)} messages {dict(sorted(by_channel.items()))}, "
        f"{summary['posts']} provider POSTs, faults {summary['faults']} "
        f"(rate {summary['post_fault_rate']:.2f}), {summary['lookups']} lookups, "
        f"{attempts} attempts, {elapsed:.1f}s"
    )

    # The providers took each sent email and SMS exactly once, and nothing else.
    remote = {r.key: r for r in rows if r.provider in ("sendgrid", "twilio") and r.status == "sent"}
    assert {key: n for key, n in accepted.items() if n != 1} == {}
    assert set(accepted) == set(remote)
    for item in server.accepted:
        assert item.recipient == remote[item.key].recipient, item.key
    assert server.unknown == []

    # Faults of every kind happened, at about the planned rate.
    for kind in (*SENDGRID_FAULTS, *TWILIO_FAULTS, LOOKUP_ERROR):
        assert summary["faults"].get(kind, 0) > 0, kind
    assert 0.2 < summary["post_fault_rate"] < 0.4

    # Retries happened, and every row was handed to its provider at least once.
    assert all(row.attempts >= 1 for row in rows)
    assert attempts > len(rows)

    # Every message was sent: none left pending, sending or failed. Checked last because an SMS
    # whose attempts run out falls back to email and is left `pending`/`sending` (see
    # test_sms_fallback_settles_the_sms_row below).
    assert len(rows) > 20 * TRIALS
    assert by_channel["sms"] > TRIALS // 2
    unsent = [(r.key, r.status, r.attempts, r.error) for r in rows if r.status != "sent"]
    assert unsent == []


async def drive(env: WorkflowEnvironment, trials: list[TrialDriver]) -> None:
    await align(env)
    for trial in trials:
        await trial.start()
    first = trials[0]

    await first.at_day(1.1)
    for i, trial in enumerate(trials):
        if i % 5 == 0:  # activates: milestone, activated
            for name, count in GOALS[PERSONAS[i % 3]]:
                await trial.event(name, count)
    await first.at_day(1.2)
    for i, trial in enumerate(trials):
        if i % 7 == 3:  # books the call for day 5: booked email, reminders before it
            await trial.signal("call_booked", {"at": trial.iso(5 + 2 / 24), "agent": "Julia"})
    await first.at_day(6.1)
    for i, trial in enumerate(trials):
        if i % 10 == 9:  # converts: welcome_paid, then the journey ends
            await trial.signal("converted", {"plan": "team", "mrr": 99})

    # Waiting on a result lets the server skip through the rest (trial end, win-back) for all
    # trials at once. One wait at a time: each unlocks time skipping once, and concurrent waits
    # would take back locks held by running activities and workflow tasks (the test server
    # then times those out and fails with "Unbalanced lock and unlock calls").
    async with asyncio.timeout(900):
        for trial in trials:
            await trial.result()


async def end_unfinished(trials: list[TrialDriver]) -> None:
    for trial in trials:
        if trial.handle is None:
            continue
        with contextlib.suppress(Exception):
            description = await trial.handle.describe()
            if description.status is not None and description.status.name != "RUNNING":
                continue
            await trial.signal("cancel", {"reason": "test cleanup"})
            await asyncio.wait_for(trial.handle.result(), timeout=60)


FALLBACK_USER = "fault-fallback"
FALLBACK_PHONE = "+33612349999"


@pytest.mark.parametrize(
    ("sms_faults", "lookup_faults", "sms_taken"),
    [
        # Twilio takes the SMS but answers too late, then the lookups fail: the SMS reached the
        # user, so the email fallback must not go out and the row must end up `sent`.
        ((ACCEPTED_TIMEOUT,), (LOOKUP_ERROR, LOOKUP_ERROR), True),
        # Twilio refuses twice, then takes the SMS but answers too late on the last attempt:
        # it reached the user, a lookup would say so, the email fallback must not go out.
        ((UNAVAILABLE, UNAVAILABLE, ACCEPTED_TIMEOUT), (), True),
        # Twilio refuses three times: the email fallback goes out and the SMS row is settled.
        ((UNAVAILABLE, UNAVAILABLE, UNAVAILABLE), (), False),
    ],
    ids=["in-doubt-then-lookups-fail", "in-doubt-on-last-attempt", "unavailable-three-times"],
)
async def test_sms_fallback_settles_the_sms_row(
    env: WorkflowEnvironment,
    executor: ThreadPoolExecutor,
    tmp_path: Path,
    database_url: str,
    no_proxy: None,
    sms_faults: tuple[str, ...],
    lookup_faults: tuple[str, ...],
    sms_taken: bool,
) -> None:
    """`call_reminder_hour` goes by SMS, by email after `fallback_after_attempts` (3) failed
    attempts. Every attempt counts, lookups of an in-doubt send included."""
    user_id = f"{FALLBACK_USER}-{len(sms_faults)}-{len(lookup_faults)}-{int(sms_taken)}"
    sms_key = f"{workflow_id_for(user_id)}:call_reminder_hour.1/sms"
    email_key = f"{workflow_id_for(user_id)}:call_reminder_hour.1/email"
    plan = FaultPlan(
        rate=0.0,
        script={("twilio", sms_key): sms_faults, ("lookup", FALLBACK_PHONE): lookup_faults},
    )
    with FaultyProvider(plan) as server:
        settings = fault_settings(tmp_path, database_url, server.url)
        async with build_worker(env.client, settings, executor):
            # this_week: the call is on day 2 at 10:00, its SMS reminder at 09:00.
            trial = TrialDriver(env, settings, user_id, urgency="this_week", phone=FALLBACK_PHONE)
            try:
                await align(env)
                await trial.start()
                await trial.at_day(2.5)
            finally:
                await end_unfinished([trial])

    with Session(make_engine(settings.effective_database_url)) as session:
        rows = {row.key: row for row in session.exec(select(Message)).all()}
    accepted = server.accepted_keys()
    sms = rows[sms_key]
    print(
        f"\nfallback: sms row {sms.status} after {sms.attempts} attempts ({sms.error}); "
        f"accepted sms {accepted[sms_key]}, email {accepted[email_key]}; "
        f"faults {server.summary()['faults']}"
    )
    assert accepted[sms_key] == int(sms_taken)
    # The user gets the reminder once: by SMS if Twilio took it, else by email.
    assert accepted[email_key] == int(not sms_taken)
    assert sms.status == ("sent" if sms_taken else "failed")

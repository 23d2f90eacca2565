"""Support's work queue: the task lifecycle (list, claim, snooze, close) in the database, over
HTTP, from the CLI and on the page next to the dashboard, and the round trip with the journey: a
stalled B2B trial opens a task, `NeedsAttention` says so, closing it sends the outcome back to
the workflow and into the KPIs."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from tests.driver import align, skip_to
from trialpath.core.contract import SIGNAL_TASK_CLOSED, workflow_id_for
from trialpath.entry.commands import InvalidRequest
from trialpath.growth import kpis
from trialpath.operations.config import Settings
from trialpath.operations.db import make_engine
from trialpath.operations.erasure import erase_rows
from trialpath.operations.models import AuditEntry, CsTask, PendingSignal, Trial
from trialpath.support import tasks
from trialpath.support.tasks import ClaimTask, CloseTask, SnoozeTask, TaskConflict, TaskNotFound

from .test_access import add_role_keys, as_role
from .test_api import assert_problem, signup
from .test_cli import address, cli

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NEEDS_ATTENTION = SearchAttributeKey.for_keyword_list("NeedsAttention")


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return make_engine(settings.effective_database_url)


def add_task(
    engine: Engine,
    user_id: str,
    n: int = 1,
    *,
    agent: str | None = "Camille",
    kind: str = "stalled",
    at: datetime = NOW,
) -> str:
    key = f"{workflow_id_for(user_id)}:support_alert.{n}"
    with Session(engine) as session:
        if session.get(Trial, user_id) is None:
            session.add(
                Trial(
                    user_id=user_id,
                    workflow_id=workflow_id_for(user_id),
                    persona="business",
                    stage="onboarding",
                    signup_at=at - timedelta(days=3),
                )
            )
        session.add(
            CsTask(
                key=key,
                user_id=user_id,
                workflow_id=workflow_id_for(user_id),
                kind=kind,
                agent=agent,
                owner=agent,
                reason="no key action since the stall nudge",
                created_at=at,
            )
        )
        session.commit()
    return key


# --- The lifecycle, in the database ------------------------------------------------------------


def test_a_task_is_claimed_snoozed_and_closed_once(engine: Engine) -> None:
    key = add_task(engine, "q-1")
    other = add_task(engine, "q-2", agent=None, at=NOW + timedelta(minutes=5))
    page = tasks.list_tasks(engine, now=NOW)
    assert [(t.key, t.state, t.owner, t.persona) for t in page.tasks] == [
        (key, "open", "Camille", "business"),
        (other, "open", None, "business"),
    ]
    assert tasks.list_tasks(engine, owner="Camille", now=NOW).total == 1
    assert [t.key for t in tasks.list_tasks(engine, unowned=True, now=NOW).tasks] == [other]

    claimed = tasks.claim_task(engine, key, ClaimTask(owner="Samir"), NOW)
    assert (claimed.state, claimed.owner, claimed.claimed_at) == ("claimed", "Samir", NOW)
    # Claiming one's own task again changes nothing; someone else needs `force`.
    later = NOW + timedelta(minutes=1)
    assert tasks.claim_task(engine, key, ClaimTask(owner="Samir"), later).claimed_at == NOW
    with pytest.raises(TaskConflict, match="claimed by Samir"):
        tasks.claim_task(engine, key, ClaimTask(owner="Julia"), later)
    taken = tasks.claim_task(engine, key, ClaimTask(owner="Julia", force=True), later)
    assert (taken.owner, taken.claimed_at) == ("Julia", later)

    snoozed = tasks.snooze_task(engine, key, SnoozeTask(hours=4), later)
    assert (snoozed.state, snoozed.snoozed_until) == ("snoozed", later + timedelta(hours=4))
    assert [t.key for t in tasks.list_tasks(engine, state="open", now=later).tasks] == [other]
    assert tasks.list_tasks(engine, state="snoozed", now=later).total == 1
    # Awake again (still Julia's) once the snooze is over.
    woken = later + timedelta(hours=4, seconds=1)
    assert [t.key for t in tasks.list_tasks(engine, state="claimed", now=woken).tasks] == [key]

    closed = tasks.close_task(engine, key, CloseTask(outcome="reached_user", note="ok"), woken)
    assert (closed.task.state, closed.task.outcome, closed.task.note) == (
        "closed",
        "reached_user",
        "ok",
    )
    assert closed.task.owner == "Julia" and closed.signal_id is not None
    with Session(engine) as session:
        signal = session.get(PendingSignal, closed.signal_id)
        assert signal is not None
        assert (signal.workflow_id, signal.signal) == (workflow_id_for("q-1"), SIGNAL_TASK_CLOSED)
        assert signal.payload == {
            "task": key,
            "kind": "stalled",
            "outcome": "reached_user",
            "accepted_at": woken.isoformat(),
        }
        assert session.get(CsTask, key).done is True  # type: ignore[union-attr]
    # The same close again (a retried request) is a no-op; another outcome is a conflict.
    again = tasks.close_task(engine, key, CloseTask(outcome="reached_user"), woken)
    assert again.signal_id is None and again.task.closed_at == woken
    with pytest.raises(TaskConflict, match="already closed as reached_user"):
        tasks.close_task(engine, key, CloseTask(outcome="no_answer"), woken)
    for change in (
        lambda: tasks.claim_task(engine, key, ClaimTask(owner="Samir"), woken),
        lambda: tasks.snooze_task(engine, key, SnoozeTask(hours=1), woken),
    ):
        with pytest.raises(TaskConflict, match="closed"):
            change()
    with Session(engine) as session:
        assert len(session.exec(select(PendingSignal)).all()) == 1
    assert tasks.list_tasks(engine, state="closed", now=woken).total == 1
    assert tasks.list_tasks(engine, state="all", now=woken).total == 2


def test_bad_requests_are_refused_with_the_reason(engine: Engine) -> None:
    key = add_task(engine, "q-bad")
    with pytest.raises(TaskNotFound):
        tasks.claim_task(engine, "trial-nobody:x", ClaimTask(owner="Samir"), NOW)
    with pytest.raises(TaskNotFound):
        tasks.close_task(engine, "trial-nobody:x", CloseTask(outcome="resolved"), NOW)
    with pytest.raises(InvalidRequest, match="in the past"):
        tasks.snooze_task(engine, key, SnoozeTask(until=NOW - timedelta(hours=1)), NOW)
    with pytest.raises(InvalidRequest, match="30 days at most"):
        tasks.snooze_task(engine, key, SnoozeTask(until=NOW + timedelta(days=31)), NOW)
    with pytest.raises(ValueError, match="exactly one of"):
        SnoozeTask(hours=1, until=NOW + timedelta(hours=2))
    with pytest.raises(ValueError, match="outcome"):
        CloseTask.model_validate({"outcome": "solved it"})


def test_concurrent_claims_have_one_winner(engine: Engine) -> None:
    key = add_task(engine, "q-race")
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def claim(owner: str) -> None:
        barrier.wait()
        try:
            tasks.claim_task(engine, key, ClaimTask(owner=owner), NOW)
            outcomes.append(f"won:{owner}")
        except TaskConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=claim, args=(f"agent-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o.startswith("won:")]
    assert len(winners) == 1 and outcomes.count("conflict") == 7
    assert tasks.get_task(engine, key, NOW).owner == winners[0].removeprefix("won:")


def test_concurrent_closes_queue_one_outcome(engine: Engine) -> None:
    key = add_task(engine, "q-close-race")
    barrier = threading.Barrier(6)
    signals: list[int | None] = []

    def close() -> None:
        barrier.wait()
        signals.append(tasks.close_task(engine, key, CloseTask(outcome="resolved"), NOW).signal_id)

    threads = [threading.Thread(target=close) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([s for s in signals if s is not None]) == 1
    with Session(engine) as session:
        assert len(session.exec(select(PendingSignal)).all()) == 1


def test_erasure_wipes_support_notes(engine: Engine, settings: Settings) -> None:
    key = add_task(engine, "q-erase")
    tasks.close_task(engine, key, CloseTask(outcome="reached_user", note="Ada said no"), NOW)
    done = erase_rows(engine, "q-erase", settings.outbox_dir, cancelled=False)
    assert done.counts["cs_tasks"] == 1
    task = tasks.get_task(engine, key, NOW)
    assert task.note is None and task.outcome == "reached_user"


def test_support_kpis_count_tasks_outcomes_and_time_to_close(engine: Engine) -> None:
    first = add_task(engine, "k-1")
    second = add_task(engine, "k-2")
    add_task(engine, "k-3")
    with Session(engine) as session:
        session.add(
            Trial(
                user_id="k-4",
                workflow_id=workflow_id_for("k-4"),
                persona="business",
                stage="onboarding",
                signup_at=NOW,
            )
        )
        session.commit()
    tasks.close_task(engine, first, CloseTask(outcome="call_booked"), NOW + timedelta(hours=2))
    tasks.close_task(engine, second, CloseTask(outcome="no_answer"), NOW + timedelta(hours=6))
    filters = kpis.make_filters()
    [rate] = kpis.support_task_rate(engine, filters)
    assert (rate.value, rate.n) == (75.0, 4)
    assert rate.detail["tasks_opened"] == 3
    assert rate.detail["tasks_closed"] == 2 and rate.detail["tasks_open"] == 1
    assert rate.detail["outcomes"] == {"call_booked": 1, "no_answer": 1}
    assert rate.detail["median_hours_to_close"] == pytest.approx(4.0)
    [reach] = kpis.support_reach_rate(engine, filters)
    assert (reach.value, reach.n) == (50.0, 2)
    by_persona = {v.group: v for v in kpis.support_task_rate(engine, filters, "persona")}
    assert by_persona["business"].value == 75.0 and by_persona["technical"].n == 0


# --- Over HTTP, from the CLI, on the page ------------------------------------------------------


async def test_the_queue_over_http(api: httpx.AsyncClient, settings: Settings) -> None:
    engine = make_engine(settings.effective_database_url)
    key = add_task(engine, "h-1")
    add_role_keys(settings)
    listed = await api.get("/v1/tasks", params={"state": "open"}, headers=as_role("support"))
    assert listed.status_code == 200, listed.text
    assert [t["key"] for t in listed.json()["tasks"]] == [key]
    assert listed.json()["total"] == 1
    # Only support and admin work the queue.
    for role in ("backend", "analyst"):
        assert_problem(await api.get("/v1/tasks", headers=as_role(role)), 403, "support queue")
    assert_problem(await api.get("/v1/tasks", params={"state": "later"}), 422)
    assert_problem(await api.get("/v1/tasks/trial-nobody:x"), 404, "no task")

    claim = await api.post(
        f"/v1/tasks/{key}/claim", json={"owner": "Samir"}, headers=as_role("support")
    )
    assert claim.status_code == 200 and claim.json()["state"] == "claimed"
    assert_problem(await api.post(f"/v1/tasks/{key}/claim", json={"owner": "Julia"}), 409, "Samir")
    assert_problem(await api.post(f"/v1/tasks/{key}/claim", json={}), 422)
    assert_problem(await api.post(f"/v1/tasks/{key}/snooze", json={"hours": 0}), 422)
    snooze = await api.post(f"/v1/tasks/{key}/snooze", json={"hours": 2})
    assert snooze.json()["state"] == "snoozed"
    assert_problem(await api.post(f"/v1/tasks/{key}/close", json={"outcome": "maybe"}), 422)
    closed = await api.post(
        f"/v1/tasks/{key}/close",
        json={"outcome": "not_a_fit", "note": "uses a competitor"},
        headers=as_role("support"),
    )
    assert closed.status_code == 200, closed.text
    assert (closed.json()["state"], closed.json()["outcome"]) == ("closed", "not_a_fit")
    assert_problem(await api.post(f"/v1/tasks/{key}/close", json={"outcome": "resolved"}), 409)
    # Every change is in the audit log, with the task's user.
    with Session(engine) as session:
        entries = session.exec(
            select(AuditEntry).where(AuditEntry.user_id == "h-1").order_by(AuditEntry.id)
        ).all()
    assert [(e.actor, e.action, e.status) for e in entries] == [
        ("support-key", "task.claim", 200),
        ("tests", "task.claim", 409),
        ("tests", "task.claim", 422),
        ("tests", "task.snooze", 422),
        ("tests", "task.snooze", 200),
        ("tests", "task.close", 422),
        ("support-key", "task.close", 200),
        ("tests", "task.close", 409),
    ]


async def test_the_queue_from_the_cli(settings: Settings) -> None:
    engine = make_engine(settings.effective_database_url)
    key = add_task(engine, "c-1", at=datetime.now(UTC))
    code, out, err = await cli(settings, "tasks", "list")
    assert code == 0, err
    assert key in out and "stalled" in out and "Camille" in out
    code, out, err = await cli(settings, "tasks", "claim", key, "--owner", "Julia")
    assert (code, err) == (0, "") and "Julia's" in out
    code, out, err = await cli(settings, "tasks", "claim", key, "--owner", "Samir")
    assert code == 1 and "claimed by Julia" in err and "Traceback" not in err
    code, out, err = await cli(settings, "tasks", "snooze", key, "--hours", "-1")
    assert code == 2 and "hours" in err
    code, out, err = await cli(settings, "tasks", "close", key, "--outcome", "later")
    assert code == 2 and "Traceback" not in err
    code, out, err = await cli(settings, "tasks", "close", key, "--outcome", "resolved")
    assert code == 0, err
    assert "closed: resolved" in out
    # No Temporal here: the outcome waits in the queue of signals.
    assert "queued" in out
    code, out, err = await cli(settings, "tasks", "show", key, "--json")
    assert code == 0 and '"outcome": "resolved"' in out
    code, out, err = await cli(settings, "tasks", "show", "trial-nobody:x")
    assert code == 1 and "no task" in err
    with Session(engine) as session:
        actions = [
            (e.action, e.status)
            for e in session.exec(select(AuditEntry).where(AuditEntry.user_id == "c-1"))
        ]
    assert actions == [
        ("task.claim", 200),
        ("task.claim", 409),
        ("task.close", 200),
    ]


async def test_the_queue_page(api: httpx.AsyncClient, settings: Settings) -> None:
    engine = make_engine(settings.effective_database_url)
    key = add_task(engine, "p-1")
    add_role_keys(settings)
    browser = {"Accept": "text/html"}
    login = await api.post(
        "/dashboard/login",
        content=f"key={as_role('support')['Authorization'][7:]}&next=/dashboard",
        headers={
            **browser,
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "",
        },
    )
    # A support key signs in to the queue (it may not read the KPIs).
    assert login.status_code == 303 and login.headers["location"] == "/dashboard/tasks"
    cookie = login.cookies.get("trialpath_dashboard")
    assert cookie
    session = {**browser, "Cookie": f"trialpath_dashboard={cookie}", "Authorization": ""}
    page = await api.get("/dashboard/tasks", headers=session)
    assert page.status_code == 200
    assert key in page.text and "1 active task(s)" in page.text
    kpi_page = await api.get("/dashboard", headers=session)
    assert kpi_page.status_code == 303 and kpi_page.headers["location"] == "/dashboard/tasks"
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert token is not None
    form = {**session, "Content-Type": "application/x-www-form-urlencoded"}
    forged = await api.post(
        f"/dashboard/tasks/{key}/claim", content="owner=Mallory&csrf=0", headers=form
    )
    assert forged.status_code == 403
    claimed = await api.post(
        f"/dashboard/tasks/{key}/claim",
        content=f"owner=Samir&csrf={token.group(1)}",
        headers=form,
    )
    assert claimed.status_code == 303 and "flash=" in claimed.headers["location"]
    closed = await api.post(
        f"/dashboard/tasks/{key}/close",
        content=f"outcome=call_booked&note=Thursday&csrf={token.group(1)}",
        headers=form,
    )
    assert closed.status_code == 303
    task = tasks.get_task(engine, key)
    assert (task.owner, task.outcome, task.note) == ("Samir", "call_booked", "Thursday")
    wrong = await api.post(
        f"/dashboard/tasks/{key}/close",
        content=f"outcome=resolved&csrf={token.group(1)}",
        headers=form,
    )
    assert "error=" in wrong.headers["location"]
    shown = await api.get(wrong.headers["location"], headers=session)
    assert "already closed as call_booked" in shown.text
    # Without a session: the sign-in form for a browser, a 401 problem for a program.
    api.cookies.clear()
    anonymous = await api.get("/dashboard/tasks", headers={**browser, "Authorization": ""})
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/dashboard/login")
    assert_problem(await api.get("/dashboard/tasks", headers={"Authorization": ""}), 401)
    assert_problem(await api.get("/dashboard/tasks", headers=as_role("analyst")), 403, "queue")


# --- With the journey ----------------------------------------------------------------------------


async def _attention(env: WorkflowEnvironment, user_id: str) -> list[str] | None:
    handle = env.client.get_workflow_handle(workflow_id_for(user_id))
    return (await handle.describe()).typed_search_attributes.get(NEEDS_ATTENTION)


async def test_a_stalled_trial_opens_a_task_whose_outcome_returns_to_it(
    env: WorkflowEnvironment, api: httpx.AsyncClient, settings: Settings
) -> None:
    start = await align(env)
    user = "rt-1"
    body = signup(user, company="Acme", timezone="UTC")
    body["qualification"]["urgency"] = "this_month"
    assert (await api.post("/v1/trials", json=body)).status_code == 201
    # No key action: nudge on day 2, support alert (and a task: a company) on day 3.
    await skip_to(env, start + timedelta(days=3, hours=4), "the support alert")
    listed = (await api.get("/v1/tasks", params={"user_id": user})).json()
    assert [t["kind"] for t in listed["tasks"]] == ["stalled"]
    task: dict[str, Any] = listed["tasks"][0]
    status = (await api.get(f"/v1/trials/{user}")).json()
    assert task["key"] == f"{workflow_id_for(user)}:support_alert.1"
    assert task["owner"] == status["call"]["agent"] and task["state"] == "open"
    assert status["open_tasks"] == {task["key"]: "stalled"}
    assert status["needs_attention"] == ["stalled"]
    assert await _attention(env, user) == ["stalled"]
    code, out, err = await cli(settings, "trial", "show", user, address=address(env))
    assert code == 0, err
    assert re.search(r"needs attention[\s│]+stalled", out) and "support_alert.1" in out

    closed = await api.post(f"/v1/tasks/{task['key']}/close", json={"outcome": "reached_user"})
    assert closed.status_code == 200, closed.text
    await env.sleep(timedelta(minutes=5))
    status = (await api.get(f"/v1/trials/{user}")).json()
    assert status["open_tasks"] == {} and status["needs_attention"] == []
    assert "Needs a human" not in status["summary"]
    assert await _attention(env, user) is None
    with Session(make_engine(settings.effective_database_url)) as session:
        signal = session.exec(select(PendingSignal).where(PendingSignal.signal == "task_closed"))
        assert [s.delivered_at is not None for s in signal] == [True]
    [reach] = kpis.support_reach_rate(
        make_engine(settings.effective_database_url), kpis.make_filters()
    )
    assert (reach.value, reach.n) == (100.0, 1)
    await api.delete(f"/v1/trials/{user}")

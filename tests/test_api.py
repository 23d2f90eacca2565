"""Every route and every error code of the HTTP API, against the time-skipping server and a
real SQLite database (no mocked Temporal client)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from trialpath.core.contract import workflow_id_for
from trialpath.entry.commands import InvalidRequest
from trialpath.entry.listing import PageTokens
from trialpath.operations.config import Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message, PendingSignal, Trial, TrialEvent

from .conftest import SECOND_KEY

PROBLEM = "application/problem+json"


def signup(user_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "email": f"{user_id}@example.com",
        "name": "Ada Lovelace",
        "timezone": "Europe/Paris",
        "qualification": {"role": "technical", "challenge": "integrations", "urgency": "this_week"},
        **extra,
    }


def assert_problem(response: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    for needle in needles:
        assert needle in body["detail"], body
    return body


async def started(
    api: httpx.AsyncClient, env: WorkflowEnvironment, user_id: str, **extra: Any
) -> None:
    response = await api.post("/v1/trials", json=signup(user_id, **extra))
    assert response.status_code == 201, response.text
    await env.sleep(timedelta(minutes=1))


def rows(settings: Settings, model: Any, user_id: str) -> list[Any]:
    with Session(make_engine(settings.effective_database_url)) as session:
        return list(session.exec(select(model).where(model.user_id == user_id)).all())


# --- auth, health, limits --------------------------------------------------------------------


async def test_auth(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/trials/u1", headers={"Authorization": ""})
    assert_problem(response, 401, "Bearer")
    assert response.headers["www-authenticate"] == "Bearer"
    assert_problem(await api.get("/v1/trials/u1", headers={"Authorization": "Bearer nope"}), 403)
    assert_problem(await api.get("/v1/trials/u1", headers={"Authorization": "Basic abc"}), 401)
    # Every configured key works; health needs none.
    other = await api.get("/v1/trials/nobody", headers={"Authorization": f"Bearer {SECOND_KEY}"})
    assert other.status_code == 404
    assert (await api.get("/v1/healthz", headers={"Authorization": ""})).json() == {"status": "ok"}


async def test_readyz(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/readyz", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_openapi_and_docs(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    assert "/v1/trials/{user_id}/events" in spec["paths"]
    assert (await api.get("/docs")).status_code == 200


async def test_body_limit_and_bad_json(api: httpx.AsyncClient) -> None:
    big = {"name": "x", "properties": {"blob": "a" * (70 * 1024)}}
    assert_problem(await api.post("/v1/trials/u1/events", json=big), 413, "64 KiB")
    response = await api.post(
        "/v1/trials", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    body = assert_problem(response, 422, "not valid JSON")
    assert body["errors"][0]["field"].startswith("body")
    response = await api.post(
        "/v1/trials", json={"user_id": "u1", "email": "a@b.co", "trial_days": "ten"}
    )
    assert_problem(response, 422, "body.trial_days")


# --- start -----------------------------------------------------------------------------------


async def test_start_trial_is_idempotent_by_data(
    api: httpx.AsyncClient, env: WorkflowEnvironment
) -> None:
    first = await api.post("/v1/trials", json=signup("api-start"))
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["workflow_id"], body["persona"]) == ("trial-api-start", "technical")
    again = await api.post("/v1/trials", json=signup("api-start"))
    assert again.status_code == 200
    assert again.json()["workflow_id"] == "trial-api-start"
    other = await api.post("/v1/trials", json=signup("api-start", email="other@example.com"))
    assert_problem(other, 409, "email")
    assert_problem(
        await api.post("/v1/trials", json=signup("ada@example.com")), 422, "email address"
    )
    assert_problem(
        await api.post("/v1/trials", json=signup("u-tz", timezone="Mars/Base")), 422, "IANA"
    )
    await env.sleep(timedelta(minutes=5))
    status = (await api.get("/v1/trials/api-start")).json()
    assert status["persona"] == "technical"
    assert status["stage"] == "onboarding"


# --- qualification ---------------------------------------------------------------------------


async def test_qualification(api: httpx.AsyncClient, env: WorkflowEnvironment) -> None:
    await started(api, env, "api-qual", qualification=None)
    ok = await api.post(
        "/v1/trials/api-qual/qualification",
        json={"role": "executive", "challenge": "strategic_oversight", "urgency": "this_month"},
    )
    assert ok.status_code == 200
    assert ok.json() == {"persona": "executive"}
    bad = await api.post(
        "/v1/trials/api-qual/qualification",
        json={"role": "wizard", "challenge": "integrations", "urgency": "now"},
    )
    body = assert_problem(bad, 422, "body.role", "body.urgency")
    assert {e["field"] for e in body["errors"]} == {"body.role", "body.urgency"}
    missing = await api.post(
        "/v1/trials/nobody/qualification",
        json={"role": "technical", "challenge": "integrations", "urgency": "this_week"},
    )
    assert_problem(missing, 404, "nobody")


# --- events ----------------------------------------------------------------------------------


async def test_events_single_list_duplicates_and_activation(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    await started(api, env, "api-ev")
    one = await api.post(
        "/v1/trials/api-ev/events",
        json={
            "name": "integration_connected",
            "idempotency_key": "int-1",
            "properties": {"kind": "slack"},
        },
    )
    assert one.status_code == 202, one.text
    assert one.json() == {
        "accepted": 1,
        "duplicates": 0,
        "events": [
            {"id": "int-1", "name": "integration_connected", "duplicate": False, "counted": True}
        ],
    }
    batch = [{"name": "api_call", "idempotency_key": f"call-{i}"} for i in range(10)]
    batch.append({"name": "integration_connected", "idempotency_key": "int-1"})
    many = await api.post("/v1/trials/api-ev/events", json=batch)
    assert many.status_code == 202
    assert (many.json()["accepted"], many.json()["duplicates"]) == (10, 1)
    await env.sleep(timedelta(minutes=5))
    status = (await api.get("/v1/trials/api-ev")).json()
    assert status["events_seen"] == {"integration_connected": 1, "api_call": 10}
    assert status["activated"] is True
    stored = rows(settings, TrialEvent, "api-ev")
    assert len(stored) == 11
    assert {e.properties.get("kind") for e in stored} == {"slack", None}
    assert all(p.delivered_at is not None for p in _pending(settings))
    # The request's ten new events went to the workflow in one signal (one Temporal action).
    history = await env.client.get_workflow_handle("trial-api-ev").fetch_history()
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert (signals.count("event"), signals.count("events")) == (1, 1), signals


def _pending(settings: Settings) -> list[PendingSignal]:
    with Session(make_engine(settings.effective_database_url)) as session:
        return list(session.exec(select(PendingSignal)).all())


async def test_event_errors(api: httpx.AsyncClient, env: WorkflowEnvironment) -> None:
    await started(api, env, "api-ev-bad")
    # In the future of the API's clock (here the time-skipping server's).
    future = (await env.get_current_time() + timedelta(hours=2)).isoformat()
    assert_problem(
        await api.post(
            "/v1/trials/api-ev-bad/events", json={"name": "login", "occurred_at": future}
        ),
        422,
        "body.occurred_at",
        "future",
    )
    naive = await api.post(
        "/v1/trials/api-ev-bad/events", json={"name": "login", "occurred_at": "2026-01-01T10:00:00"}
    )
    assert_problem(naive, 422, "occurred_at")
    too_many = [{"name": "login"}] * 101
    assert_problem(
        await api.post("/v1/trials/api-ev-bad/events", json=too_many), 422, "at most 100"
    )
    assert_problem(await api.post("/v1/trials/api-ev-bad/events", json=[]), 422, "at least one")
    assert_problem(await api.post("/v1/trials/api-ev-bad/events", json={"nom": "x"}), 422, "body")
    assert_problem(await api.post("/v1/trials/ghost/events", json={"name": "login"}), 404, "ghost")


async def test_old_events_are_recorded_but_do_not_activate(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    await started(api, env, "api-old", qualification={"role": "business"})
    past = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    events = [
        {"name": "workflow_created", "occurred_at": past},
        {"name": "teammate_invited", "occurred_at": past},
    ]
    assert (await api.post("/v1/trials/api-old/events", json=events)).status_code == 202
    await env.sleep(timedelta(minutes=5))
    status = (await api.get("/v1/trials/api-old")).json()
    assert status["events_seen"] == {"workflow_created": 1, "teammate_invited": 1}
    assert status["activated"] is False
    for _ in range(100):  # the workflow records what counted in its next activity
        if {e.counted for e in rows(settings, TrialEvent, "api-old")} == {False}:
            break
        await asyncio.sleep(0.05)
    assert {e.counted for e in rows(settings, TrialEvent, "api-old")} == {False}


async def test_accepted_events_survive_a_failed_signal(
    api: httpx.AsyncClient,
    env: WorkflowEnvironment,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Temporal refuses the signal (unavailable): the events are stored and 202 is answered;
    the background redelivery signals them once Temporal answers again, a trial's events
    together, at most 100 to a signal."""
    from temporalio.client import WorkflowHandle
    from temporalio.service import RPCError, RPCStatusCode

    await started(api, env, "api-durable", qualification={"role": "business"})
    real_signal = WorkflowHandle.signal

    async def failing(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")

    monkeypatch.setattr(WorkflowHandle, "signal", failing)
    response = await api.post("/v1/trials/api-durable/events", json={"name": "workflow_created"})
    assert response.status_code == 202
    calls = [{"name": "api_call", "idempotency_key": f"call-{i}"} for i in range(100)]
    assert (await api.post("/v1/trials/api-durable/events", json=calls)).status_code == 202
    assert [p.delivered_at for p in _pending(settings)] == [None] * 101
    monkeypatch.setattr(WorkflowHandle, "signal", real_signal)
    for _ in range(50):
        await env.sleep(timedelta(seconds=1))
        await asyncio.sleep(0.1)
        if all(p.delivered_at for p in _pending(settings)):
            break
    assert all(p.delivered_at for p in _pending(settings))
    await env.sleep(timedelta(minutes=1))
    status = (await api.get("/v1/trials/api-durable")).json()
    assert status["events_seen"] == {"workflow_created": 1, "api_call": 100}
    history = await env.client.get_workflow_handle("trial-api-durable").fetch_history()
    signals = sorted(
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
    )
    assert signals == ["event", "events"]


def assert_kept_uncounted(
    settings: Settings, response: httpx.Response, user_id: str, key: str
) -> None:
    """The event was answered 202 and stored uncounted, its signal given up (the trial gone)."""
    assert response.status_code == 202, response.text
    assert response.json()["events"][0]["counted"] is False
    with Session(make_engine(settings.effective_database_url)) as session:
        event = session.get(TrialEvent, f"{user_id}:{key}")
        signal = session.exec(
            select(PendingSignal).where(PendingSignal.workflow_id == workflow_id_for(user_id))
        ).one()
    assert event is not None and not event.counted
    assert signal.failed and signal.delivered_at is None


async def test_an_event_sent_as_its_trial_ends_is_kept_and_not_counted(
    api: httpx.AsyncClient,
    env: WorkflowEnvironment,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trial ends between the API's check and its signal: the event is kept, uncounted,
    its signal given up, and the answer says so, like any event after the end."""
    from trialpath.core.contract import workflow_id_for
    from trialpath.entry.trials import Trials

    await started(api, env, "api-race", qualification={"role": "business"})
    assert (await api.delete("/v1/trials/api-race")).status_code == 202
    await env.client.get_workflow_handle(workflow_id_for("api-race")).result()

    async def checked_before_the_end(self: Trials, user_id: str) -> Any:
        return self.client.get_workflow_handle(workflow_id_for(user_id))

    monkeypatch.setattr(Trials, "_running", checked_before_the_end)
    response = await api.post(
        "/v1/trials/api-race/events", json={"name": "workflow_created", "idempotency_key": "late"}
    )
    assert_kept_uncounted(settings, response, "api-race", "late")


def _count_describes(client: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The workflow ids the API describes from now on (a call to Temporal each)."""
    service = client.workflow_service
    real = service.describe_workflow_execution
    described: list[str] = []

    async def counting(request: Any, *args: Any, **kwargs: Any) -> Any:
        described.append(request.execution.workflow_id)
        return await real(request, *args, **kwargs)

    monkeypatch.setattr(service, "describe_workflow_execution", counting)
    return described


async def _recorded(settings: Settings, user_id: str) -> Trial:
    for _ in range(100):
        with Session(make_engine(settings.effective_database_url)) as session:
            trial = session.get(Trial, user_id)
        if trial is not None:
            return trial
        await asyncio.sleep(0.05)
    raise AssertionError(f"the trial of {user_id} was never recorded")


async def test_events_of_a_recorded_trial_go_out_without_asking_temporal(
    api: httpx.AsyncClient,
    env: WorkflowEnvironment,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trial's row says it runs: the events are stored and signalled, Temporal is not
    asked first. A trial not recorded yet is asked for, once."""
    await started(api, env, "api-fast", qualification={"role": "business"})
    await _recorded(settings, "api-fast")
    described = _count_describes(env.client, monkeypatch)
    response = await api.post("/v1/trials/api-fast/events", json={"name": "workflow_created"})
    assert response.status_code == 202, response.text
    assert response.json()["events"][0]["counted"] is True
    assert described == []
    await env.sleep(timedelta(minutes=1))
    assert (await api.get("/v1/trials/api-fast")).json()["events_seen"] == {"workflow_created": 1}

    # Without its row (as before the trial's first record), Temporal says whether it runs.
    with Session(make_engine(settings.effective_database_url)) as session:
        row = session.get(Trial, "api-fast")
        session.delete(row)
        session.commit()
    response = await api.post("/v1/trials/api-fast/events", json={"name": "teammate_invited"})
    assert response.status_code == 202, response.text
    assert described == ["trial-api-fast"]
    await env.sleep(timedelta(minutes=1))
    seen = (await api.get("/v1/trials/api-fast")).json()["events_seen"]
    assert seen == {"workflow_created": 1, "teammate_invited": 1}


async def test_events_of_a_terminated_trial_are_kept_uncounted(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    """Terminated from the Web UI, the workflow writes no last record: its row still shows it
    running. The events are kept uncounted, their signal given up, and the answer says so."""
    await started(api, env, "api-terminated", qualification={"role": "business"})
    before = await _recorded(settings, "api-terminated")
    assert before.ended_at is None
    handle = env.client.get_workflow_handle(workflow_id_for("api-terminated"))
    await handle.terminate(reason="support closed it by hand")
    response = await api.post(
        "/v1/trials/api-terminated/events",
        json={"name": "workflow_created", "idempotency_key": "after"},
    )
    assert_kept_uncounted(settings, response, "api-terminated", "after")


async def test_events_after_the_end_are_kept_for_a_while_then_refused(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    """Kept uncounted for `events_after_end_days` (90 journey days) after the workflow ended,
    then 409; never for an unknown user (404) nor once the user's data was erased (409)."""
    await started(api, env, "api-after", qualification={"role": "business"})
    assert (await api.delete("/v1/trials/api-after")).status_code == 202
    await env.client.get_workflow_handle(workflow_id_for("api-after")).result()
    soon = await api.post(
        "/v1/trials/api-after/events", json=[{"name": "login"}, {"name": "referral_sent"}]
    )
    assert soon.status_code == 202 and soon.json()["accepted"] == 2
    await env.sleep(timedelta(days=91))
    late = await api.post("/v1/trials/api-after/events", json={"name": "login"})
    assert_problem(late, 409, "more than 90 days ago")
    names = sorted((e.name, e.counted) for e in rows(settings, TrialEvent, "api-after"))
    assert names == [("login", False), ("referral_sent", False)]
    assert_problem(await api.post("/v1/trials/nobody/events", json={"name": "login"}), 404)
    await started(api, env, "api-gone", qualification={"role": "business"})
    erased = await api.delete("/v1/trials/api-gone", params={"erase": "true"})
    assert erased.status_code == 202, erased.text
    gone = await api.post("/v1/trials/api-gone/events", json={"name": "login"})
    assert gone.status_code in (404, 409)
    assert not rows(settings, TrialEvent, "api-gone")


# --- other signals ---------------------------------------------------------------------------


async def test_call_extension_conversion_unsubscribe(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    await started(api, env, "api-sig")
    # At noon: a call must fit in one of the agent's days (one that ran past midnight would
    # find no agent, whatever the hour the test runs at).
    noon = (datetime.now(UTC) + timedelta(days=3)).replace(hour=12, minute=0, second=0)
    at = noon.replace(microsecond=0).isoformat()
    booked = await api.post(
        "/v1/trials/api-sig/call", json={"action": "booked", "at": at, "agent": "Julia"}
    )
    assert booked.status_code == 202
    assert booked.json() == {"user_id": "api-sig", "accepted": True, "signal": "call_booked"}
    assert_problem(
        await api.post("/v1/trials/api-sig/call", json={"action": "rescheduled"}), 422, "at"
    )
    assert_problem(
        await api.post("/v1/trials/api-sig/call", json={"action": "dance"}), 422, "body.action"
    )
    assert (await api.post("/v1/trials/api-sig/extension", json={"days": 7})).status_code == 202
    assert_problem(
        await api.post("/v1/trials/api-sig/extension", json={"days": 61}), 422, "body.days"
    )
    assert_problem(
        await api.post("/v1/trials/api-sig/extension", json={"days": 0}), 422, "body.days"
    )
    assert (
        await api.post("/v1/trials/api-sig/unsubscribe", json={"channel": "sms"})
    ).status_code == 202
    assert_problem(await api.post("/v1/trials/api-sig/unsubscribe", json={"channel": "fax"}), 422)
    await env.sleep(timedelta(minutes=5))
    status = (await api.get("/v1/trials/api-sig")).json()
    assert status["call"]["state"] == "booked"
    assert status["call"]["agent"] == "Julia"
    assert status["unsubscribed"] == ["sms"]
    converted = await api.post("/v1/trials/api-sig/conversion", json={"plan": "team", "mrr": 49})
    assert converted.status_code == 202
    await env.sleep(timedelta(minutes=5))
    # The trial has ended: signals that make no sense any more are refused.
    assert_problem(await api.post("/v1/trials/api-sig/extension", json={"days": 7}), 409, "ended")
    assert_problem(await api.post("/v1/trials/api-sig/conversion", json={"plan": "team"}), 409)
    # What the user does after the trial is kept (uncounted) for retention, upsell, referral.
    upgrade = {"name": "plan_upgraded", "idempotency_key": "up-1"}
    after = await api.post("/v1/trials/api-sig/events", json=upgrade)
    assert after.status_code == 202, after.text
    assert after.json()["events"] == [
        {"id": "up-1", "name": "plan_upgraded", "duplicate": False, "counted": False}
    ]
    again = await api.post("/v1/trials/api-sig/events", json=upgrade)
    assert again.json()["duplicates"] == 1
    stored = [e for e in rows(settings, TrialEvent, "api-sig") if e.name == "plan_upgraded"]
    assert [(e.counted, e.id) for e in stored] == [(False, "api-sig:up-1")]
    # Its status is still readable.
    assert (await api.get("/v1/trials/api-sig")).json()["stage"] == "converted"
    for path in ("extension", "conversion", "unsubscribe", "call"):
        assert_problem(await api.post(f"/v1/trials/ghost/{path}", json={}), 422)


# --- cancel / erase --------------------------------------------------------------------------


async def test_cancel_then_status_from_the_database(
    api: httpx.AsyncClient, env: WorkflowEnvironment
) -> None:
    await started(api, env, "api-cancel")
    response = await api.delete("/v1/trials/api-cancel", params={"reason": "not for us"})
    assert response.status_code == 202
    assert response.json() == {
        "user_id": "api-cancel",
        "cancelled": True,
        "erased": False,
        "history_deleted": False,
        "erased_rows": {},
        "runs_deleted": 0,
        "history_pending": 0,
        "nothing_left": False,
    }
    await env.sleep(timedelta(minutes=1))
    assert (await api.get("/v1/trials/api-cancel")).json()["stage"] == "cancelled"
    assert_problem(await api.delete("/v1/trials/api-cancel"), 409, "ended")
    assert_problem(await api.delete("/v1/trials/ghost"), 404)
    assert_problem(await api.get("/v1/trials/ghost"), 404)


async def test_erase_wipes_personal_data(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    await started(api, env, "api-erase", phone="+33612345678", company="Acme")
    await api.post(
        "/v1/trials/api-erase/events", json={"name": "login", "properties": {"ip": "1.2.3.4"}}
    )
    await env.sleep(timedelta(minutes=5))
    assert rows(settings, Message, "api-erase")
    response = await api.delete("/v1/trials/api-erase", params={"erase": "true"})
    assert response.status_code == 202
    # The time-skipping server cannot delete histories; tests/test_erasure.py checks that part
    # on the dev server.
    erased = response.json()
    assert (erased["user_id"], erased["cancelled"], erased["erased"]) == ("api-erase", True, True)
    assert (erased["history_deleted"], erased["nothing_left"]) == (False, False)
    assert erased["erased_rows"]["trials"] == 1
    assert erased["erased_rows"]["messages"] == len(rows(settings, Message, "api-erase"))
    trial = rows(settings, Trial, "api-erase")[0]
    assert (trial.name, trial.email, trial.phone, trial.company) == (None, None, None, None)
    assert trial.stage == "cancelled"
    assert all(
        m.recipient == "erased" and not m.text and not m.html
        for m in rows(settings, Message, "api-erase")
    )
    assert all(e.properties == {} for e in rows(settings, TrialEvent, "api-erase"))
    assert not list(settings.outbox_dir.glob("trial-api-erase*"))
    status = (await api.get("/v1/trials/api-erase")).json()
    assert status["stage"] == "cancelled"
    assert "Ada" not in str(status) and "@" not in str(status)


# --- idempotency -----------------------------------------------------------------------------


async def test_idempotency_key(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    await started(api, env, "api-idem")
    headers = {"Idempotency-Key": "req-1"}
    event = {"name": "login"}
    first = await api.post("/v1/trials/api-idem/events", json=event, headers=headers)
    second = await api.post("/v1/trials/api-idem/events", json=event, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers.get("idempotent-replayed") == "true"
    assert len(rows(settings, TrialEvent, "api-idem")) == 1
    assert_problem(
        await api.post("/v1/trials/api-idem/events", json={"name": "other"}, headers=headers),
        409,
        "different request",
    )
    # Scoped per API key: another client may use the same key for its own request.
    other = await api.post(
        "/v1/trials/api-idem/events",
        json={"name": "other"},
        headers={**headers, "Authorization": f"Bearer {SECOND_KEY}"},
    )
    assert other.status_code == 202


# --- listing ---------------------------------------------------------------------------------


async def test_list_rejects_bad_filters(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/v1/trials", params={"stage": "sleeping"}), 422, "query.stage")
    assert_problem(await api.get("/v1/trials", params={"persona": "wizard"}), 422, "query.persona")
    assert_problem(await api.get("/v1/trials", params={"page_size": 1000}), 422, "query.page_size")


async def test_list_refuses_a_page_token_it_did_not_make(api: httpx.AsyncClient) -> None:
    """At once and as the caller's mistake (422), not after Temporal's retries (503)."""
    for forged in ("Zm9vYmFy", "not a token", "a" * 500):
        body = assert_problem(
            await api.get("/v1/trials", params={"page_token": forged}), 422, "page_token"
        )
        assert body["errors"][0]["field"] == "query.page_token"


def test_page_tokens_round_trip_and_belong_to_their_filters() -> None:
    tokens = PageTokens("a-secret-of-this-installation")
    query = "WorkflowType = 'TrialWorkflow' AND Persona = 'technical'"
    made = tokens.make(b"\x00temporal's token\xff", query)
    assert tokens.read(made, query) == b"\x00temporal's token\xff"
    with pytest.raises(InvalidRequest, match="other filters"):
        tokens.read(made, "WorkflowType = 'TrialWorkflow'")
    with pytest.raises(InvalidRequest, match="not a token this API returned"):
        PageTokens("another-installation").read(made, query)


def test_kpi_dates_are_declared_with_their_formats(api_app_openapi: dict[str, Any]) -> None:
    for path in ("/v1/kpis", "/v1/kpis/experiment"):
        parameters = {p["name"]: p for p in api_app_openapi["paths"][path]["get"]["parameters"]}
        for name in ("since", "until"):
            formats = {s.get("format") for s in parameters[name]["schema"]["anyOf"]}
            assert formats == {"date", "date-time"}, (path, name)


@pytest.fixture
def api_app_openapi() -> dict[str, Any]:
    import sqlalchemy

    from trialpath.entry.api.app import create_app

    app = create_app(Settings(), engine=sqlalchemy.create_engine("sqlite://"))
    schema: dict[str, Any] = app.openapi()
    return schema


async def test_call_outcomes_that_cannot_be_true_are_refused(
    api: httpx.AsyncClient, env: WorkflowEnvironment
) -> None:
    await started(api, env, "api-call-time")
    status = (await api.get("/v1/trials/api-call-time")).json()
    call_at = datetime.fromisoformat(status["call"]["at"])
    now = await env.get_current_time()
    past = (now - timedelta(hours=1)).isoformat()
    for action in ("booked", "rescheduled"):
        body = assert_problem(
            await api.post("/v1/trials/api-call-time/call", json={"action": action, "at": past}),
            422,
            "in the past",
        )
        assert body["errors"][0]["field"] == "body.at"
    after_end = (datetime.fromisoformat(status["trial_ends_at"]) + timedelta(days=1)).isoformat()
    assert_problem(
        await api.post("/v1/trials/api-call-time/call", json={"action": "booked", "at": after_end}),
        409,
        "extend the trial first",
    )
    for action in ("completed", "no_show"):
        assert_problem(
            await api.post("/v1/trials/api-call-time/call", json={"action": action}),
            409,
            "before it starts",
        )
    # Once the call has taken place, its outcome is taken.
    await env.sleep(call_at + timedelta(minutes=30) - await env.get_current_time())
    done = await api.post("/v1/trials/api-call-time/call", json={"action": "completed"})
    assert done.status_code == 202, done.text
    await env.sleep(timedelta(minutes=5))
    assert (await api.get("/v1/trials/api-call-time")).json()["call"]["state"] == "completed"


async def test_text_that_cannot_be_stored_is_refused(
    api: httpx.AsyncClient, env: WorkflowEnvironment
) -> None:
    """PostgreSQL refuses U+0000 in text (the fuzz test found an event whose idempotency key
    held one failing there), and a lone surrogate has no UTF-8 form: both are refused as
    invalid, in any field, on every database."""
    bad = await api.post("/v1/trials", json=signup("nul-1", name="Ada\x00"))
    assert bad.status_code == 422
    assert "NUL character" in bad.json()["detail"]
    surrogate = await api.post(
        "/v1/trials",
        content=b'{"user_id": "nul-2", "email": "a@b.co", "name": "A\\ud800"}',
        headers={"Content-Type": "application/json"},
    )
    assert surrogate.status_code == 422 and "lone surrogates" in surrogate.text
    assert (await api.post("/v1/trials", json=signup("nul-1"))).status_code == 201
    for event in (
        {"name": "login", "idempotency_key": "k\x00"},
        {"name": "login", "properties": {"note": "a\x00b"}},
        {"name": "login", "properties": {"deep": [{"k\x00": 1}]}},
    ):
        refused = await api.post("/v1/trials/nul-1/events", json=event)
        assert refused.status_code == 422, event
        assert "NUL character" in refused.text
    accepted = await api.post("/v1/trials/nul-1/events", json={"name": "login"})
    assert accepted.status_code == 202


async def test_parameters_that_cannot_be_stored_are_refused(api: httpx.AsyncClient) -> None:
    """A NUL in a filter reached PostgreSQL's query (`GET /v1/audit?action=%00`) and failed
    there: query and path parameters are checked before any route reads them."""
    for url in ("/v1/audit?action=%00", "/v1/audit?actor=a%00b", "/v1/audit?user_id=%00"):
        response = await api.get(url)
        assert response.status_code == 422, (url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert (await api.get("/v1/audit?action=trial.start")).status_code == 200


# --- where users came from -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "channel"),
    [
        ({"utm_source": " Newsletter ", "utm_medium": "email"}, "newsletter"),
        ({"referrer": "https://www.producthunt.com/posts/trialpath?ref=x"}, "producthunt.com"),
        ({"referrer": "news.ycombinator.com/item?id=1"}, "news.ycombinator.com"),
        ({"landing_page": "/pricing/team"}, "direct"),
        ({}, "direct"),
    ],
)
def test_the_source_of_a_signup(source: dict[str, str], channel: str) -> None:
    from trialpath.core.contract import Acquisition

    assert Acquisition.model_validate(source).channel() == channel


async def test_a_signup_records_where_the_user_came_from(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    source = {
        "utm_source": "newsletter",
        "utm_medium": "email",
        "utm_campaign": "december",
        "referrer": "https://mail.example.com/?u=ada@example.com",
        "landing_page": "/pricing/team",
    }
    await started(api, env, "api-src-1", source=source)
    await started(api, env, "api-src-2")
    bad = await api.post("/v1/trials", json=signup("api-src-3", source={"utm_term": "x"}))
    assert_problem(bad, 422)
    [row] = rows(settings, Trial, "api-src-1")
    assert (row.source, row.utm_medium, row.utm_campaign, row.landing_page) == (
        "newsletter",
        "email",
        "december",
        "/pricing/team",
    )
    assert rows(settings, Trial, "api-src-2")[0].source == "direct"
    # Its persona was answered at signup: recorded, with when, for the qualifier KPIs.
    assert row.persona_source == "signup" and row.persona_at is not None
    split = await api.get("/v1/kpis", params={"by": "source"})
    assert split.status_code == 200, split.text
    trials = {v["group"]: v["n"] for v in split.json()["kpis"] if v["kpi"] == "activation_rate"}
    assert trials == {"direct": 1, "newsletter": 1}
    # Erasure wipes the URLs (they can carry anything) and keeps the campaign-level source.
    erased = await api.delete("/v1/trials/api-src-1", params={"erase": "true"})
    assert erased.status_code == 202
    [row] = rows(settings, Trial, "api-src-1")
    assert (row.referrer, row.landing_page, row.source) == (None, None, "newsletter")

"""The typed client `trialpath.client`: the async client against the real app (time-skipping
Temporal server, real SQLite database), the sync client against canned answers that record the
requests it sends."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from trialpath.client import (
    AsyncTrialpath,
    Conflict,
    InvalidRequest,
    NotFound,
    Trialpath,
    TrialpathError,
    Unauthorized,
    Unavailable,
)
from trialpath.core.contract import Qualification, workflow_id_for
from trialpath.entry.api.app import create_app
from trialpath.entry.commands import Accepted, Erased, EventsAccepted, NewEvent, TrialCreated
from trialpath.operations.config import Settings
from trialpath.support.agents import AgentSettings

from .conftest import API_KEY, API_KEYS

pytestmark = pytest.mark.database_agnostic  # its subject is not the database

QUALIFIED = {"role": "technical", "challenge": "integrations", "urgency": "this_week"}


class Recording(httpx.ASGITransport):
    """The ASGI transport, remembering each request sent through it."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(app=app)
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return await super().handle_async_request(request)

    def sent_to(self, path: str, method: str = "POST") -> list[httpx.Request]:
        return [r for r in self.sent if r.url.path == path and r.method == method]


@pytest.fixture
async def app(
    env: WorkflowEnvironment, settings: Settings, worker: Worker
) -> AsyncIterator[FastAPI]:
    """The API app wired to the time-skipping server and a real database (as `api` in
    conftest.py)."""
    settings.api_keys = API_KEYS[:1]
    application = create_app(settings, client=env.client, clock=env.get_current_time)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def transport(app: FastAPI, env: WorkflowEnvironment) -> AsyncIterator[Recording]:
    """The transport to the app. Each test ends the trials it starts; should one fail first,
    this ends them still, since a running trial would hold the time-skipping server's clock."""
    recording = Recording(app)
    yield recording
    for user_id in {json.loads(r.content)["user_id"] for r in recording.sent_to("/v1/trials")}:
        handle = env.client.get_workflow_handle(workflow_id_for(user_id))
        with contextlib.suppress(Exception):
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.signal("cancel", {})
                await asyncio.wait_for(handle.result(), timeout=30)


@pytest.fixture
async def tp(transport: Recording) -> AsyncIterator[AsyncTrialpath]:
    async with AsyncTrialpath("http://testserver", api_key=API_KEY, transport=transport) as client:
        yield client


async def start(tp: AsyncTrialpath, env: WorkflowEnvironment, user_id: str) -> TrialCreated:
    created = await tp.start_trial(
        user_id, f"{user_id}@example.com", name="Ada Lovelace", timezone="Europe/Paris"
    )
    await env.sleep(timedelta(minutes=1))
    return created


async def end(tp: AsyncTrialpath, env: WorkflowEnvironment, user_id: str) -> None:
    """Cancels the trial and waits for its workflow to finish."""
    assert await tp.cancel(user_id, reason="test over") == Erased(
        user_id=user_id, cancelled=True, erased=False
    )
    await asyncio.wait_for(
        env.client.get_workflow_handle(workflow_id_for(user_id)).result(), timeout=30
    )


def bodies(transport: Recording, path: str) -> list[Any]:
    return [json.loads(r.content) for r in transport.sent_to(path)]


# --- async client against the real app -------------------------------------------------------


async def test_happy_path(
    tp: AsyncTrialpath, env: WorkflowEnvironment, transport: Recording
) -> None:
    created = await tp.start_trial(
        "cl-happy", "ada@example.com", name="Ada Lovelace", source={"utm_source": "partner"}
    )
    assert bodies(transport, "/v1/trials")[0]["source"] == {"utm_source": "partner"}
    assert created.trial.source is not None and created.trial.source.utm_source == "partner"
    assert isinstance(created, TrialCreated)
    assert (created.workflow_id, created.persona, created.trial.name) == (
        "trial-cl-happy",
        None,
        "Ada Lovelace",
    )
    assert created.run_id
    # Same data again: 200, still a TrialCreated.
    again = await tp.start_trial("cl-happy", "ada@example.com", name="Ada Lovelace")
    assert (again.workflow_id, again.run_id) == ("trial-cl-happy", None)
    await env.sleep(timedelta(minutes=1))

    qualified = await tp.qualify("cl-happy", "technical", "integrations", "this_week")
    assert qualified.persona == "technical"

    one = await tp.track(
        "cl-happy", "integration_connected", properties={"kind": "slack"}, idempotency_key="int-1"
    )
    assert (one.accepted, one.duplicates) == (1, 0)
    assert [(e.id, e.name) for e in one.events] == [("int-1", "integration_connected")]

    events: list[NewEvent | dict[str, Any]] = [
        {"name": "api_call", "idempotency_key": f"call-{i}"} for i in range(149)
    ]
    events.append(NewEvent(name="integration_connected", idempotency_key="int-1"))
    many = await tp.track_many("cl-happy", events)
    assert (many.accepted, many.duplicates) == (149, 1)
    assert [e.id for e in many.events] == [f"call-{i}" for i in range(149)] + ["int-1"]
    sent = bodies(transport, "/v1/trials/cl-happy/events")
    assert [len(b) for b in sent[1:]] == [100, 50]
    assert sent[2][-1] == {"name": "integration_connected", "idempotency_key": "int-1"}

    await env.sleep(timedelta(minutes=5))
    before = await tp.get("cl-happy")
    assert before.events_seen == {"integration_connected": 1, "api_call": 149}
    assert before.persona == "technical"
    checklist = await tp.checklist("cl-happy")
    assert (checklist.persona, checklist.progress, checklist.activated) == ("technical", 100, True)
    token = await tp.widget_token("cl-happy")
    assert token.user_id == "cl-happy" and token.token and token.expires_at

    # At noon: a call must fit in one of the agent's days (one that ran past midnight would
    # find no agent, whatever the hour the test runs at).
    at = (datetime.now(UTC) + timedelta(days=3)).replace(hour=12, minute=0, second=0)
    assert await tp.extend("cl-happy", 7) == Accepted(user_id="cl-happy", signal="extend_trial")
    assert (await tp.unsubscribe("cl-happy", "sms")).signal == "unsubscribe"
    assert (await tp.call_booked("cl-happy", at, agent="Julia")).signal == "call_booked"
    assert bodies(transport, "/v1/trials/cl-happy/call") == [
        {"action": "booked", "at": at.isoformat().replace("+00:00", "Z"), "agent": "Julia"}
    ]
    await env.sleep(timedelta(minutes=5))
    after = await tp.get("cl-happy")
    assert after.trial_ends_at - before.trial_ends_at == timedelta(days=7)
    assert after.unsubscribed == ["sms"]
    assert (after.call.state, after.call.agent, after.call.at) == ("booked", "Julia", at)

    converted = await tp.convert("cl-happy", "team", mrr=49)
    assert converted == Accepted(user_id="cl-happy", signal="converted")
    await env.sleep(timedelta(minutes=5))
    assert (await tp.get("cl-happy")).stage == "converted"
    # The converted trial has ended: the workflow finished on its own, cancelling is refused.
    await asyncio.wait_for(env.client.get_workflow_handle("trial-cl-happy").result(), timeout=30)
    with pytest.raises(Conflict) as ended:
        await tp.cancel("cl-happy")
    assert (ended.value.status, ended.value.title) == (409, "Trial has ended")
    assert "already ended" in ended.value.detail


async def test_errors_are_typed(tp: AsyncTrialpath, env: WorkflowEnvironment) -> None:
    with pytest.raises(NotFound) as missing:
        await tp.get("cl-nobody")
    assert missing.value.status == 404
    assert missing.value.detail == "no trial for user cl-nobody"

    await start(tp, env, "cl-err")
    with pytest.raises(Conflict) as conflict:
        await tp.start_trial("cl-err", "other@example.com", name="Ada Lovelace")
    assert conflict.value.status == 409
    assert "different email" in conflict.value.detail

    with pytest.raises(InvalidRequest) as invalid:
        await tp.qualify("cl-err", "wizard", "integrations", "now")  # type: ignore[arg-type]
    assert invalid.value.status == 422
    assert "body.role" in invalid.value.detail
    assert {e["field"] for e in invalid.value.errors} == {"body.role", "body.urgency"}

    future = await env.get_current_time() + timedelta(hours=2)
    with pytest.raises(InvalidRequest) as too_late:
        await tp.track("cl-err", "login", occurred_at=future)
    assert too_late.value.errors == [
        {"field": "body.occurred_at", "message": too_late.value.detail}
    ]
    await end(tp, env, "cl-err")
    with pytest.raises(Conflict, match="already ended"):
        await tp.cancel("cl-err")


async def test_auth_errors(
    tp: AsyncTrialpath, transport: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIALPATH_API_KEY", raising=False)
    async with AsyncTrialpath("http://testserver", transport=transport) as anonymous:
        with pytest.raises(Unauthorized) as unauthorized:
            await anonymous.get("cl-auth")
        assert await anonymous.healthy() is True
    assert unauthorized.value.status == 401
    assert "Bearer" in unauthorized.value.detail
    async with AsyncTrialpath("http://testserver", "wrong", transport=transport) as wrong:
        with pytest.raises(Unauthorized) as forbidden:
            await wrong.get("cl-auth")
    assert (forbidden.value.status, forbidden.value.title) == (403, "Forbidden")
    # The key from the environment is used when none is given.
    monkeypatch.setenv("TRIALPATH_API_KEY", API_KEY)
    async with AsyncTrialpath("http://testserver", transport=transport) as from_env:
        with pytest.raises(NotFound):
            await from_env.get("cl-auth")


async def test_idempotency_key_replays_the_answer(
    tp: AsyncTrialpath, env: WorkflowEnvironment, transport: Recording
) -> None:
    await start(tp, env, "cl-idem")
    first = await tp.track("cl-idem", "login", idempotency_key="evt-1")
    second = await tp.track("cl-idem", "login", idempotency_key="evt-1")
    # The event's own key: stored once, the repeat reported as a duplicate.
    assert (first.accepted, first.duplicates) == (1, 0)
    assert (second.accepted, second.duplicates) == (0, 1)
    assert "idempotency-key" not in transport.sent[-1].headers
    # A request key replays the stored answer as is (a second store would report a duplicate).
    batch = [{"name": "report"}]
    replayed = [await tp.track_many("cl-idem", batch, idempotency_key="req-1") for _ in range(2)]
    assert replayed[0] == replayed[1]
    assert (replayed[1].accepted, replayed[1].duplicates) == (1, 0)
    assert [r.headers["idempotency-key"] for r in transport.sent[-2:]] == ["req-1", "req-1"]
    with pytest.raises(Conflict, match="different request"):
        await tp.track_many("cl-idem", [{"name": "other"}], idempotency_key="req-1")
    # Without a key, nothing idempotent is sent: two events are stored.
    plain = [await tp.track("cl-idem", "login") for _ in range(2)]
    assert plain[0].events[0].id != plain[1].events[0].id
    assert "idempotency-key" not in transport.sent[-1].headers
    assert json.loads(transport.sent[-1].content) == {"name": "login"}
    await env.sleep(timedelta(minutes=5))
    assert (await tp.get("cl-idem")).events_seen == {"login": 3, "report": 1}
    await end(tp, env, "cl-idem")


async def test_health(tp: AsyncTrialpath) -> None:
    assert await tp.healthy() is True
    assert await tp.ready() is True


# --- sync client against canned answers ------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def problem(status: int, title: str, detail: str, **extra: Any) -> httpx.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


ACCEPTED = {"user_id": "u1", "accepted": True, "signal": "x"}


class Recorder:
    """A mock API: answers from `handler` and remembers every request."""

    def __init__(self, handler: Handler) -> None:
        self.sent: list[httpx.Request] = []
        self.handler = handler

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return self.handler(request)

    def client(self, api_key: str | None = "k") -> Trialpath:
        return Trialpath("http://api.test/base", api_key, transport=httpx.MockTransport(self))

    def requests(self) -> list[tuple[str, str, Any]]:
        """(method, path?query, JSON body) of each request sent."""
        return [
            (
                r.method,
                r.url.raw_path.decode(),
                json.loads(r.content) if r.content else None,
            )
            for r in self.sent
        ]


def created(request: httpx.Request) -> httpx.Response:
    trial = json.loads(request.content)
    return httpx.Response(
        201,
        json={
            "user_id": trial["user_id"],
            "workflow_id": f"trial-{trial['user_id']}",
            "run_id": "r1",
            "signup_at": "2026-01-01T00:00:00Z",
            "persona": None,
            "trial": trial,
        },
    )


def test_sync_request_building() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/base/v1/trials" and request.method == "POST":
            return created(request)
        if path.endswith("/qualification"):
            return httpx.Response(200, json={"persona": "business"})
        if path.endswith("/events"):
            return httpx.Response(202, json={"accepted": 1, "duplicates": 0, "events": []})
        if request.method == "DELETE":
            return httpx.Response(202, json={"user_id": "u1", "cancelled": True, "erased": True})
        return httpx.Response(202, json=ACCEPTED)

    api = Recorder(answer)
    at = datetime(2026, 3, 1, 14, 30, tzinfo=UTC)
    with api.client() as tp:
        trial = tp.start_trial(
            "u1",
            "a@b.co",
            name="Ada",
            phone="+33600000000",
            trial_days=21,
            qualification=Qualification(role="business"),
            idempotency_key="signup-u1",
        )
        assert trial.trial.qualification == Qualification(role="business")
        assert tp.qualify("u1", "business", "team_coordination", "evaluating").persona == "business"
        tp.track("u1", "login", occurred_at=at, properties={"ip": "1.2.3.4"}, idempotency_key="e1")
        tp.call_booked("u1", at)
        tp.call_rescheduled("u1", at, idempotency_key="move-1")
        tp.call_completed("u1", "went well")
        tp.call_no_show("u1")
        tp.extend("u1", 7)
        tp.convert("u1", "team")
        tp.convert("u1", "team", mrr=49.5)
        tp.unsubscribe("u1", "all")
        assert tp.cancel("u1", reason="gdpr request", erase=True).erased is True
        tp.cancel("odd/../id")
    assert api.requests() == [
        (
            "POST",
            "/base/v1/trials",
            {
                "user_id": "u1",
                "email": "a@b.co",
                "name": "Ada",
                "phone": "+33600000000",
                "locale": "en",
                "timezone": "UTC",
                "company": "",
                "trial_days": 21,
                "qualification": {"role": "business"},
            },
        ),
        (
            "POST",
            "/base/v1/trials/u1/qualification",
            {"role": "business", "challenge": "team_coordination", "urgency": "evaluating"},
        ),
        (
            "POST",
            "/base/v1/trials/u1/events",
            {
                "name": "login",
                "occurred_at": "2026-03-01T14:30:00Z",
                "properties": {"ip": "1.2.3.4"},
                "idempotency_key": "e1",
            },
        ),
        ("POST", "/base/v1/trials/u1/call", {"action": "booked", "at": "2026-03-01T14:30:00Z"}),
        (
            "POST",
            "/base/v1/trials/u1/call",
            {"action": "rescheduled", "at": "2026-03-01T14:30:00Z"},
        ),
        ("POST", "/base/v1/trials/u1/call", {"action": "completed", "notes": "went well"}),
        ("POST", "/base/v1/trials/u1/call", {"action": "no_show"}),
        ("POST", "/base/v1/trials/u1/extension", {"days": 7}),
        ("POST", "/base/v1/trials/u1/conversion", {"plan": "team"}),
        ("POST", "/base/v1/trials/u1/conversion", {"plan": "team", "mrr": 49.5}),
        ("POST", "/base/v1/trials/u1/unsubscribe", {"channel": "all"}),
        ("DELETE", "/base/v1/trials/u1?erase=true&reason=gdpr+request", None),
        ("DELETE", "/base/v1/trials/odd%2F..%2Fid?erase=false", None),
    ]
    assert {r.headers["authorization"] for r in api.sent} == {"Bearer k"}
    # An event's own key stays in the body: it is per user, the header is per API key.
    assert [r.headers.get("idempotency-key") for r in api.sent] == [
        "signup-u1",
        None,
        None,
        None,
        "move-1",
        *[None] * 8,
    ]


def test_sync_track_many_splits_and_merges() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        batch = json.loads(request.content)
        results = [
            {"id": e.get("idempotency_key", "gen"), "name": e["name"], "duplicate": i == 0}
            for i, e in enumerate(batch)
        ]
        return httpx.Response(
            202, json={"accepted": len(batch) - 1, "duplicates": 1, "events": results}
        )

    api = Recorder(answer)
    events: list[NewEvent | dict[str, Any]] = [
        NewEvent(name="a", idempotency_key=f"k{i}") for i in range(130)
    ]
    events += [{"name": "b", "occurred_at": datetime(2026, 1, 1, tzinfo=UTC)}] * 120
    with api.client() as tp:
        merged = tp.track_many("u1", events, idempotency_key="batch")
        assert tp.track_many("u1", []) == EventsAccepted(accepted=0, duplicates=0, events=[])
        tp.track_many("u1", events[:3], idempotency_key="small")
    sizes = [len(body) for _, _, body in api.requests()]
    assert sizes == [100, 100, 50, 3]
    assert [r.headers.get("idempotency-key") for r in api.sent] == [
        "batch:1",
        "batch:2",
        "batch:3",
        "small",
    ]
    assert api.requests()[1][2][29:31] == [
        {"name": "a", "idempotency_key": "k129"},
        {"name": "b", "occurred_at": "2026-01-01T00:00:00Z"},
    ]
    assert (merged.accepted, merged.duplicates, len(merged.events)) == (247, 3, 250)
    assert [e.id for e in merged.events[:2]] == ["k0", "k1"]
    assert merged.events[249].id == "gen"


def test_sync_list_and_iter_trials() -> None:
    def summary(user_id: str) -> dict[str, Any]:
        return {
            "user_id": user_id,
            "workflow_id": f"trial-{user_id}",
            "running": True,
            "stage": "onboarding",
            "persona": "technical",
            "activated": False,
            "trial_ends_at": None,
            "cs_owner": None,
            "started_at": None,
        }

    pages = {
        None: ([summary("u1"), summary("u2")], "t2"),
        "t2": ([summary("u3")], "t3"),
        "t3": ([], None),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        items, token = pages[request.url.params.get("page_token")]
        return httpx.Response(200, json={"items": items, "next_page_token": token})

    api = Recorder(answer)
    with api.client() as tp:
        page = tp.list(stage="onboarding", activated=False, page_size=2)
        assert ([t.user_id for t in page.items], page.next_page_token) == (["u1", "u2"], "t2")
        users = [t.user_id for t in tp.iter_trials(persona="technical", page_size=2)]
    assert users == ["u1", "u2", "u3"]
    assert [path for _, path, _ in api.requests()] == [
        "/base/v1/trials?stage=onboarding&activated=false&page_size=2",
        "/base/v1/trials?persona=technical&page_size=2",
        "/base/v1/trials?persona=technical&page_size=2&page_token=t2",
        "/base/v1/trials?persona=technical&page_size=2&page_token=t3",
    ]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, InvalidRequest),
        (401, Unauthorized),
        (403, Unauthorized),
        (404, NotFound),
        (409, Conflict),
        (413, InvalidRequest),
        (422, InvalidRequest),
        (503, Unavailable),
        (500, TrialpathError),
        (405, TrialpathError),
    ],
)
def test_sync_problems_become_typed_errors(status: int, kind: type[TrialpathError]) -> None:
    errors = [{"field": "body.days", "message": "too many"}]
    api = Recorder(lambda _: problem(status, "Some title", f"detail {status}", errors=errors))
    with api.client() as tp, pytest.raises(TrialpathError) as caught:
        tp.extend("u1", 99)
    assert type(caught.value) is kind
    assert (caught.value.status, caught.value.title, caught.value.detail) == (
        status,
        "Some title",
        f"detail {status}",
    )
    assert caught.value.errors == errors
    assert str(caught.value) == f"{status} Some title: detail {status}"


def test_sync_error_bodies_that_are_not_problems() -> None:
    answers = iter(
        [
            httpx.Response(502, text="<html>Bad gateway</html>"),
            httpx.Response(404, json=["not", "an", "object"]),
            httpx.Response(503),
            httpx.Response(200, text="not json"),
            httpx.Response(200, json={"persona": "wizard"}),
        ]
    )
    api = Recorder(lambda _: next(answers))
    with api.client() as tp:
        with pytest.raises(TrialpathError) as gateway:
            tp.get("u1")
        with pytest.raises(NotFound) as odd:
            tp.get("u1")
        with pytest.raises(Unavailable) as empty:
            tp.get("u1")
        with pytest.raises(TrialpathError, match="not a valid TrialStatus") as garbled:
            tp.get("u1")
        with pytest.raises(TrialpathError, match="not a valid QualifyResult"):
            tp.qualify("u1", "technical", "integrations", "this_week")
    assert (gateway.value.status, gateway.value.title, gateway.value.detail) == (
        502,
        "Bad Gateway",
        "<html>Bad gateway</html>",
    )
    assert (odd.value.title, odd.value.detail, odd.value.errors) == (
        "Not Found",
        '["not","an","object"]',
        [],
    )
    assert (empty.value.status, empty.value.detail) == (503, "Service Unavailable")
    assert garbled.value.status == 200


def test_sync_health_and_unreachable_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIALPATH_API_KEY", raising=False)
    answers = {
        "/base/v1/healthz": httpx.Response(200, json={"status": "ok"}),
        "/base/v1/readyz": problem(503, "Not ready", "Temporal: connection refused"),
    }
    api = Recorder(lambda request: answers[request.url.path])
    with api.client(api_key=None) as tp:
        assert tp.healthy() is True
        assert tp.ready() is False
    assert all("authorization" not in r.headers for r in api.sent)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = Recorder(refuse)
    with down.client() as tp:
        assert tp.healthy() is False
        assert tp.ready() is False
        with pytest.raises(Unavailable) as caught:
            tp.get("u1")
    assert caught.value.status is None
    assert caught.value.detail == "ConnectError: connection refused"
    assert len(down.sent) == 3


def test_sync_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIALPATH_API_KEY", "from-env")
    api = Recorder(lambda _: httpx.Response(200, json={"status": "ok"}))
    with Trialpath(transport=httpx.MockTransport(api)) as tp:
        tp.healthy()
    with Trialpath(api_key="explicit", transport=httpx.MockTransport(api)) as tp:
        tp.healthy()
    assert [str(r.url) for r in api.sent] == ["http://127.0.0.1:8000/v1/healthz"] * 2
    assert [r.headers["authorization"] for r in api.sent] == [
        "Bearer from-env",
        "Bearer explicit",
    ]


def test_wrong_transport_kind_and_empty_user_id() -> None:
    with pytest.raises(TypeError, match="BaseTransport"):
        Trialpath(transport=httpx.ASGITransport(app=FastAPI()))
    with (
        Trialpath(transport=httpx.MockTransport(lambda _: httpx.Response(500))) as tp,
        pytest.raises(ValueError, match="user_id is empty"),
    ):
        tp.get("")


async def test_both_clients_send_the_same_requests() -> None:
    """The async client builds its requests with the same functions: same paths, bodies,
    headers for every method."""
    at = datetime(2026, 3, 1, tzinfo=UTC)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(202, json={"accepted": 1, "duplicates": 0, "events": []})
        if request.url.path.endswith("/v1/trials"):
            return httpx.Response(200, json={"items": [], "next_page_token": None})
        return problem(409, "Conflict", "the trial of user u1 has ended")

    sync_api, async_api = Recorder(answer), Recorder(answer)
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("qualify", ("u1", "technical", "integrations", "this_week"), {"idempotency_key": "q"}),
        ("track_many", ("u1", [{"name": "x"}] * 101), {}),
        ("call_booked", ("u1", at, "Julia"), {}),
        ("call_completed", ("u1",), {}),
        ("extend", ("u1", 3), {"idempotency_key": "x"}),
        ("cancel", ("u1",), {"reason": "r"}),
        ("get", ("u1",), {}),
        ("list", (), {"stage": "converted", "page_token": "p"}),
    ]
    with sync_api.client() as sync_tp:
        for name, args, kwargs in calls:
            with contextlib.suppress(Conflict):
                getattr(sync_tp, name)(*args, **kwargs)
    transport = httpx.MockTransport(async_api)
    async with AsyncTrialpath("http://api.test/base", "k", transport=transport) as async_tp:
        for name, args, kwargs in calls:
            with contextlib.suppress(Conflict):
                await getattr(async_tp, name)(*args, **kwargs)
        assert [t.user_id async for t in async_tp.iter_trials()] == []
    assert len(sync_api.sent) == len(calls) + 1
    assert async_api.requests()[:-1] == sync_api.requests()
    assert [dict(r.headers) for r in async_api.sent[:-1]] == [
        dict(r.headers) for r in sync_api.sent
    ]


async def test_async_not_ready_and_unreachable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down.test":
            raise httpx.ConnectTimeout("timed out", request=request)
        if request.url.path == "/v1/readyz":
            return problem(503, "Not ready", "database: OperationalError")
        return httpx.Response(200, json={"status": "ok"})

    transport = httpx.MockTransport(answer)
    async with AsyncTrialpath("http://up.test", "k", transport=transport) as up:
        assert await up.healthy() is True
        assert await up.ready() is False
    async with AsyncTrialpath("http://down.test", "k", transport=transport) as down:
        assert await down.healthy() is False
        with pytest.raises(Unavailable) as caught:
            await down.cancel("u1")
    assert (caught.value.status, caught.value.detail) == (None, "ConnectTimeout: timed out")


async def test_agents_through_the_client(tp: AsyncTrialpath) -> None:
    assert [a.name for a in await tp.agents()] == ["Camille", "Julia", "Samir"]
    wanted = AgentSettings(timezone="Europe/Berlin", daily_capacity=2)
    zoe = await tp.set_agent("Zoe", wanted)
    assert (zoe.name, zoe.timezone, zoe.daily_capacity, zoe.active) == (
        "Zoe",
        "Europe/Berlin",
        2,
        True,
    )
    assert not (await tp.remove_agent("Zoe")).active
    with pytest.raises(NotFound):
        await tp.remove_agent("Nobody")

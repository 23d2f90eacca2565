"""Property-based fuzzing of the HTTP API against its own OpenAPI document (schemathesis 4).

For every operation of the schema, Hypothesis draws requests that fit the schema (positive),
requests that break it (negative), and requests aimed at trials that exist, so the success
paths run too. Each request goes through the real app (lifespan, middlewares, the Temporal
time-skipping server, SQLite) and every response must:

- not be a 5xx                                    (`not_a_server_error`)
- use a status code the operation declares        (`status_code_conformance`)
- use a declared content type                     (`content_type_conformance`)
- have a body that matches the declared schema    (`response_schema_conformance`)

Hypothesis runs in a worker thread while the test's event loop keeps serving the app, the
Temporal worker and the redelivery task between examples; each request is handed to that loop.
The trials the fuzzing started are left running: the time-skipping server is the test's own.

30 examples per operation by default (about 15 s in all); TRIALPATH_FUZZ_EXAMPLES=500 digs
deeper. A failure prints the request (as curl), the response and a Hypothesis seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Future
from datetime import timedelta
from typing import Any, TypeVar
from unittest import mock

import httpx
import pytest
import schemathesis
import sqlalchemy
import uvicorn
from hypothesis import (
    HealthCheck,
    Phase,
    example,
    given,
    settings as hypothesis_settings,
    strategies as st,
)
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transport import Response
from schemathesis.generation.stateful import run_state_machine_as_test
from schemathesis.openapi.checks import UseAfterFree
from schemathesis.specs.openapi import stateful as schemathesis_stateful
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from tests.conftest import API_KEY, API_KEYS
from trialpath.core.contract import workflow_id_for
from trialpath.entry.api.app import create_app
from trialpath.operations.config import Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import CsTask

T = TypeVar("T")

MAX_EXAMPLES = int(os.environ.get("TRIALPATH_FUZZ_EXAMPLES", "30"))
REQUEST_TIMEOUT = 60.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
HYPOTHESIS = hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
# schemathesis' own strategies draw from `random` in places; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")


def _load_schema() -> Any:
    """The OpenAPI document of the real app (built without touching any database or server)."""
    app = create_app(Settings(), engine=sqlalchemy.create_engine("sqlite://"))
    return schemathesis.openapi.from_dict(app.openapi())


SCHEMA = _load_schema()
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


def _valid_signup() -> st.SearchStrategy[dict[str, Any]]:
    """Fields that pass the validation the schema cannot express (id charset, email, IANA zone,
    non-empty name), merged into schema-generated bodies so that trials really start."""
    return st.fixed_dictionaries(
        {
            "user_id": st.from_regex(r"fz-[a-z0-9]{1,12}", fullmatch=True),
            "email": st.sampled_from(["ada@example.com", "grace@example.org"]),
            "name": st.sampled_from(["Ada", "Grace Hopper"]),
            "timezone": st.sampled_from(["UTC", "Europe/Paris", "America/New_York"]),
        }
    )


def _strategy(operation: Any, known: list[str]) -> st.SearchStrategy[Case[Any]]:
    parameters = operation.path_parameters or operation.query or operation.body
    strategies = [operation.as_strategy(generation_mode=GenerationMode.POSITIVE)]
    if parameters:
        strategies.append(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    if "{user_id}" in operation.path:
        strategies += [
            operation.as_strategy(
                generation_mode=GenerationMode.POSITIVE, path_parameters={"user_id": user_id}
            )
            for user_id in known
        ]
    if "{key}" in operation.path:
        strategies.append(
            operation.as_strategy(
                generation_mode=GenerationMode.POSITIVE, path_parameters={"key": task_key(known)}
            )
        )
    if operation.method.upper() == "POST" and operation.path == "/v1/trials":

        def valid(pair: tuple[Case[Any], dict[str, Any]]) -> Case[Any]:
            case, fields = pair
            if isinstance(case.body, dict):
                case.body = {**case.body, **fields}
            return case

        positive = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
        strategies.append(st.tuples(positive, _valid_signup()).map(valid))
    return st.one_of(strategies)


def task_key(known: list[str]) -> str:
    """A support task of the first known trial (made before the requests)."""
    return f"{workflow_id_for(known[0])}:support_alert.1"


def _explicit(operation: Any, known: list[str]) -> list[Case[Any]]:
    """Edge cases run every time, before the generated ones (generation finds them only now
    and then): a JSON body that is not UTF-8."""
    if not operation.body:
        return []
    values = {"user_id": known[0], "key": task_key(known), "name": "Camille"}
    path = {name: value for name, value in values.items() if f"{{{name}}}" in operation.path}
    body = b'{"user_id": "fz-\xff", "name": "\xff"}'
    return [operation.Case(path_parameters=path, body=body, media_type="application/json")]


def _request(case: Case[Any]) -> dict[str, Any]:
    """httpx keyword arguments for a case (schemathesis serializes for `requests`)."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    headers = {str(k): str(v) for k, v in dict(kwargs.get("headers") or {}).items()}
    if case.meta is None or not case.meta.is_negative_at(ParameterLocation.HEADER):
        # The caller's key, unless the case is about broken headers (the key left out, or
        # mangled): then it is sent as generated, and must be refused.
        headers["Authorization"] = f"Bearer {API_KEY}"
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": headers,
        "params": kwargs.get("params") or None,
    }
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        request["content"] = data.encode() if isinstance(data, str) else data
    return request


async def _send(
    api: httpx.AsyncClient, env: WorkflowEnvironment, case: Case[Any]
) -> httpx.Response:
    response = await api.request(**_request(case))
    if case.method.upper() == "DELETE" and response.status_code == 202:
        # A cancelled trial is still running until it has handled the signal, and a DELETE
        # with erase=true next would terminate it mid-task, which leaves the time-skipping
        # server's clock locked. Wait for it to end (the clock skips meanwhile); a terminated
        # one is already over.
        user_id = str(case.path_parameters["user_id"])
        handle = env.client.get_workflow_handle(workflow_id_for(user_id))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(handle.result(), timeout=30)
    return response


def _on_loop(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a request on the test's event loop from Hypothesis' worker thread."""
    assert threading.current_thread() is not threading.main_thread()
    future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, loop)
    return future.result(timeout=REQUEST_TIMEOUT)


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
async def test_api_conforms_to_its_openapi(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings, operation: Any
) -> None:
    loop = asyncio.get_running_loop()
    statuses: set[int] = set()
    suffix = uuid.uuid4().hex[:8]
    known = [f"fz-known-{suffix}", f"fz-qualified-{suffix}"]
    for user_id, qualification in zip(
        known,
        [None, {"role": "business", "challenge": "team_coordination", "urgency": "evaluating"}],
        strict=True,
    ):
        body = {"user_id": user_id, "email": f"{user_id}@example.com", "name": "Known"}
        response = await api.post("/v1/trials", json={**body, "qualification": qualification})
        assert response.status_code == 201, response.text
    with Session(make_engine(settings.effective_database_url)) as session:
        session.add(
            CsTask(
                key=task_key(known),
                user_id=known[0],
                workflow_id=workflow_id_for(known[0]),
                reason="stalled",
                owner="Camille",
            )
        )
        session.commit()
    # Let them settle (first workflow task, journey loaded): terminating a trial while a
    # workflow task or activity is in flight leaves the time-skipping server's clock locked
    # for the rest of the test.
    await env.sleep(timedelta(minutes=1))

    def send(case: Case[Any]) -> httpx.Response:
        return _on_loop(loop, _send(api, env, case))

    @HYPOTHESIS
    @given(case=_strategy(operation, known))
    def fuzz(case: Case[Any]) -> None:
        response = send(case)
        statuses.add(response.status_code)
        checks = CHECKS
        if (
            operation.label == "GET /v1/trials"
            and response.status_code == 503
            and "is unimplemented" in response.text
        ):
            # The time-skipping test server has no visibility API (ListWorkflowExecutions):
            # there the declared 503 is the right answer; its status, type and body are still
            # checked.
            checks = [check for check in CHECKS if check is not not_a_server_error]
        case.validate_response(response, checks=checks)

    for case in _explicit(operation, known):
        fuzz = example(case=case)(fuzz)
    run: Callable[[], None] = fuzz
    await asyncio.to_thread(run)
    if operation.label == "POST /v1/trials":
        assert statuses & {200, 201}, f"no trial started; statuses seen: {sorted(statuses)}"


# --- Sequences ---------------------------------------------------------------------------------

UNSTATED_RULES = re.compile(
    r"is in the (future|past) \(|is not an IANA time zone|NUL character|lone surrogates"
    r"|hours\.end must be after hours\.start"
)
"""Rules the schema does not state: relative to the present, to the time zone database, to
another field (an agent's hours end after they start), or true of every string (no NUL, no
lone surrogate). A request the schema allows may still break them, and a 422 then names the
rule."""


def positive_data_acceptance_but_unstated_rules(
    ctx: Any, response: Response, case: Case[Any]
) -> bool | None:
    """schemathesis' `positive_data_acceptance` (a request the schema allows is not refused),
    except a 422 whose every error is one of `UNSTATED_RULES`."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except Exception:
        if response.status_code == 422:
            with contextlib.suppress(ValueError):
                body = response.json()
                errors = [str(e.get("message")) for e in body.get("errors") or []] or [
                    str(body.get("detail", ""))
                ]
                # A body that is one thing or a list (events) also fails the other branch.
                other_branch = [e for e in errors if e.startswith("Input should be a valid")]
                stated = [e for e in errors if UNSTATED_RULES.search(e)]
                if stated and len(stated) + len(other_branch) == len(errors):
                    return None
        raise


STATEFUL_EXAMPLES = int(os.environ.get("TRIALPATH_FUZZ_SEQUENCES", "40"))


@pytest.fixture
async def served(
    env: WorkflowEnvironment, settings: Settings, worker: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The app as `api` gives it (an in-process client), also listening on a loopback port for
    the requests schemathesis makes itself: `ignored_auth` sends each operation again without a
    key and with a wrong one, which must be refused."""
    settings.api_keys = list(API_KEYS)
    app = create_app(settings, client=env.client, clock=env.get_current_time)
    async with app.router.lifespan_context(app):
        # Listening before uvicorn starts: a request sent meanwhile waits in the backlog.
        listening = socket.create_server(("127.0.0.1", 0))
        port = listening.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
        serving = asyncio.create_task(server.serve(sockets=[listening]))
        try:
            # No default key: each request carries the one `_request` gives it, or none.
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as http:
                yield http, f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await serving
            listening.close()


@pytest.mark.takes(seconds=40)
async def test_api_conforms_along_the_links_of_its_openapi(
    served: tuple[httpx.AsyncClient, str], env: WorkflowEnvironment
) -> None:
    """Sequences of calls that follow the document's links (a trial started, then read,
    qualified, sent events, extended, cancelled, erased...), every response checked by
    schemathesis' checks (status codes, content types, headers, schemas, negative data
    rejected, positive data accepted, resources available after creation, none used after
    deletion). `GET /v1/trials` is left out: the
    time-skipping server has no visibility API (it answers the declared 503 there)."""
    api, live_url = served
    loop = asyncio.get_running_loop()
    schema = SCHEMA.exclude(path="/v1/trials", method="GET")
    failures: list[str] = []

    # Schemathesis starts sequences only from operations it expects to succeed with random
    # data; it takes `user_id` in the signup body for a reference to a "User" that no
    # operation creates, so it would never start a trial, and the links from a started trial
    # (everything else) would never be followed. Starting a trial is what creates one here.
    likely_root = schemathesis_stateful.is_likely_root_transition

    def root(operation: Any, node: Any, produced: set[str]) -> bool:
        if (operation.method, operation.path) == ("post", "/v1/trials"):
            return True
        return bool(likely_root(operation, node, produced))

    with mock.patch.object(schemathesis_stateful, "is_likely_root_transition", root):
        machine = schema.as_state_machine()

    erased: set[str] = set()
    signups = itertools.count()

    class Sequences(machine):  # type: ignore[misc,valid-type]
        def call(self, case: Case[Any], **kwargs: Any) -> Any:
            if (
                (case.method.upper(), case.path) == ("POST", "/v1/trials")
                and case.meta is not None
                and case.meta.generation.mode == GenerationMode.POSITIVE
                and isinstance(case.body, dict)
                and isinstance(case.body.get("user_id"), str)
            ):
                # A new user each time: Hypothesis runs a sequence again, and a trial started
                # by an earlier run would answer 200 instead of 201, another link to follow.
                case.body["user_id"] = f"{case.body['user_id'][:100]}-{next(signups)}"
            try:
                response = _on_loop(loop, _send(api, env, case))
            except Exception as err:
                failures.append(f"{case.method} {case.formatted_path}: {err!r}")
                raise
            if (
                case.method.upper() == "DELETE"
                and str((case.query or {}).get("erase")).lower() == "true"
                and response.status_code < 300
            ):
                erased.add(str(case.path_parameters["user_id"]))
            return Response.from_any(response)

        def validate_response(
            self, response: Any, case: Case[Any], additional_checks: Any = None, **kwargs: Any
        ) -> None:
            try:
                # Every check. The key is named as the one the caller gave (`ignored_auth` then
                # sends the request again without it and with a wrong one, to the live server).
                case.validate_response(
                    response,
                    excluded_checks=[positive_data_acceptance],
                    additional_checks=[
                        *(additional_checks or []),
                        ignored_auth,
                        positive_data_acceptance_but_unstated_rules,
                    ],
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    transport_kwargs={"base_url": live_url},
                    recorder=getattr(self, "recorder", None),
                )
            except FailureGroup as group:
                # `DELETE /v1/trials/{user_id}` without `erase=true` cancels the trial, which
                # stays readable (stage `cancelled`), as the document says: only what an
                # erasure removed must be gone (404).
                kept = [
                    failure
                    for failure in group.exceptions
                    if not isinstance(failure, UseAfterFree)
                    or (case.path_parameters or {}).get("user_id") in erased
                ]
                if not kept:
                    return
                # Kept as it happened: Hypothesis, replaying a sequence against an API whose
                # state has moved on, may report only that the replay differed.
                if len(kept) == len(group.exceptions):
                    failures.append(str(group))
                    raise
                failures.append("\n".join(f"{f.title}: {f.message}" for f in kept))
                raise FailureGroup(kept) from None

    settings = hypothesis_settings(
        HYPOTHESIS,
        max_examples=STATEFUL_EXAMPLES,
        stateful_step_count=8,
        phases=[Phase.generate],
    )
    try:
        await asyncio.to_thread(run_state_machine_as_test, Sequences, settings=settings)
    except FlakyStrategyDefinition:
        # Hypothesis ran a sequence again and it went another way: the API's state had moved
        # on (time skipped while a cancelled trial ended, say), so did what the links offered.
        # It stops there; what failed before is in `failures`, recorded as it happened.
        pass
    except Exception as err:  # a FailureGroup, naming each failed check with its curl
        failures.append(str(err))
    assert not failures, "\n".join(failures)

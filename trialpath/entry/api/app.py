"""The FastAPI application: `create_app()` wires settings, the Temporal client and the database.

uvicorn --factory trialpath.entry.api.app:create_app     (or `trialpath api`)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from temporalio.client import Client

from trialpath.delivery.deliveries import Deliveries
from trialpath.delivery.preferences import UnsubscribeTokens, signing_secret
from trialpath.entry.api import dashboard, delivery, guidance, problems
from trialpath.entry.api.agents import router as agents_router
from trialpath.entry.api.audit import AuditLog, router as audit_router
from trialpath.entry.api.kpis import router as kpis_router
from trialpath.entry.api.metrics import RequestMetrics, metrics_router
from trialpath.entry.api.routes import health, router
from trialpath.entry.api.security import BodyLimit, Idempotency
from trialpath.entry.api.taskpage import router as task_page_router
from trialpath.entry.api.tasks import router as tasks_router
from trialpath.entry.commands import TrialProblem, unstorable
from trialpath.entry.trials import Clock, Trials, wall_clock
from trialpath.operations.config import Settings, SettingsError, get_settings
from trialpath.operations.db import engine_for
from trialpath.operations.erasure import purge_expired
from trialpath.operations.logs import configure_from_settings
from trialpath.operations.temporal import connect

log = logging.getLogger("trialpath.api")
REDELIVERY_INTERVAL = 1.0


PURGE_INTERVAL = 3600.0


async def _purge(engine: Engine, settings: Settings) -> None:
    """Deletes what is kept only for a while (`trialpath.operations.erasure.purge_expired`),
    hourly."""
    while True:
        try:
            purged = await asyncio.to_thread(
                purge_expired,
                engine,
                settings.idempotency_retention_hours,
                settings.delivered_signal_retention_days,
            )
            if purged.idempotency_records or purged.pending_signals:
                log.info("purged %s", purged)
        except Exception:
            log.exception("purging expired records failed; will retry")
        await asyncio.sleep(PURGE_INTERVAL)


async def _redeliver(service: Trials) -> None:
    """Delivers accepted events whose signal failed (Temporal briefly unreachable)."""
    while True:
        await asyncio.sleep(REDELIVERY_INTERVAL)
        try:
            await service.deliver()
        except Exception:
            log.exception("redelivery of pending events failed; will retry")


async def storable_parameters(request: Request) -> None:
    """Query and path parameters with U+0000 or a lone surrogate are refused (422) before any
    route reads them: PostgreSQL refuses NUL in text, and a surrogate has no UTF-8 form. The
    bodies' text is checked by the request models."""
    found = [("query", name, value) for name, value in request.query_params.multi_items()]
    found += [("path", name, str(value)) for name, value in request.path_params.items()]
    errors = []
    for location, name, value in found:
        problem = unstorable(value)
        if problem is not None:
            errors.append({"loc": (location, name), "msg": problem, "type": "value_error"})
    if errors:
        raise RequestValidationError(errors)


def create_app(
    settings: Settings | None = None,
    client: Client | None = None,
    engine: Engine | None = None,
    clock: Clock = wall_clock,
) -> FastAPI:
    if settings is None:
        # Called by uvicorn as the factory: logs go through ours (JSON, redacted). An app
        # given its settings is embedded (tests) and leaves the caller's logging alone.
        try:
            settings = get_settings()
        except SettingsError as err:
            # One line naming the setting, not uvicorn's traceback of the factory.
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        configure_from_settings(settings)
    # Its requests write from several threads at once: on SQLite they take turns in the
    # process instead of sleeping on the database's lock.
    engine = engine or engine_for(settings, one_writer=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        temporal = client or await connect(settings)
        app.state.trials = Trials(temporal, engine, settings, clock)
        app.state.deliveries = Deliveries(engine, app.state.trials)
        tasks = [
            asyncio.create_task(_redeliver(app.state.trials)),
            asyncio.create_task(_purge(engine, settings)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="Trialpath",
        version="1.0.0",
        summary="Drive trial onboarding journeys: start trials, report what users do.",
        lifespan=lifespan,
        dependencies=[Depends(storable_parameters)],
    )
    app.state.settings = settings
    app.state.tokens = UnsubscribeTokens(signing_secret(settings))
    app.state.widget_tokens = guidance.widget_tokens(settings, signing_secret(settings))
    routers = (
        router,
        delivery.users,
        guidance.users,
        guidance.widget,
        guidance.script,
        delivery.public,
        health,
        dashboard.router,
        kpis_router,
        metrics_router,
        audit_router,
        tasks_router,
        task_page_router,
        agents_router,
    )
    for included in routers:
        app.include_router(included)
    app.add_exception_handler(RequestValidationError, problems.validation_problem)
    app.add_exception_handler(TrialProblem, problems.trial_problem)
    app.add_exception_handler(StarletteHTTPException, problems.http_problem)
    app.add_exception_handler(Exception, problems.unexpected_problem)
    # Innermost: records the writes the routes ran (a replayed answer was recorded once).
    app.add_middleware(AuditLog, engine=engine, secret=signing_secret(settings))
    app.add_middleware(Idempotency, engine=engine, keys=settings.api_keys)
    app.add_middleware(
        BodyLimit,
        limit=settings.api_max_body_bytes,
        limits={"/v1/webhooks/": settings.webhook_max_body_bytes},
    )
    app.add_middleware(RequestMetrics)
    # Outermost: a browser's preflight for the widget is answered before anything else.
    app.add_middleware(guidance.WidgetCors, origins=settings.widget_origins)
    app.openapi = _with_links(app.openapi)  # type: ignore[method-assign]
    # Each path's methods, for the `Allow` header of a 405 (trialpath/entry/api/problems.py).
    app.state.route_methods = [
        (route.path_regex, set(route.methods))
        for routes in (app.routes, *(r.routes for r in routers))
        for route in routes
        if isinstance(route, APIRoute | Route) and route.methods
    ]
    return app


# What a client can do next with the trial a start answered (OpenAPI links: the user id of the
# body is the path's `user_id`). Stateful fuzzing follows them (tests/test_api_fuzz.py).
_TRIAL_PATHS = ("/v1/trials/{user_id}", "/v1/users/{user_id}/")


def _with_links(openapi: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    def with_links() -> dict[str, Any]:
        schema = openapi()
        start = schema["paths"]["/v1/trials"]["post"]["responses"]
        if "links" in start.get("201", {}):
            return schema
        links: dict[str, Any] = {}
        for path, methods in schema["paths"].items():
            if not path.startswith(_TRIAL_PATHS):
                continue
            for operation in methods.values():
                parameters = {p["name"] for p in operation.get("parameters", [])}
                if parameters & {"message_id"}:
                    continue
                links[operation["operationId"]] = {
                    "operationId": operation["operationId"],
                    "parameters": {"path.user_id": "$response.body#/user_id"},
                }
        for status in ("200", "201"):
            start[status]["links"] = links
        return schema

    return with_links

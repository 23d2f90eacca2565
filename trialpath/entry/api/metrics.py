"""The API's Prometheus endpoint and request metrics (definitions in
`trialpath.operations.metrics`)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trialpath.entry.api.problems import Problem
from trialpath.entry.api.security import bearer, require, require_api_key
from trialpath.operations.config import Settings
from trialpath.operations.metrics import HTTP_LATENCY, HTTP_REQUESTS

UNMATCHED = "unmatched"
"""Route label of requests no route matched: one series, however many paths are probed."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
"""Method label of any other method string: clients choose it, so it must not make series."""


class AfterResponse:
    """ASGI middleware base: runs the app, then `answered` with the status it sent (500 if it
    raised first) and how long it took; the scope holds what routing and the route stored."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            await self.answered(scope, status, time.perf_counter() - started)

    async def answered(self, scope: Scope, status: int, seconds: float) -> None:
        raise NotImplementedError


class RequestMetrics(AfterResponse):
    """Counts API requests and times them, labelled with the route template
    (`/v1/trials/{user_id}`), never the raw path, so user ids do not become label values."""

    async def answered(self, scope: Scope, status: int, seconds: float) -> None:
        # The router stores the matched route in the scope it was handed.
        route = scope.get("route")
        template = getattr(route, "path", None) or UNMATCHED
        method = scope.get("method", "")
        method = method if method in METHODS else OTHER_METHOD
        HTTP_REQUESTS.labels(method, template, str(status)).inc()
        HTTP_LATENCY.labels(method, template).observe(seconds)


async def _metrics_access(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    settings: Settings = request.app.state.settings
    if not settings.metrics_public:
        require(await require_api_key(request, credentials), "metrics")


metrics_router = APIRouter(tags=["metrics"])
PROBLEM: dict[str, Any] = {"application/problem+json": {}}


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Requests by route and status, and process metrics, in the Prometheus text "
    "format. Needs an API key unless `TRIALPATH_METRICS_PUBLIC` is set.",
    dependencies=[Depends(_metrics_access)],
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {}}},
        401: {"model": Problem, "description": "No API key", "content": PROBLEM},
        403: {"model": Problem, "description": "Wrong API key", "content": PROBLEM},
    },
)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

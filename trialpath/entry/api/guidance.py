"""In-app guidance over HTTP: the onboarding checklist, the widget's user tokens, the routes the
widget calls from the browser, and the widget script itself.

The product's backend reads a checklist and mints widget tokens with its API key. The browser
never sees that key: the widget sends `Authorization: Bearer <widget token>` to `/v1/widget/*`,
which accept nothing else, and only those routes answer other origins (CORS, for the origins
in TRIALPATH_WIDGET_ORIGINS).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from trialpath.delivery.deliveries import InboxItem, InboxPage
from trialpath.entry.api.delivery import COMMON, DeliveriesDep, MessageId
from trialpath.entry.api.problems import Problem
from trialpath.entry.api.routes import UserId, _problems
from trialpath.entry.api.security import allow
from trialpath.entry.trials import Trials
from trialpath.messages.guidance import (
    BadWidgetToken,
    Checklist,
    WidgetToken,
    WidgetTokens,
    checklist,
    journey_in_force,
    known_trial,
)
from trialpath.operations.config import Settings

WIDGET_SCRIPT = FilePath(__file__).resolve().parents[2] / "static" / "widget.js"
WIDGET_PREFIX = "/v1/widget/"

users = APIRouter(prefix="/v1/users", tags=["guidance"])
widget = APIRouter(prefix="/v1/widget", tags=["widget"])
script = APIRouter(include_in_schema=False)

widget_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="WidgetToken",
    description="A user token from `POST /v1/users/{user_id}/widget-token` (never an API key).",
)


def _widget_problems(*codes: int) -> dict[int | str, dict[str, object]]:
    described = {
        401: "No widget token, or one that is forged or expired (ask the product for a new one)",
        404: "No such trial, or no such message in the user's inbox",
        422: "Invalid input; `errors` names each field",
        503: "The database is unreachable",
    }
    return {
        code: {
            "model": Problem,
            "description": described[code],
            "content": {"application/problem+json": {}},
        }
        for code in codes
    }


def _trials(request: Request) -> Trials:
    service: Trials = request.app.state.trials
    return service


def _tokens(request: Request) -> WidgetTokens:
    tokens: WidgetTokens = request.app.state.widget_tokens
    return tokens


async def widget_user(
    request: Request,
    response: Response,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(widget_bearer)],
) -> str:
    """The user a widget token is for; 401 without a valid, unexpired one. What it answers is
    one user's data, in their browser: never stored there (a shared computer)."""
    response.headers["Cache-Control"] = "no-store"
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            401,
            "send `Authorization: Bearer <widget token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return _tokens(request).read(credentials.credentials, await _trials(request).clock())
    except BadWidgetToken as err:
        raise HTTPException(
            401, str(err), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from err


WidgetUser = Annotated[str, Depends(widget_user)]


async def _checklist(request: Request, user_id: str) -> Checklist:
    settings: Settings = request.app.state.settings
    engine = _trials(request).engine
    defn = await asyncio.to_thread(journey_in_force, settings.journey_file)
    return await asyncio.to_thread(checklist, engine, defn, settings.product_app_url, user_id)


# --- for the product's backend (API key) -----------------------------------------------------


@users.get(
    "/{user_id}/checklist",
    dependencies=[Depends(allow("inbox"))],
    response_model=Checklist,
    summary="The user's onboarding checklist: the persona's activation steps, done or not",
    responses=_problems(*COMMON, 404),
)
async def user_checklist(user_id: UserId, request: Request) -> Checklist:
    return await _checklist(request, user_id)


def _known(request: Request, user_id: str) -> None:
    with Session(_trials(request).engine) as session:
        known_trial(session, user_id)


@users.post(
    "/{user_id}/widget-token",
    dependencies=[Depends(allow("inbox", "widget.token"))],
    response_model=WidgetToken,
    summary="A short-lived token for the in-app widget of this user (mint it server-side)",
    responses=_problems(*COMMON, 404),
)
async def widget_token(user_id: UserId, request: Request) -> WidgetToken:
    await asyncio.to_thread(_known, request, user_id)
    return _tokens(request).make(user_id, await _trials(request).clock())


# --- for the browser (widget token) ----------------------------------------------------------


@widget.get(
    "/checklist",
    response_model=Checklist,
    summary="The token's user's onboarding checklist",
    responses=_widget_problems(401, 404, 422, 503),
)
async def widget_checklist(user_id: WidgetUser, request: Request) -> Checklist:
    return await _checklist(request, user_id)


@widget.get(
    "/inbox",
    response_model=InboxPage,
    summary="The token's user's in-app messages, unread first, newest first",
    responses=_widget_problems(401, 422, 503),
)
async def widget_inbox(
    user_id: WidgetUser,
    service: DeliveriesDep,
    unread: Annotated[bool, Query(description="Only unread messages")] = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> InboxPage:
    return await service.inbox(user_id, unread, limit)


@widget.post(
    "/inbox/{message_id}/read",
    response_model=InboxItem,
    summary="Mark one of the token's user's in-app messages read",
    responses=_widget_problems(401, 404, 422, 503),
)
async def widget_read(
    user_id: WidgetUser, message_id: MessageId, service: DeliveriesDep
) -> InboxItem:
    return await service.mark_read(user_id, message_id)


@script.get("/widget.js")
async def widget_js() -> Response:
    """The embeddable widget: `<script src=".../widget.js" defer></script>` then
    `<trialpath-guide api="..." token="..." token-url="..."></trialpath-guide>`."""
    return Response(
        WIDGET_SCRIPT.read_bytes(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


def widget_tokens(settings: Settings, secret: str) -> WidgetTokens:
    return WidgetTokens(secret, timedelta(minutes=settings.widget_token_minutes))


class WidgetCors:
    """CORS for the widget's routes only, and only for the product's origins: the rest of the
    API (API keys) is never callable from a browser page of another origin. No cookies are
    involved (the token travels in the Authorization header), so credentials stay off."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(WIDGET_PREFIX):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)

"""The growth dashboard: one HTML page of KPIs and charts, served by the API.

    GET  /dashboard          the page (`since`, `until`: ISO dates filtering trials by sign-up)
    GET  /dashboard/login    a form asking for an API key
    POST /dashboard/login    checks the key, sets the session cookie, redirects to the page
    POST /dashboard/logout   forgets the session

The page accepts `Authorization: Bearer <api key>` like the rest of the API, or a session
cookie: a signed, 12-hour value naming a fingerprint of the key used (never the key), so
removing a key from TRIALPATH_API_KEYS also ends the sessions opened with it. Only keys whose
role reads KPIs (analyst, admin) get in. Without either, a browser is sent to the form and any
other client gets a 401 problem. A key is never taken from the URL (`?key=`): URLs end up in
browser history, proxy logs and Referer headers; the page then asks for it in the form.

The cookie is `Secure` whenever the request came over HTTPS: directly, or through a TLS proxy
whose `X-Forwarded-Proto` uvicorn trusts (`TRIALPATH_FORWARDED_ALLOW_IPS`), or when
`TRIALPATH_PUBLIC_URL` is an https URL.

Charts are drawn on the server (trialpath/growth/charts.py) and inlined as SVG: the page loads no
script, font or stylesheet from anywhere.

The routes and what they read from a request are here; the modules of this package hold the
rest: `sessions` (the session cookie), `period` (the date filter), `page` (what the page shows)
and `templates` (its HTML). The names other code imports from them are imported here.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine

from trialpath.delivery.preferences import signing_secret
from trialpath.entry.api.dashboard.page import (
    clock_note as clock_note,
    difference as difference,
    formatted as formatted,
    render_page,
)
from trialpath.entry.api.dashboard.period import Period
from trialpath.entry.api.dashboard.sessions import (
    COOKIE as COOKIE,
    SESSION_SECONDS,
    Sessions as Sessions,
    key_id as key_id,
)
from trialpath.entry.api.dashboard.templates import PAGES
from trialpath.entry.api.problems import problem
from trialpath.operations.access import ApiKey, Permission, find_key, may
from trialpath.operations.config import Settings

log = logging.getLogger("trialpath.dashboard")

PAGE = "/dashboard"
LOGIN = "/dashboard/login"
TASKS_PAGE = "/dashboard/tasks"

router = APIRouter(include_in_schema=False)


# --- Sessions ----------------------------------------------------------------------------------


def _sessions(request: Request) -> Sessions:
    # Made once per app: the secret may live in a file of the data folder.
    sessions: Sessions | None = getattr(request.app.state, "dashboard_sessions", None)
    if sessions is None:
        sessions = Sessions(signing_secret(_settings(request)))
        request.app.state.dashboard_sessions = sessions
    return sessions


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _signed_in(request: Request, key: ApiKey, target: str) -> RedirectResponse:
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        _sessions(request).make(key),
        max_age=SESSION_SECONDS,
        path=PAGE,
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )
    log.info("dashboard session opened with key %s", key.name)
    return response


def _https(request: Request) -> bool:
    """Over HTTPS, as the browser sees it (uvicorn applies a trusted proxy's headers)."""
    return request.url.scheme == "https" or _settings(request).public_url.startswith("https:")


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _safe_next(target: str | None) -> str:
    """Only back to the dashboard itself: the form must not redirect anywhere else."""
    if target and re.fullmatch(r"/dashboard(/tasks)?(\?[A-Za-z0-9=&%._-]*)?", target):
        return target
    return PAGE


# --- Routes ------------------------------------------------------------------------------------


@router.get(PAGE, response_class=HTMLResponse)
def dashboard(
    request: Request,
    since: str | None = None,
    until: str | None = None,
    key: str | None = None,
) -> Response:
    period = Period.parse(since, until)
    back = f"{PAGE}?{period.query()}" if period.query() else PAGE
    if key is not None:
        # Never signs in: the key is now in the browser's history and logs; say so.
        return _login_page(
            back,
            "A key in the address is not accepted (it ends up in browser history and logs): "
            "enter it here, and replace it if others may have seen it.",
            400,
        )

    found = authorize(request, "kpis", back)
    if isinstance(found, Response):
        return found
    engine: Engine = request.app.state.trials.engine
    page = render_page(engine, period, signed_in="authorization" not in request.headers)
    return html_page(page, 400 if period.error else 200)


def authorize(request: Request, permission: Permission, back: str) -> ApiKey | Response:
    """The key of the request (`Authorization: Bearer`, or the session cookie) if its role
    grants `permission`; else the answer to send: a 403 problem for a refused bearer key, the
    sign-in form for a browser, a 401 problem for other clients. A signed-in support key
    sent to the KPI page goes to the support queue instead."""
    settings = _settings(request)
    auth = request.headers.get("authorization", "")
    if auth:
        scheme, _, credentials = auth.partition(" ")
        found = find_key(credentials.strip(), settings.api_keys)
        if scheme.lower() != "bearer" or found is None:
            return problem(403, "Forbidden", "this API key is not accepted", request)
        if not may(found, permission):
            return problem(403, "Forbidden", _refused(found, permission), request)
        return found
    cookie = request.cookies.get(COOKIE)
    found = _sessions(request).key(cookie, settings.api_keys) if cookie else None
    if found is not None and may(found, permission):
        return found
    if found is not None and _wants_html(request):
        other = TASKS_PAGE if permission == "kpis" else PAGE
        if may(found, "tasks" if permission == "kpis" else "kpis"):
            return RedirectResponse(other, status_code=303)
    if _wants_html(request):
        response: Response = RedirectResponse(
            f"{LOGIN}?{urlencode({'next': back})}", status_code=303
        )
    else:
        response = problem(
            401,
            "Unauthorized",
            "send `Authorization: Bearer <api key>`, or sign in at /dashboard/login",
            request,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if cookie and found is None:
        response.delete_cookie(COOKIE, path=PAGE)
    return response


def _refused(key: ApiKey, permission: Permission = "kpis") -> str:
    if permission == "tasks":
        return f"the key {key.name} ({key.role}) may not work the support queue"
    return f"the key {key.name} ({key.role}) may not read KPIs (analyst or admin keys may)"


def _may_sign_in(key: ApiKey) -> bool:
    return may(key, "kpis") or may(key, "tasks")


@router.get(LOGIN, response_class=HTMLResponse)
def login_form(target: Annotated[str | None, Query(alias="next")] = None) -> HTMLResponse:
    return _login_page(_safe_next(target))


@router.post(LOGIN, response_class=HTMLResponse)
async def login(request: Request) -> Response:
    # A plain urlencoded form, read by hand: no multipart parser is needed for one field.
    form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    secret = (form.get("key") or [""])[0].strip()
    target = _safe_next((form.get("next") or [PAGE])[0])
    found = find_key(secret, _settings(request).api_keys) if secret else None
    if found is not None and _may_sign_in(found):
        # Where this key may go: support keys to the queue, analyst keys to the KPIs.
        if not may(found, "kpis") and not target.startswith(TASKS_PAGE):
            target = TASKS_PAGE
        elif not may(found, "tasks") and target.startswith(TASKS_PAGE):
            target = PAGE
        return _signed_in(request, found, target)
    if found is not None:
        refused = (
            f"the key {found.name} ({found.role}) may neither read KPIs nor work the support queue"
        )
        return _login_page(target, refused[0].upper() + refused[1:] + ".", 403)
    return _login_page(target, "This key is not accepted." if secret else "Enter an API key.", 403)


@router.post(f"{PAGE}/logout")
def logout() -> Response:
    response = RedirectResponse(LOGIN, status_code=303)
    response.delete_cookie(COOKIE, path=PAGE)
    return response


def _login_page(target: str, error: str = "", status: int = 200) -> HTMLResponse:
    return html_page(PAGES.get_template("login.html.j2").render(next=target, error=error), status)


def html_page(body: str, status: int = 200) -> HTMLResponse:
    """An HTML page of the dashboard or the tasks page: kept by no cache, sent with no referrer,
    and a content policy that loads nothing from elsewhere (inline styles, `data:` images,
    forms posted to itself)."""
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": (
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            ),
        },
    )

"""`GET /dashboard`: the growth dashboard, its sign-in, and its charts in a real browser.

Fast tests go through ASGI against the API app (its lifespan needs a Temporal client: the
session's time-skipping server; no worker runs, nothing is started on it). The population is
inserted straight into `trials` and `trial_events`, the tables the KPIs read. The last test
serves the same app with uvicorn in a thread and drives headless Chromium through it.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from markupsafe import escape
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from tests.conftest import API_KEY, API_KEYS
from tests.test_preview import CHROMIUM, CHROMIUM_ARGS, free_port, png_summary
from trialpath.delivery.preferences import signing_secret
from trialpath.entry.api.app import create_app
from trialpath.entry.api.dashboard import (
    COOKIE,
    Sessions,
    clock_note,
    difference,
    formatted,
    key_id,
)
from trialpath.growth import experiments, kpis
from trialpath.operations.access import parse_api_keys
from trialpath.operations.config import Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Trial, TrialEvent

CHARTS = ("funnel", "ttfv", "retention")
MILESTONES = {
    "technical": "integration_connected",
    "business": "workflow_created",
    "executive": "dashboard_configured",
}
SECOND_STEP = {
    "technical": "api_call",
    "business": "teammate_invited",
    "executive": "report_shared",
}
ARMS = (("personalized", 0.6), ("generic", 0.25), ("holdout", 0.15))


# --- A synthetic population --------------------------------------------------------------------


def populate(engine: Engine, trials: int, seed: int = 7, now: datetime | None = None) -> int:
    """`trials` trials signed up over the eight weeks before `now`, with personas, experiment
    arms, milestones, activation, conversions (and MRR), logins, survey answers and referrals;
    the personalized arm does better, as in seed 003. Returns how many rows were written."""
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    rows: list[Any] = []
    for i in range(trials):
        user = f"u{seed}-{i:04d}"
        persona = rng.choice(list(MILESTONES)) if rng.random() < 0.92 else None
        arm = rng.choices([a for a, _ in ARMS], [w for _, w in ARMS])[0]
        lift = {"personalized": 1.0, "generic": 0.55, "holdout": 0.4}[arm]
        signup = now - timedelta(days=rng.uniform(0.5, 56), hours=rng.uniform(0, 23))
        events: list[tuple[str, datetime, dict[str, Any]]] = []
        first_value = activated_at = converted_at = None
        if persona is not None and rng.random() < 0.8 * lift + 0.1:
            hours = rng.lognormvariate(2.5 if lift == 1 else 3.3, 0.7)
            first_value = signup + timedelta(hours=hours)
            events.append((MILESTONES[persona], first_value, {}))
            if rng.random() < 0.7 * lift + 0.1:
                activated_at = first_value + timedelta(hours=rng.uniform(1, 72))
                events.append((SECOND_STEP[persona], activated_at, {}))
                if rng.random() < 0.45:
                    converted_at = activated_at + timedelta(days=rng.uniform(1, 10))
        engaged = 0.25 + 0.5 * lift if first_value else 0.1
        last_day = 0
        while last_day < 35 and rng.random() < engaged + 0.2:
            last_day += rng.randint(1, 6)
        for day in range(0, last_day + 1, 2):
            events.append(("login", signup + timedelta(days=day, hours=rng.uniform(0, 8)), {}))
        if first_value and rng.random() < 0.5:
            ces = {"score": rng.randint(3, 7)}
            events.append(("survey_ces", first_value + timedelta(hours=1), ces))
        if converted_at and rng.random() < 0.6:
            events.append(("survey_csat", converted_at, {"score": rng.randint(3, 5)}))
        if converted_at and rng.random() < 0.3:
            events.append(("referral_sent", converted_at + timedelta(days=3), {}))
        events = [e for e in events if e[1] < now]
        activated = activated_at is not None and activated_at < now
        converted = converted_at if converted_at is not None and converted_at < now else None
        ends = signup + timedelta(days=14)
        expired = converted is None and ends < now
        rows.append(
            Trial(
                user_id=user,
                workflow_id=f"trial-{user}",
                persona=persona,
                stage="converted" if converted else "expired" if expired else "active",
                experiment_arm=arm,
                activated=activated,
                activated_at=activated_at if activated else None,
                signup_at=signup,
                trial_ends_at=ends,
                converted_at=converted,
                converted_plan="team" if converted else None,
                mrr=rng.choice([49.0, 99.0, 199.0]) if converted else None,
                ended_at=ends if expired else None,
            )
        )
        rows += [
            TrialEvent(
                id=f"{user}:{k}", user_id=user, name=name, occurred_at=at, properties=properties
            )
            for k, (name, at, properties) in enumerate(events)
        ]
    with Session(engine) as session:
        session.add_all(rows)
        session.commit()
    return len(rows)


# --- Fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
async def app(env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[FastAPI]:
    """The API app with its lifespan running; no worker, nothing started on Temporal."""
    settings.api_keys = API_KEYS
    application = create_app(settings, client=env.client, clock=env.get_current_time)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


def engine_of(app: FastAPI) -> Engine:
    engine: Engine = app.state.trials.engine
    return engine


HTML = {"Accept": "text/html,application/xhtml+xml"}
BEARER = {"Authorization": f"Bearer {API_KEY}"}


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {name: value or "" for name, value in attrs}))


def elements(page: str, testid: str) -> list[dict[str, str]]:
    parser = _Elements()
    parser.feed(page)
    return [attrs for _, attrs in parser.found if attrs.get("data-testid") == testid]


def figure_html(page: str, chart: str) -> str:
    start = page.index(f'data-chart="{chart}"')
    return page[start : page.index("</figure>", start)]


def cookie_of(response: httpx.Response) -> str:
    header = response.headers["set-cookie"]
    assert header.startswith(f"{COOKIE}="), header
    return header


# --- Signing in --------------------------------------------------------------------------------


async def test_without_credentials_browsers_go_to_the_form_and_clients_get_401(
    http: httpx.AsyncClient,
) -> None:
    browser = await http.get("/dashboard?since=2026-01-01", headers=HTML)
    assert browser.status_code == 303
    location = urlsplit(browser.headers["location"])
    assert location.path == "/dashboard/login"
    assert parse_qs(location.query) == {"next": ["/dashboard?since=2026-01-01"]}

    client = await http.get("/dashboard", headers={"Accept": "application/json"})
    assert client.status_code == 401
    assert client.headers["content-type"] == "application/problem+json"
    assert client.headers["www-authenticate"] == "Bearer"
    assert client.json()["title"] == "Unauthorized"

    form = await http.get(browser.headers["location"])
    assert form.status_code == 200
    assert elements(form.text, "login-form")
    assert elements(form.text, "login-key")[0]["type"] == "password"
    assert 'value="/dashboard?since=2026-01-01"' in form.text


async def test_the_form_sets_an_httponly_strict_session_cookie(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    response = await http.post(
        "/dashboard/login", data={"key": API_KEY, "next": "/dashboard?until=2026-02-01"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard?until=2026-02-01"
    header = cookie_of(response)
    attributes = {part.strip().lower() for part in header.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/dashboard", "max-age=43200"} <= attributes
    assert API_KEY not in header and key_id(API_KEY) not in header  # signed, not readable

    page = await http.get("/dashboard", headers=HTML)  # the client kept the cookie
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert elements(page.text, "logout")

    # Signing out forgets it.
    out = await http.post("/dashboard/logout")
    assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
    assert (await http.get("/dashboard", headers=HTML)).status_code == 303


async def test_a_key_in_the_url_never_signs_in(http: httpx.AsyncClient) -> None:
    # Even the right key: the URL is in the browser's history and the proxies' logs by now.
    response = await http.get(f"/dashboard?key={API_KEY}&since=2026-01-01", headers=HTML)
    assert response.status_code == 400
    assert "set-cookie" not in response.headers
    assert elements(response.text, "login-error")
    assert "A key in the address is not accepted" in response.text
    assert 'value="/dashboard?since=2026-01-01"' in response.text  # the form goes back there
    assert API_KEY not in response.text
    assert (await http.get("/dashboard?since=2026-01-01", headers=HTML)).status_code == 303


async def test_only_keys_that_read_kpis_get_in(app: FastAPI, http: httpx.AsyncClient) -> None:
    analyst, support = "analyst-key-0123456789abcdef", "support-key-0123456789abcdef"
    backend = "backend-key-0123456789abcdef"
    app.state.settings.api_keys = [
        *app.state.settings.api_keys,
        *parse_api_keys(
            [f"growth:analyst:{analyst}", f"desk:support:{support}", f"app:backend:{backend}"]
        ),
    ]
    ok = await http.get("/dashboard", headers={"Authorization": f"Bearer {analyst}"})
    assert ok.status_code == 200
    refused = await http.get("/dashboard", headers={"Authorization": f"Bearer {support}"})
    assert refused.status_code == 403
    assert "desk (support) may not read KPIs" in refused.json()["detail"]
    form = await http.post("/dashboard/login", data={"key": backend}, headers=HTML)
    assert form.status_code == 403 and "set-cookie" not in form.headers
    assert elements(form.text, "login-error") and "may neither read KPIs" in form.text
    signed_in = await http.post("/dashboard/login", data={"key": analyst})
    assert signed_in.status_code == 303 and cookie_of(signed_in)
    assert signed_in.headers["location"] == "/dashboard"
    # A support key signs in to the support queue, next to the dashboard.
    queue = await http.post("/dashboard/login", data={"key": support}, headers=HTML)
    assert queue.status_code == 303 and cookie_of(queue)
    assert queue.headers["location"] == "/dashboard/tasks"


async def test_the_cookie_is_secure_behind_a_tls_proxy(app: FastAPI) -> None:
    # As uvicorn passes a request from a trusted proxy that said X-Forwarded-Proto: https.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://trialpath.example") as c:
        response = await c.post("/dashboard/login", data={"key": API_KEY})
    assert "secure" in {p.strip().lower() for p in cookie_of(response).split(";")}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        plain = await c.post("/dashboard/login", data={"key": API_KEY})
    assert "secure" not in {p.strip().lower() for p in cookie_of(plain).split(";")}
    app.state.settings.public_url = "https://trialpath.example"  # served behind TLS
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        behind = await c.post("/dashboard/login", data={"key": API_KEY})
    assert "secure" in {p.strip().lower() for p in cookie_of(behind).split(";")}


@pytest.mark.parametrize(
    "attempt",
    [
        {"method": "POST", "url": "/dashboard/login", "data": {"key": "wrong"}},
        {"method": "POST", "url": "/dashboard/login", "data": {"key": ""}},
    ],
)
async def test_a_wrong_key_shows_the_form_again_with_403(
    http: httpx.AsyncClient, attempt: dict[str, Any]
) -> None:
    response = await http.request(**attempt, headers=HTML)
    assert response.status_code == 403
    assert "set-cookie" not in response.headers
    assert elements(response.text, "login-error")
    assert elements(response.text, "login-form")


async def test_bearer_keys_work_as_in_the_rest_of_the_api(http: httpx.AsyncClient) -> None:
    assert (await http.get("/dashboard", headers=BEARER)).status_code == 200
    wrong = await http.get("/dashboard", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert wrong.headers["content-type"] == "application/problem+json"


async def test_forged_expired_and_revoked_sessions_are_refused(
    app: FastAPI, http: httpx.AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = signing_secret(settings)
    keys = settings.api_keys
    sessions = Sessions(secret)
    good = sessions.make(keys[0])
    assert sessions.key(good, keys) == keys[0]
    assert sessions.key(good[:-2] + "xx", keys) is None
    assert Sessions("another installation").key(good, keys) is None
    assert sessions.key(good, keys[1:]) is None  # the key was removed from the settings
    real = time.time
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: real() - 12 * 3600 - 5)
    stale = sessions.make(keys[0])
    monkeypatch.undo()
    assert sessions.key(stale, keys) is None

    http.cookies.set(COOKIE, stale, path="/dashboard")
    response = await http.get("/dashboard", headers=HTML)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/dashboard/login")
    assert f'{COOKIE}=""' in response.headers["set-cookie"]  # the stale cookie is dropped


async def test_the_form_only_sends_back_to_the_dashboard(http: httpx.AsyncClient) -> None:
    for target in ("https://evil.example/", "//evil.example", "/v1/trials", "/dashboardx"):
        response = await http.post("/dashboard/login", data={"key": API_KEY, "next": target})
        assert response.headers["location"] == "/dashboard", target
        form = await http.get("/dashboard/login", params={"next": target})
        assert 'name="next" value="/dashboard"' in form.text


async def test_the_key_is_never_logged(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await http.get(f"/dashboard?key={API_KEY}", headers=HTML)
    await http.post("/dashboard/login", data={"key": API_KEY})
    await http.get("/dashboard", headers=BEARER)
    # (httpx, the test's own client, logs the URLs it requests: not the server's logs.)
    server_side = [r.getMessage() for r in caplog.records if r.name != "httpx"]
    assert any("dashboard session opened" in line for line in server_side)
    assert not [line for line in server_side if API_KEY in line]
    # uvicorn writes each request line whole to its access log: the query key is blanked.
    access = logging.getLogger("uvicorn.access")
    record = access.makeRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/dashboard?since=2026-01-01&key={API_KEY}", "1.1", 303),
        None,
    )
    for log_filter in access.filters:
        assert not isinstance(log_filter, logging.Filter) or log_filter.filter(record)
    assert API_KEY not in record.getMessage()
    assert "key=[redacted]" in record.getMessage()


# --- The page ----------------------------------------------------------------------------------


async def test_an_empty_database_says_no_data_yet(http: httpx.AsyncClient) -> None:
    response = await http.get("/dashboard", headers=BEARER)
    assert response.status_code == 200
    page = response.text
    figures = elements(page, "chart")
    assert [f["data-chart"] for f in figures] == list(CHARTS)
    for chart in CHARTS:
        html = figure_html(page, chart)
        assert "<svg" not in html
        assert "no data yet" in html
        assert "<figcaption>" in html
    note = elements(page, "no-experiment")
    assert note and "No experiment to report: no experiment in this period" in page
    assert "No trials yet." in page
    assert "Activation funnel: no data yet." in page
    assert "Traceback" not in page


async def test_a_population_fills_every_chart_and_card(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    engine = engine_of(app)
    populate(engine, 120)
    response = await http.get("/dashboard", headers=BEARER)
    assert response.status_code == 200
    page = response.text

    for chart in CHARTS:
        html = figure_html(page, chart)
        assert "<svg" in html, chart
        assert html.count("<path") > 10, chart
        assert 'role="img"' in html and "<figcaption>" in html
        assert "no data yet" not in html
    # Each chart's ids are its own: several SVGs on one page must not share clip paths.
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert "technical" in figure_html(page, "funnel") and "executive" in figure_html(page, "ttfv")

    headline = kpis.headline(engine, kpis.Filters())
    cards = elements(page, "headline-card")
    assert {c["data-kpi"] for c in cards} == set(headline)
    for card in cards:
        expected = headline[card["data-kpi"]]
        assert int(card["data-n"]) == expected.n
        if expected.value is None:
            assert card["data-value"] == ""
        else:
            assert float(card["data-value"]) == pytest.approx(expected.value)
        shown = formatted(expected.value, expected.unit)
        assert f'data-testid="headline-value">{shown}</div>' in page
    assert headline["trials"].n == 120

    report = experiments.experiment_report(engine, kpis.Filters())
    rows = elements(page, "experiment-row")
    assert len(rows) == len(report) > 0
    assert {r["data-arm"] for r in rows} == {"personalized", "holdout"}
    assert str(escape(report[0].verdict)) in page
    assert "no-experiment" not in page
    table = page[page.index('data-testid="persona-table"') :]
    assert all(f"<th>{persona}</th>" in table for persona in MILESTONES)
    # The CLTV's churn assumption is shown with the figure.
    assert "Customer lifetime value (assuming 3.0% monthly churn)" in table


async def test_on_an_accelerated_clock_durations_read_in_journey_time(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    """The demo's trials run at 4 s a journey day: a first value 0.8 journey days after
    signup is 3.2 real seconds, and must read as 19.2 h (not 0.0 h), and days as days."""
    engine = engine_of(app)
    signup = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    rows: list[Any] = []
    for i, (persona, day) in enumerate([("technical", 0.8), ("business", 1.2), ("business", 3.0)]):
        user = f"fast-{i}"
        reached = signup + timedelta(seconds=4 * day)
        rows.append(
            Trial(
                user_id=user,
                workflow_id=f"trial-{user}",
                persona=persona,
                stage="expired",
                activated=True,
                activated_at=reached,
                signup_at=signup,
                seconds_per_day=4.0,
                trial_ends_at=signup + timedelta(seconds=4 * 14),
            )
        )
        rows.append(
            TrialEvent(id=f"{user}:1", user_id=user, name=MILESTONES[persona], occurred_at=reached)
        )
        # Active again on journey day 8: retained, on the journey's calendar.
        rows.append(
            TrialEvent(
                id=f"{user}:2",
                user_id=user,
                name="login",
                occurred_at=signup + timedelta(seconds=32),
            )
        )
    with Session(engine) as session:
        session.add_all(rows)
        session.commit()

    headline = kpis.headline(engine, kpis.Filters())
    assert headline["ttfv_median"].value == pytest.approx(1.2 * 24)
    assert kpis.ttfv_hours(engine, kpis.Filters())["technical"] == [pytest.approx(19.2)]
    assert headline["retention_7d"].value == pytest.approx(100.0)
    assert headline["retention_7d"].n == 3

    page = (await http.get("/dashboard", headers=BEARER)).text
    card = next(c for c in elements(page, "headline-card") if c["data-kpi"] == "ttfv_median")
    assert float(card["data-value"]) == pytest.approx(28.8)
    assert 'data-testid="headline-value">28.8 h</div>' in page
    assert "0.0 h" not in page
    note = page[page.index('data-testid="clock-note"') :]
    assert "journey time" in note[:300] and "4 s of real time per journey day" in note[:300]
    table = page[page.index('data-testid="persona-table"') :]
    assert "2.8 days" in table  # business p90, between 1.2 and 3.0 days: shown in days


def test_durations_read_in_hours_then_days() -> None:
    assert formatted(19.25, "hours") == "19.2 h"
    assert formatted(47.9, "hours") == "47.9 h"
    assert formatted(72.0, "hours") == "3.0 days"
    assert difference(-60.0, "hours") == "−2.5 days"
    assert clock_note([86400.0]) is None


async def test_dates_filter_the_trials(app: FastAPI, http: httpx.AsyncClient) -> None:
    populate(engine_of(app), 60, now=datetime(2026, 3, 1, tzinfo=UTC))
    everything = await http.get("/dashboard", headers=BEARER)
    march = await http.get("/dashboard?since=2026-02-15&until=2026-02-28", headers=BEARER)
    assert march.status_code == 200
    assert "trials signed up from 2026-02-15 to 2026-02-28" in march.text
    assert 'value="2026-02-15"' in march.text

    def n_trials(page: str) -> int:
        card = next(c for c in elements(page, "headline-card") if c["data-kpi"] == "trials")
        return int(card["data-n"])

    assert 0 < n_trials(march.text) < n_trials(everything.text)
    nothing = await http.get("/dashboard?since=2030-01-01", headers=BEARER)
    assert nothing.text.count("no data yet for trials signed up since 2030-01-01.") == 3

    bad = await http.get("/dashboard?since=yesterday&until=", headers=BEARER)
    assert bad.status_code == 400
    assert "&#39;yesterday&#39; is not a date (YYYY-MM-DD)" in bad.text
    backwards = await http.get("/dashboard?since=2026-02-02&until=2026-02-01", headers=BEARER)
    assert backwards.status_code == 400 and "must be before until" in backwards.text


# --- In a real browser -------------------------------------------------------------------------


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium package to run this test"
        if os.environ.get("CI"):
            pytest.fail(reason)  # `make test` installs it: on CI this is a broken set-up
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
def served(env: WorkflowEnvironment, tmp_path: Path) -> Iterator[str]:
    """The API app served by uvicorn in a thread of this process, on its own SQLite file, with
    a few hundred synthetic rows; stopped (and joined) at the end."""
    settings = Settings(
        data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'dashboard.db'}"
    )
    settings.api_keys = API_KEYS[:1]
    engine = make_engine(settings.effective_database_url)
    assert populate(engine, 150) > 300
    application = create_app(settings, client=env.client, engine=engine)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="dashboard-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn never started"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    assert not thread.is_alive()


@pytest.mark.takes(seconds=8)
def test_in_a_real_browser(chromium: Path, served: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("TRIALPATH_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(f"{served}/dashboard")
            expect(page.get_by_test_id("login-form")).to_be_visible()

            page.get_by_test_id("login-key").fill("not the key")
            page.get_by_test_id("login-submit").click()
            expect(page.get_by_test_id("login-error")).to_have_text("This key is not accepted.")

            page.get_by_test_id("login-key").fill(API_KEY)
            page.get_by_test_id("login-submit").click()
            page.wait_for_url(f"{served}/dashboard")
            (cookie,) = context.cookies()
            assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
                COOKIE,
                True,
                "Strict",
            )
            assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it

            figures = page.get_by_test_id("chart")
            expect(figures).to_have_count(len(CHARTS))
            for figure in figures.all():
                svg = figure.locator("svg")
                expect(svg).to_have_count(1)
                box = svg.bounding_box()
                assert box and box["width"] > 300 and box["height"] > 150, box
                shapes = svg.evaluate("s => s.querySelectorAll('path, rect').length")
                assert shapes > 10, (figure.get_attribute("data-chart"), shapes)
                expect(figure.locator("figcaption")).not_to_be_empty()

            assert page.get_by_test_id("experiment-row").count() > 0
            expect(page.get_by_test_id("headline-card")).to_have_count(5)
            # Rates read any time, and adjusted by what users told at signup.
            rate = page.locator("[data-testid=experiment-row][data-kpi=activation_rate]").first
            expect(rate.get_by_test_id("always-valid")).to_contain_text(" to ")
            # What predicts paying: the ranked rules, the journey's own among them.
            expect(page.locator("#h-predicts")).to_be_visible()
            candidates = page.get_by_test_id("candidate")
            assert candidates.count() > 1, page.get_by_test_id("no-candidates").all_inner_texts()
            expect(candidates.first).to_be_visible()
            expect(page.locator("tr.configured")).to_contain_text("configured activation rule")

            shot = page.screenshot(full_page=True, path=str(shots / "dashboard.png"))
            width, height, colours = png_summary(shot, rows=2000)
            assert width == 1280 and height > 900, (width, height)
            assert colours > 50, f"the screenshot looks blank ({colours} colours)"

            # The date filter is a plain form: it keeps the session and narrows the trials.
            page.get_by_test_id("since").fill(
                (datetime.now(UTC) - timedelta(days=14)).date().isoformat()
            )
            page.get_by_role("button", name="Apply").click()
            page.wait_for_url(re.compile(r"since="))
            expect(page.get_by_test_id("scope")).to_contain_text("signed up since")
            page.screenshot(full_page=True, path=str(shots / "dashboard-filtered.png"))
        finally:
            browser.close()

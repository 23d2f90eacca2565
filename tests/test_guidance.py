"""In-app guidance: the onboarding checklist, the widget's user tokens and routes, CORS for the
product's origins only, and the widget in a real browser (Chromium) against the running API.

The API tests run a real trial (time-skipping server, worker, database) and report events
through the API, so the checklist counts what the journey counted. The browser test serves the
API and a host page on two loopback ports (two origins), the page embedding the widget as a
product would.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import ValidationError
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from tests.conftest import API_KEY, API_KEYS
from tests.test_api import assert_problem, rows, started
from tests.test_dashboard import chromium  # noqa: F401  (fixture: skips without Chromium)
from tests.test_preview import CHROMIUM_ARGS, png_summary
from trialpath.delivery.inbox import inbox_id
from trialpath.delivery.preferences import UnsubscribeTokens, signing_secret
from trialpath.entry.api.app import create_app
from trialpath.messages.guidance import WidgetTokens, fallback_label
from trialpath.operations.access import parse_api_keys
from trialpath.operations.config import Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message, Trial, TrialEvent
from trialpath.operations.ports import free_port

PRODUCT = "http://product.test"


async def checklist(api: httpx.AsyncClient, user_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/users/{user_id}/checklist")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def events(api: httpx.AsyncClient, user_id: str, *batch: dict[str, Any]) -> None:
    response = await api.post(f"/v1/trials/{user_id}/events", json=list(batch))
    assert response.status_code == 202, response.text


def by_event(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["event"]: step for step in body["steps"]}


# --- the checklist -----------------------------------------------------------------------------


async def test_the_checklist_shows_the_persona_rule_and_what_the_trial_counted(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    await started(api, env, "cl-1")  # technical: 1 integration_connected and 10 api_call
    first = await checklist(api, "cl-1")
    assert (first["persona"], first["activated"], first["progress"]) == ("technical", False, 0)
    steps = by_event(first)
    assert list(steps) == ["integration_connected", "api_call"]
    assert steps["integration_connected"]["label"] == "Connect an integration"
    assert steps["integration_connected"]["link"] == (
        f"{settings.product_app_url}/integrations?utm_source=trialpath&utm_medium=checklist"
        "&utm_campaign=integration_connected"
    )
    assert steps["api_call"]["required"] == 10
    assert not any(step["done"] or step["done_count"] for step in first["steps"])

    signup = rows(settings, Trial, "cl-1")[0].signup_at
    await events(
        api,
        "cl-1",
        {"name": "integration_connected"},
        *({"name": "api_call"} for _ in range(4)),
        # Before the trial: recorded, never counted (the journey says so once it has seen it).
        {"name": "api_call", "occurred_at": (signup - timedelta(days=3)).isoformat()},
        {"name": "login"},  # not a step
    )
    await env.sleep(timedelta(minutes=1))
    middle = await checklist(api, "cl-1")
    steps = by_event(middle)
    assert steps["integration_connected"] | {"link": ""} == {
        "event": "integration_connected",
        "label": "Connect an integration",
        "required": 1,
        "done_count": 1,
        "done": True,
        "link": "",
    }
    assert (steps["api_call"]["done_count"], steps["api_call"]["done"]) == (4, False)
    assert middle["progress"] == 45  # 5 of the 11 events the rule needs
    assert not middle["activated"]

    await events(api, "cl-1", *({"name": "api_call"} for _ in range(7)))
    await env.sleep(timedelta(minutes=1))
    last = await checklist(api, "cl-1")
    assert last["activated"] and last["progress"] == 100
    assert all(step["done"] for step in last["steps"])
    assert by_event(last)["api_call"]["done_count"] == 11


async def test_checklist_errors(api: httpx.AsyncClient, settings: Settings) -> None:
    assert_problem(await api.get("/v1/users/nobody/checklist"), 404, "nobody")
    assert_problem(await api.get("/v1/users/bad%20id/checklist"), 422)
    assert_problem(await api.get("/v1/users/x/checklist", headers={"Authorization": ""}), 401)
    analyst = "analyst-key-0123456789abcdefgh"
    settings.api_keys = [*API_KEYS, *parse_api_keys([f"growth:analyst:{analyst}"])]
    refused = await api.get("/v1/users/x/checklist", headers={"Authorization": f"Bearer {analyst}"})
    assert_problem(refused, 403, "may not read or change in-app inboxes")


def test_a_step_without_a_label_is_named_after_its_event() -> None:
    assert fallback_label("dashboard_configured") == "Dashboard configured"
    assert fallback_label("report.shared-twice") == "Report shared twice"


# --- widget tokens and routes ------------------------------------------------------------------


async def test_the_widget_reads_and_marks_read_with_a_user_token_only(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    await started(api, env, "wg-1")
    await started(api, env, "wg-2")
    minted = await api.post("/v1/users/wg-1/widget-token")
    assert minted.status_code == 200, minted.text
    body = minted.json()
    now = await env.get_current_time()
    expires = datetime.fromisoformat(body["expires_at"])
    assert body["user_id"] == "wg-1"
    assert timedelta(minutes=14) < expires - now <= timedelta(minutes=15)
    user = {"Authorization": f"Bearer {body['token']}"}

    widget_list = await api.get("/v1/widget/checklist", headers=user)
    assert widget_list.status_code == 200, widget_list.text
    assert widget_list.headers["cache-control"] == "no-store"
    assert widget_list.json() == await checklist(api, "wg-1")

    inbox = (await api.get("/v1/widget/inbox", headers=user)).json()
    assert inbox == (await api.get("/v1/users/wg-1/inbox")).json()
    card = next(i for i in inbox["items"] if i["message"] == "welcome")
    assert card["cta_label"] and card["cta_url"] and card["unread"]
    read = await api.post(f"/v1/widget/inbox/{card['id']}/read", headers=user)
    assert read.status_code == 200, read.text
    assert read.json()["read_at"] and not read.json()["unread"]
    assert [e.name for e in rows(settings, TrialEvent, "wg-1")].count("message_read") == 1

    # Scoped to its user: another user's message is not in this inbox.
    theirs = (await api.get("/v1/users/wg-2/inbox")).json()["items"][0]["id"]
    assert_problem(await api.post(f"/v1/widget/inbox/{theirs}/read", headers=user), 404)
    assert all(m.read_at is None for m in rows(settings, Message, "wg-2"))
    assert_problem(await api.get("/v1/widget/inbox?limit=0", headers=user), 422, "limit")


async def test_widget_routes_refuse_anything_but_a_valid_user_token(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    await started(api, env, "wg-3")
    secret = signing_secret(settings)
    now = await env.get_current_time()
    expired = WidgetTokens(secret, timedelta(minutes=15)).make("wg-3", now - timedelta(hours=1))
    forged = WidgetTokens("another installation", timedelta(minutes=15)).make("wg-3", now)
    refused = {
        "no token": ({"Authorization": ""}, "Bearer <widget token>"),
        "an API key": ({"Authorization": f"Bearer {API_KEY}"}, "not valid"),
        "expired": ({"Authorization": f"Bearer {expired.token}"}, "expired"),
        "forged": ({"Authorization": f"Bearer {forged.token}"}, "not valid"),
        "an unsubscribe link's": (
            {"Authorization": f"Bearer {UnsubscribeTokens(secret).make('wg-3', 'email')}"},
            "not valid",
        ),
    }
    for name, (headers, needle) in refused.items():
        for method, path in (("GET", "/v1/widget/checklist"), ("GET", "/v1/widget/inbox")):
            response = await api.request(method, path, headers=headers)
            assert response.status_code == 401, (name, path, response.text)
            assert_problem(response, 401, needle)
            assert response.headers["www-authenticate"].startswith("Bearer")
    # A widget token is no API key either.
    good = (await api.post("/v1/users/wg-3/widget-token")).json()["token"]
    other = await api.get("/v1/users/wg-3/inbox", headers={"Authorization": f"Bearer {good}"})
    assert_problem(other, 403)
    assert_problem(await api.post("/v1/users/nobody/widget-token"), 404, "nobody")
    assert_problem(
        await api.post("/v1/users/wg-3/widget-token", headers={"Authorization": ""}), 401
    )


def test_widget_origins_are_origins() -> None:
    settings = Settings(widget_origins="https://app.example.com, http://127.0.0.1:3000/")
    assert settings.widget_origins == ["https://app.example.com", "http://127.0.0.1:3000"]
    for bad in ("app.example.com", "https://app.example.com/path", "ftp://x.example"):
        with pytest.raises(ValidationError, match="is not an origin"):
            Settings(widget_origins=bad)


async def test_only_the_widget_routes_answer_the_product_origins(
    env: WorkflowEnvironment, settings: Settings
) -> None:
    settings.api_keys = list(API_KEYS)
    settings.widget_origins = [PRODUCT]
    app = create_app(settings, client=env.client, clock=env.get_current_time)
    preflight = {"Access-Control-Request-Method": "GET"}
    preflight["Access-Control-Request-Headers"] = "authorization"
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http,
    ):
        allowed = await http.options("/v1/widget/inbox", headers={"Origin": PRODUCT, **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == PRODUCT
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in allowed.headers

        other = await http.options(
            "/v1/widget/inbox", headers={"Origin": "https://evil.test", **preflight}
        )
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
        # The API-key routes are never opened to browsers of other origins.
        api_route = await http.options(
            "/v1/users/u/inbox", headers={"Origin": PRODUCT, **preflight}
        )
        assert "access-control-allow-origin" not in api_route.headers
        # A refusal is readable by the product's page (so the widget can renew its token).
        refused = await http.get("/v1/widget/inbox", headers={"Origin": PRODUCT})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == PRODUCT

        script = await http.get("/widget.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert 'customElements.define("trialpath-guide"' in script.text


# --- in a real browser -------------------------------------------------------------------------


def _seed(settings: Settings, user_id: str) -> list[str]:
    """A technical trial with two unread in-app cards and some product events, written as the
    worker would (no workflow runs: reads are recorded on the messages); the cards' ids, newest
    first."""
    engine = make_engine(settings.effective_database_url)
    now = datetime.now(UTC)
    signup = now - timedelta(days=2)
    workflow_id = f"trial-{user_id}"
    cards = [
        ("drip_connect_integration", "Connect the tool you already use", "Browse integrations"),
        ("welcome", "Your API key is ready", "Open the quickstart"),
    ]
    with Session(engine) as session:
        session.add(
            Trial(
                user_id=user_id,
                workflow_id=workflow_id,
                persona="technical",
                stage="onboarding",
                signup_at=signup,
            )
        )
        for n, (message, title, label) in enumerate(cards):
            key = f"{workflow_id}:{message}/in_app"
            session.add(
                Message(
                    key=key,
                    workflow_id=workflow_id,
                    user_id=user_id,
                    step=f"{message}/in_app",
                    message=message,
                    channel="in_app",
                    category="marketing",
                    recipient=user_id,
                    subject=title,
                    # Markup in a message is shown as text, never run.
                    text=f"The text of {message}. {INJECTED}",
                    template=f"in_app/{message}.technical.en.txt.j2",
                    content_hash="0" * 64,
                    status="sent",
                    provider="inbox",
                    provider_message_id=inbox_id(key),
                    sent_at=now - timedelta(hours=n + 1),
                    cta_label=label,
                    cta_url=f"{settings.product_app_url}/{message}?utm_source=trialpath",
                )
            )
        for n, name in enumerate(["integration_connected", "api_call", "api_call", "api_call"]):
            session.add(
                TrialEvent(
                    id=f"{user_id}:e{n}",
                    user_id=user_id,
                    name=name,
                    occurred_at=signup + timedelta(hours=n + 1),
                )
            )
        session.commit()
    return [inbox_id(f"{workflow_id}:{message}/in_app") for message, _, _ in cards]


class _Host(BaseHTTPRequestHandler):
    """The product's web app: a page embedding the widget, `POST /token` (its backend mints a
    widget token with its API key, server-side), and any other path (where buttons lead)."""

    api = ""
    token = ""

    def do_GET(self) -> None:
        if self.path == "/":
            page = (
                "<!doctype html><html lang=en><head><meta charset=utf-8><title>Product</title>"
                f'<script src="{self.api}/widget.js" defer></script></head><body>'
                f'<trialpath-guide api="{self.api}" token="{self.token}" token-url="/token">'
                "</trialpath-guide></body></html>"
            )
        else:
            page = f"<!doctype html><title>Product page</title><h1>{self.path}</h1>"
        self._answer(200, "text/html", page.encode())

    def do_POST(self) -> None:
        assert self.path == "/token"
        minted = httpx.post(
            f"{self.api}/v1/users/browser-1/widget-token",
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        self._answer(minted.status_code, "application/json", minted.content)

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def two_origins(env: WorkflowEnvironment, settings: Settings) -> Iterator[tuple[str, str]]:
    """The API (uvicorn) and the product's host page, each on its own loopback port, both in
    threads of this process; stopped and joined at the end."""
    host = ThreadingHTTPServer(("127.0.0.1", free_port()), _Host)
    host_url = f"http://127.0.0.1:{host.server_address[1]}"
    settings.api_keys = list(API_KEYS[:1])
    settings.widget_origins = [host_url]
    settings.product_app_url = host_url  # the cards' buttons lead to the product's pages
    # The app connects its own client, on uvicorn's event loop (not the test's).
    settings.temporal_address = env.client.service_client.config.target_host
    engine = make_engine(settings.effective_database_url)
    application = create_app(settings, engine=engine)
    api_port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=api_port, log_level="warning")
    )
    api_thread = threading.Thread(target=server.run, name="widget-api", daemon=True)
    api_thread.start()
    host_thread = threading.Thread(target=host.serve_forever, name="widget-host", daemon=True)
    host_thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert api_thread.is_alive(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn never started"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{api_port}", host_url
    finally:
        host.shutdown()
        host.server_close()
        server.should_exit = True
        api_thread.join(timeout=15)
        host_thread.join(timeout=15)
    assert not api_thread.is_alive() and not host_thread.is_alive()


@pytest.mark.takes(seconds=10)
def test_the_widget_in_a_real_browser(
    chromium: Path,  # noqa: F811
    two_origins: tuple[str, str],
    settings: Settings,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("TRIALPATH_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    api, host = two_origins
    newest, older = _seed(settings, "browser-1")
    minted = httpx.post(
        f"{api}/v1/users/browser-1/widget-token", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert minted.status_code == 200, minted.text
    _Host.api, _Host.token = api, minted.json()["token"]
    engine = make_engine(settings.effective_database_url)

    def read_at(message_id: str) -> datetime | None:
        with Session(engine) as session:
            row = session.exec(
                select(Message).where(Message.provider_message_id == message_id)
            ).one()
            return row.read_at

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            failed: list[str] = []
            page.on("pageerror", lambda error: failed.append(str(error)))
            page.goto(host + "/")
            guide = page.locator("trialpath-guide")

            # The checklist: technical persona, the integration done, 3 of 10 API calls.
            steps = guide.get_by_test_id("step")
            expect(steps).to_have_count(2)
            expect(steps.nth(0)).to_have_attribute("data-done", "true")
            expect(steps.nth(0)).to_contain_text("Connect an integration")
            expect(steps.nth(1)).to_have_attribute("data-done", "false")
            expect(steps.nth(1)).to_contain_text("3/10")
            expect(guide.get_by_test_id("progress")).to_have_attribute("value", "36")
            expect(guide.get_by_test_id("progress-text")).to_have_text("1 of 2 steps done")
            link = guide.get_by_role("link", name="Connect an integration")
            expect(link).to_have_attribute(
                "href", f"{host}/integrations?{UTM}integration_connected"
            )

            # The inbox: both cards unread, newest first, each with its button.
            cards = guide.get_by_test_id("card")
            expect(cards).to_have_count(2)
            expect(guide.get_by_test_id("inbox-title")).to_have_text("Messages (2 unread)")
            expect(cards.nth(0)).to_have_attribute("data-id", newest)
            expect(cards.nth(0).get_by_role("link", name="Browse integrations")).to_be_visible()
            expect(cards.nth(1).get_by_role("link", name="Open the quickstart")).to_be_visible()
            expect(cards.nth(1)).to_contain_text(f"The text of welcome. {INJECTED}")
            expect(guide.locator("img")).to_have_count(0)
            assert page.title() == "Product"
            shot = guide.screenshot(path=str(shots / "widget.png"))
            width, height, colours = png_summary(shot, rows=2000)
            assert width > 300 and height > 200 and colours > 20, (width, height, colours)

            # "Mark as read": the API records it, the card shows it.
            with page.expect_response(
                lambda r: r.url.endswith(f"/{older}/read") and r.request.method == "POST"
            ) as answer:
                cards.nth(1).get_by_role("button", name="Mark as read").click()
            assert answer.value.status == 200
            expect(guide.get_by_test_id("inbox-title")).to_have_text("Messages (1 unread)")
            expect(guide.get_by_test_id("status")).to_contain_text("marked as read")
            assert read_at(older) is not None and read_at(newest) is None
            read_card = guide.locator(f'[data-id="{older}"]')
            expect(read_card).to_have_attribute("data-unread", "false")
            expect(read_card.get_by_role("button", name="Mark as read")).to_have_count(0)

            # An expired token is renewed from the product's token-url, then the button marks
            # its card read and leads into the product.
            guide.evaluate("element => { element.token = 'expired-or-forged'; }")
            with (
                page.expect_response(lambda r: r.url == f"{host}/token") as renewed,
                page.expect_navigation(url=re.compile(re.escape(f"{host}/drip_connect_"))),
            ):
                guide.get_by_role("link", name="Browse integrations").click()
            assert renewed.value.status == 200
            assert read_at(newest) is not None
            assert failed == [], failed
        finally:
            browser.close()


UTM = "utm_source=trialpath&utm_medium=checklist&utm_campaign="
INJECTED = "<img src=x onerror=\"document.title='injected'\">"

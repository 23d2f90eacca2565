"""`trialpath templates preview`: the page marketers use to see every message.

Fast tests go through ASGI; the last one drives the real server in headless Chromium: the
persona selector, the width toggle, a screenshot, and the live reload after an edit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from markupsafe import escape

from tests.test_templates import journey_messages
from trialpath.core.definition import PERSONAS
from trialpath.delivery.twilio import sms_segments
from trialpath.messages.preview import Preview, create_app, serve_preview, template_changes
from trialpath.messages.samples import SAMPLE_USERS, sample_context
from trialpath.messages.templating import Product, Rendered, Renderer
from trialpath.operations.config import PROJECT_ROOT, Settings
from trialpath.operations.ports import free_port
from trialpath.operations.services import ServiceError

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def expected_sends(persona: str) -> set[tuple[str, str]]:
    return {(message, channel) for message, channel, who in journey_messages() if who == persona}


class _Tagged(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if "data-testid" in values:
            self.found.append((values["data-testid"], values))


def tagged(page: str, testid: str) -> list[dict[str, str]]:
    parser = _Tagged()
    parser.feed(page)
    return [attrs for name, attrs in parser.found if name == testid]


def card_html(page: str, message: str, channel: str) -> str:
    """The markup of one card, from its opening tag to the next card's."""
    start = page.index(f'id="card-{message}-{channel}"')
    end = page.find('data-testid="card"', start)
    return page[start : end if end != -1 else len(page)]


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    return Path(shutil.copytree(PROJECT_ROOT / "templates", tmp_path / "templates"))


@dataclass
class Site:
    """The preview app over ASGI, and its own renderer to compare pages with."""

    app: FastAPI

    async def get(self, path: str, **params: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://preview") as client:
            return await client.get(path, params=params)

    def render(self, channel: str, message: str, persona: str, locale: str = "en") -> Rendered:
        preview: Preview = self.app.state.preview
        context = sample_context(preview.product, channel, message, persona, locale, "ada")
        return Renderer(preview.templates_dir).render(channel, message, persona, locale, context)


@pytest.fixture
def site(templates: Path, tmp_path: Path) -> Site:
    return Site(create_app(Settings(templates_dir=templates, data_dir=tmp_path / "data")))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")
    # Coarse file-system clocks would give the edit the same modification time as the original.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


# --- Through ASGI ------------------------------------------------------------------------------


@pytest.mark.parametrize("persona", PERSONAS)
async def test_gallery_shows_every_message_the_journey_sends(site: Site, persona: str) -> None:
    page = await site.get("/", persona=persona)
    assert page.status_code == 200
    cards = tagged(page.text, "card")
    shown = [(card["data-message"], card["data-channel"]) for card in cards]
    assert len(shown) == len(set(shown)), "a message is shown twice"
    assert set(shown) == expected_sends(persona)
    assert [c for c in cards if c["data-error"] == "yes"] == []
    # Grouped by message: one group per message, its channels inside.
    groups = [g["data-message"] for g in tagged(page.text, "message-group")]
    assert sorted(groups) == sorted({message for message, _ in shown})


@pytest.mark.parametrize("locale", ["en", "fr"])
@pytest.mark.parametrize("sample", list(SAMPLE_USERS))
async def test_every_sample_renders_without_errors(site: Site, sample: str, locale: str) -> None:
    for persona in PERSONAS:
        page = await site.get("/", persona=persona, locale=locale, sample=sample)
        errors = [c["data-message"] for c in tagged(page.text, "card") if c["data-error"] == "yes"]
        assert errors == [], f"{persona}/{locale}/{sample}"


async def test_persona_selects_its_copy(site: Site) -> None:
    page = (await site.get("/", persona="executive")).text
    executive = site.render("email", "welcome", "executive")
    business = site.render("email", "welcome", "business")
    assert executive.subject != business.subject
    card = card_html(page, "welcome", "email")
    assert f'data-template="{executive.template}"' in card
    assert f'<div class="subject" data-testid="subject">{escape(executive.subject)}</div>' in card
    assert str(escape(executive.preheader)) in card
    assert f'srcdoc="{escape(executive.html)}"' in card
    assert str(escape(executive.text)) in card  # the plain-text version
    assert str(escape(business.subject)) not in page
    selected = re.search(r'<option value="(\w+)" selected>', page)
    assert selected and selected.group(1) == "executive"


async def test_each_channel_is_shown_as_received(site: Site) -> None:
    page = (await site.get("/", persona="technical", width="mobile")).text
    email = card_html(page, "welcome", "email")
    assert 'width="375"' in email and "Acme" in email  # the sender, as in an inbox
    sms = site.render("sms", "trial_ending_0", "technical")
    encoding, count = sms_segments(sms.text)
    sms_card = card_html(page, "trial_ending_0", "sms")
    assert str(escape(sms.text)) in sms_card
    assert f"{count} segments, {encoding}" in sms_card
    # Ada has no phone number: the card says the SMS is not sent to her.
    assert "Ada has no phone number: no SMS is sent." in sms_card
    assert "the Email version goes instead" in card_html(page, "call_reminder_hour", "sms")
    in_app = site.render("in_app", "welcome", "technical")
    in_app_card = card_html(page, "welcome", "in_app")
    assert str(escape(in_app.title)) in in_app_card
    assert str(escape(in_app.cta_label)) in in_app_card
    assert f'href="{escape(in_app.cta_url)}"' in in_app_card
    desktop = (await site.get("/", persona="technical")).text
    assert 'width="600"' in card_html(desktop, "welcome", "email")


async def test_fallback_badge_names_the_missing_file(site: Site, templates: Path) -> None:
    page = (await site.get("/", persona="executive")).text
    shared = card_html(page, "call_booked", "email")  # one file for every persona
    assert 'data-template="email/call_booked.default.en.html.j2"' in shared
    assert 'data-fallback="yes"' in shared
    assert "fallback · no executive file, default copy" in shared
    assert 'data-fallback="no"' in card_html(page, "welcome", "email")

    (templates / "email" / "welcome.executive.fr.html.j2").unlink()
    french = (await site.get("/", persona="executive", locale="fr")).text
    card = card_html(french, "welcome", "email")
    assert 'data-template="email/welcome.executive.en.html.j2"' in card
    assert 'data-kind="locale">fallback · no fr file, en copy' in card


async def test_a_broken_template_shows_its_error_on_its_card(site: Site, templates: Path) -> None:
    edit(templates / "email" / "welcome.business.en.html.j2", "<p>Hi {{ user.first_name }},</p>",
         "<p>Hi {{ user.nickname }},</p>")  # fmt: skip
    (templates / "in_app" / "welcome.business.en.txt.j2").write_text(
        "---\ntitle: Hi\ncategory: marketing\n---\n\n{% if %}oops{% endif %}\n"
    )
    (templates / "in_app" / "activated.default.en.txt.j2").write_text(
        "---\ntitle: Hi\ncategory: [marketing\n---\nbody\n"
    )
    edit(templates / "email" / "stall_nudge.business.en.html.j2",
         'subject: "{{ user.first_name }}', 'subject: "{{ user.nickname }}')  # fmt: skip
    response = await site.get("/", persona="business")
    assert response.status_code == 200
    page = response.text
    errors = {
        (c["data-message"], c["data-channel"])
        for c in tagged(page, "card")
        if c["data-error"] == "yes"
    }
    assert errors == {
        ("welcome", "email"),
        ("welcome", "in_app"),
        ("activated", "in_app"),
        ("stall_nudge", "email"),
    }
    line = next(
        i
        for i, text in enumerate((templates / "email/welcome.business.en.html.j2").open(), 1)
        if "nickname" in text
    )
    box = re.compile(r'<div class="error" data-testid="render-error">([^<]*)</div>')
    email_error = box.findall(card_html(page, "welcome", "email"))
    assert email_error and email_error[0].startswith(f"email/welcome.business.en.html.j2:{line}: ")
    assert "nickname" in email_error[0]
    assert box.findall(card_html(page, "welcome", "in_app"))[0].startswith(
        "in_app/welcome.business.en.txt.j2:6: "
    )
    assert box.findall(card_html(page, "activated", "in_app"))[0].startswith(
        "in_app/activated.default.en.txt.j2:4: invalid front matter"
    )
    subject = box.findall(card_html(page, "stall_nudge", "email"))[0]
    assert subject.startswith("email/stall_nudge.business.en.html.j2:2: subject: ")
    assert "nickname" in subject
    assert "4 errors</a>" in page  # the summary at the top


async def test_edits_show_without_restarting(site: Site, templates: Path) -> None:
    before = (await site.get("/version")).json()
    first = (await site.get("/", persona="technical")).text
    assert "Edited subject" not in first

    path = templates / "email" / "welcome.technical.en.html.j2"
    subject = site.render("email", "welcome", "technical").subject
    edit(path, "your API key is ready", "Edited subject")
    edit(path, "<p>Hi {{ user.first_name }},</p>", "<p>Hello again, {{ user.first_name }}!</p>")

    after = (await site.get("/version")).json()
    assert after["fingerprint"] != before["fingerprint"]
    assert after["newest_mtime_ns"] > before["newest_mtime_ns"]
    page = (await site.get("/", persona="technical")).text
    card = card_html(page, "welcome", "email")
    assert "Ada, Edited subject" in card and str(escape(subject)) not in card
    assert str(escape("<p>Hello again, Ada!</p>")) in card  # the body, inside the frame

    # A new file counts too: a German copy adds the locale to the selector.
    shutil.copy(path, templates / "email" / "welcome.technical.de.html.j2")
    added = (await site.get("/version")).json()
    assert added["files"] == after["files"] + 1 and added["fingerprint"] != after["fingerprint"]
    german = (await site.get("/", persona="technical", locale="de")).text
    assert '<option value="de" selected>' in german
    assert "fallback · no de file, en copy" in card_html(german, "welcome", "in_app")


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"persona": "robot"}, 400, "Unknown persona &#39;robot&#39;: choose technical, business"),
        ({"locale": "de"}, 400, "Unknown locale &#39;de&#39;: the templates are written in en, fr"),
        ({"sample": "bob"}, 400, "Unknown sample &#39;bob&#39;: choose ada, sam, zoe"),
        ({"width": "tablet"}, 400, "Unknown width &#39;tablet&#39;: choose desktop or mobile"),
    ],
)
async def test_bad_query_values_are_explained(
    site: Site, params: dict[str, str], status: int, message: str
) -> None:
    for path in ("/", "/message/email/welcome"):
        response = await site.get(path, **params)
        assert response.status_code == status
        assert message in response.text
        assert "Traceback" not in response.text
        assert response.headers["content-type"].startswith("text/html")


async def test_a_broken_journey_file_is_explained(templates: Path, tmp_path: Path) -> None:
    journey = tmp_path / "journey.toml"
    journey.write_text("version = [\n")
    site = Site(create_app(Settings(templates_dir=templates, journey_file=journey)))
    response = await site.get("/")
    assert response.status_code == 500
    assert f"journey file {journey} is not valid TOML" in response.text
    assert "Traceback" not in response.text


async def test_one_message_alone(site: Site) -> None:
    page = await site.get("/message/sms/trial_ending_0", sample="zoe", locale="fr")
    assert page.status_code == 200
    cards = tagged(page.text, "card")
    assert [(c["data-message"], c["data-channel"]) for c in cards] == [("trial_ending_0", "sms")]
    assert 'class="card large"' in page.text
    not_sent = await site.get("/message/email/drip_webhooks", persona="executive")
    assert "executive users never receive drip_webhooks: it is in the technical drip." in (
        not_sent.text
    )
    unknown = await site.get("/message/sms/welcome")
    assert unknown.status_code == 404
    assert "The journey never sends &#39;welcome&#39; by &#39;sms&#39;." in unknown.text


async def test_events_announce_a_changed_folder(templates: Path) -> None:
    stream = template_changes(templates, interval=0.05)
    try:
        assert await anext(stream) == "retry: 1000\n\n"
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        path = templates / "sms" / "trial_ending_0.default.en.txt.j2"
        edit(path, "STOP", "Reply STOP")
        event = await asyncio.wait_for(waiting, timeout=5)
        assert event.startswith("event: change\ndata: ")
    finally:
        await stream.aclose()
    # A page rendered before an edit learns of it as soon as it subscribes.
    stale = template_changes(templates, since="0000", interval=0.05)
    try:
        await anext(stale)
        assert (await asyncio.wait_for(anext(stale), timeout=5)).startswith("event: change")
    finally:
        await stale.aclose()
    # Ctrl-C ends open streams, so the server does not wait for every tab to close.
    stop = threading.Event()
    stopping = template_changes(templates, interval=0.05, stop=stop)
    await anext(stopping)
    stop.set()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stopping), timeout=5)


def test_samples_carry_what_the_journey_guarantees() -> None:
    product = Product("Acme", "https://app.acme.test", "Paris", "help@acme.test")
    sam = sample_context(product, "email", "trial_ending_3", "business", "fr", "sam")
    assert sam["trial"]["days_left"] == 3
    assert (sam["user"]["first_name"], sam["user"]["company"]) == ("Sam", "")
    assert sam["trial"]["ends_on"] == "9 décembre 2026"
    assert sample_context(product, "in_app", "activated", None, "en", "sam")["trial"]["activated"]
    paid = sample_context(product, "email", "welcome_paid", "business", "en", "ada")
    assert paid["trial"]["plan"] == "team"
    zoe = sample_context(product, "sms", "call_reminder_hour", "executive", "en", "zoe")
    assert zoe["call"]["at"] == "Tuesday 1 December at 10:00 (America/New_York)"
    assert sms_segments(zoe["user"]["name"])[0] == "UCS-2"
    with pytest.raises(KeyError, match="unknown sample 'bob'; choose one of ada, sam, zoe"):
        sample_context(product, "sms", "welcome", None, "en", "bob")


def test_serve_preview_says_why_it_cannot_start(tmp_path: Path) -> None:
    missing = Settings(templates_dir=tmp_path / "nowhere")
    with pytest.raises(ServiceError, match="nowhere does not exist"):
        serve_preview(missing, port=free_port())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServiceError, match=f"127.0.0.1:{port} is already in use"):
            serve_preview(Settings(), port=port)


# --- In a real browser -------------------------------------------------------------------------


def stop(process: subprocess.Popen[bytes]) -> None:
    """By PID: the server runs in its own process group."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@pytest.fixture
def server(templates: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    code = (
        "from trialpath.operations.config import Settings\n"
        "from trialpath.messages.preview import serve_preview\n"
        f"serve_preview(Settings(), port={port})\n"
    )
    env = {
        **os.environ,
        "TRIALPATH_TEMPLATES_DIR": str(templates),
        "TRIALPATH_DATA_DIR": str(tmp_path / "data"),
    }
    log = tmp_path / "preview.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"preview exited: {log.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/version", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"preview never answered: {log.read_text()}"
            time.sleep(0.1)
        yield base
    finally:
        stop(process)
    assert process.returncode is not None


def png_summary(png: bytes, rows: int = 400) -> tuple[int, int, int]:
    """(width, height, distinct colours in the first `rows` rows), decoded with zlib alone."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = depth = colour = interlace = 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat.append(data)
    assert depth == 8 and interlace == 0 and colour in (2, 6), (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    rows = min(rows, height)
    raw = zlib.decompressobj().decompress(b"".join(idat), (stride + 1) * rows)
    previous = bytearray(stride)
    colours: set[tuple[int, int, int]] = set()
    for y in range(rows):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = previous[i]
                c = previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                near = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + near) & 0xFF
        colours.update(zip(line[0::bpp], line[1::bpp], line[2::bpp], strict=True))
        previous = line
    return width, height, len(colours)


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium package to run this test"
        if os.environ.get("CI"):
            # `make test` installs it: on CI a missing browser is a broken set-up, not a skip.
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.mark.takes(seconds=12)
def test_in_a_real_browser(chromium: Path, server: str, templates: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    card = '[data-testid=card][data-message=welcome][data-channel=email] [data-testid="{}"]'
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{server}/?persona=business")

            # (a) every message, on each of its channels
            cards = page.get_by_test_id("card")
            expect(cards).to_have_count(len(expected_sends("business")))
            shown = {
                (c.get_attribute("data-message"), c.get_attribute("data-channel"))
                for c in cards.all()
            }
            assert shown == expected_sends("business")

            # (b) the persona selector swaps the copy
            subject = page.locator(card.format("subject"))
            business = subject.inner_text()
            page.get_by_test_id("persona-select").select_option("executive")
            page.wait_for_url(re.compile(r"persona=executive"))
            expect(subject).not_to_have_text(business)
            expect(cards).to_have_count(len(expected_sends("executive")))
            executive = subject.inner_text()
            assert executive.startswith("Ada, your first dashboard")

            # (d) a full-page screenshot that is not blank
            shot = page.screenshot(full_page=True, path=str(tmp_path / "gallery.png"))
            width, height, colours = png_summary(shot)
            assert width == 1280 and height > 800, (width, height)
            assert colours > 10, f"the screenshot looks blank ({colours} colours)"

            # (c) the width toggle: the email frame at 600 px, then 375 px
            frame = page.locator(card.format("email-frame"))
            assert round(frame.bounding_box()["width"]) == 600  # type: ignore[index]
            page.get_by_test_id("width-mobile").click()
            page.wait_for_url(re.compile(r"width=mobile"))
            expect(subject).to_have_text(executive)
            assert round(frame.bounding_box()["width"]) == 375  # type: ignore[index]
            inside = page.frame_locator(card.format("email-frame")).locator("body")
            expect(inside).to_contain_text("Hi Ada,")
            page.screenshot(full_page=False, path=str(tmp_path / "mobile.png"))

            # (e) an edit reloads the page by itself (Server-Sent Events)
            page.evaluate("window.beforeEdit = true")
            edit(
                templates / "email" / "welcome.executive.en.html.j2",
                "your first dashboard is ten minutes away",
                "this text was edited while the page was open",
            )
            expect(subject).to_have_text(
                "Ada, this text was edited while the page was open", timeout=10_000
            )
            assert page.evaluate("window.beforeEdit === undefined"), "the page did not reload"
            assert "width=mobile" in page.url and "persona=executive" in page.url
        finally:
            browser.close()

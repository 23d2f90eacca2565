"""`trialpath templates preview`: a local web page showing every message the journey sends.

    GET /                               every (message, channel) a persona receives, one card each
    GET /message/{channel}/{message}    one card alone, larger
    GET /events                         Server-Sent Events: `change` when a template file changes
    GET /version                        JSON fingerprint of the templates folder
    GET /journey                        the journey drawn (trialpath/messages/journeymap.py), each
                                        message linking to its card, each card back to it

The pages take `persona`, `locale`, `sample` (see trialpath/messages/samples.py) and `width`
(`desktop` or `mobile`). Messages are rendered by the worker's own Renderer, whose Jinja loader
reloads edited files, so a page load always shows the files as they are on disk; the page's
EventSource asks for that load when the folder's fingerprint changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import webbrowser
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import uvicorn
import yaml
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from jinja2 import DictLoader, Environment, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from starlette.exceptions import HTTPException as StarletteHTTPException

from trialpath.core.definition import (
    PERSONAS,
    DefinitionError,
    JourneyDefinition,
    Persona,
    load_definition,
)
from trialpath.delivery.twilio import sms_segments
from trialpath.messages.journeymap import journey_map, preview_link, to_html
from trialpath.messages.samples import SAMPLE_USERS, SampleUser, sample_context
from trialpath.messages.templating import (
    FALLBACK_LOCALE,
    Product,
    Rendered,
    Renderer,
    TemplateProblem,
    split_front_matter,
)
from trialpath.operations.config import Settings
from trialpath.operations.services import ServiceError, port_open

log = logging.getLogger("trialpath.preview")

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
WIDTHS = {"desktop": 600, "mobile": 375}
CHANNEL_LABELS = {"email": "Email", "in_app": "In-app", "sms": "SMS", "support": "Support alert"}


# --- The templates folder ----------------------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    digest: str
    files: int
    newest_mtime_ns: int


def fingerprint(templates_dir: Path) -> Fingerprint:
    """Names, sizes and modification times of the template files: changes on any edit, any file
    added or removed. Only `*.j2` files count, so editors' swap files do not reload the page."""
    entries = []
    newest = 0
    for path in sorted(templates_dir.rglob("*.j2")):
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed while we listed the folder
            continue
        entries.append(f"{path.relative_to(templates_dir)}\0{stat.st_mtime_ns}\0{stat.st_size}")
        newest = max(newest, stat.st_mtime_ns)
    digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]
    return Fingerprint(digest=digest, files=len(entries), newest_mtime_ns=newest)


def template_locales(templates_dir: Path) -> list[str]:
    """Every locale some template file is written in, the fallback locale first."""
    found = {FALLBACK_LOCALE}
    for path in templates_dir.rglob("*.j2"):
        parts = path.name.split(".")
        if len(parts) == 5 and not path.name.startswith("_"):
            found.add(parts[2])
    return [FALLBACK_LOCALE, *sorted(found - {FALLBACK_LOCALE})]


async def template_changes(
    templates_dir: Path,
    since: str | None = None,
    interval: float = POLL_SECONDS,
    stop: threading.Event | None = None,
) -> AsyncIterator[str]:
    """Server-Sent Events: a `change` event each time the folder's fingerprint changes.

    `since` is the fingerprint the page was rendered with, so an edit made between the page
    load and the subscription still reloads the page. The stream ends when `stop` is set."""
    yield "retry: 1000\n\n"
    current = (await asyncio.to_thread(fingerprint, templates_dir)).digest
    seen = since or current
    quiet = 0.0
    while not (stop and stop.is_set()):
        if current != seen:
            seen = current
            quiet = 0.0
            yield f"event: change\ndata: {current}\n\n"
        elif quiet >= HEARTBEAT_SECONDS:
            # A comment line: lets the server notice a closed tab when the write fails.
            quiet = 0.0
            yield ": still watching\n\n"
        await asyncio.sleep(interval)
        quiet += interval
        current = (await asyncio.to_thread(fingerprint, templates_dir)).digest


# --- What the journey sends --------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    message: str
    channel: str
    category: str
    note: str = ""
    """Why this channel is used, when it is not obvious (a fallback channel)."""


@dataclass(frozen=True)
class Group:
    message: str
    category: str
    when: str
    sends: tuple[Send, ...]


def journey_groups(defn: JourneyDefinition, persona: Persona) -> list[Group]:
    """Every message a user of `persona` can receive, on each of its channels, file order
    first and then the persona's drip by day."""
    groups = []
    for name, spec in defn.messages.items():
        sends = _sends(name, spec.channels, spec.category, spec.unless_read_hours)
        if spec.fallback and spec.fallback not in spec.channels:
            primary = " or ".join(CHANNEL_LABELS[c] for c in spec.channels if c != "in_app")
            note = f"sent instead of {primary} to users without a phone or when it fails"
            sends.append(Send(name, spec.fallback, spec.category, note))
        when = "sent at once" if spec.immediate else "sent in the send window"
        groups.append(Group(name, spec.category, when, tuple(sends)))
    for step in defn.personas[persona].drip:
        skip = f", skipped after {', '.join(step.skip_if)}" if step.skip_if else ""
        sends = _sends(step.message, step.channels, "marketing", step.unless_read_hours)
        groups.append(Group(step.message, "marketing", f"drip, day {step.day}{skip}", tuple(sends)))
    return groups


def _sends(
    message: str, channels: tuple[str, ...], category: str, unless_read_hours: float | None
) -> list[Send]:
    """A message's sends; with `unless_read_hours`, the channels that wait for the in-app copy
    say so."""
    note = ""
    if unless_read_hours is not None:
        note = f"sent {unless_read_hours:g} h after the in-app message, unless the user read it"
    return [
        Send(message, channel, category, note if channel != "in_app" else "")
        for channel in channels
    ]


def drip_owner(defn: JourneyDefinition, message: str) -> str | None:
    """The persona whose drip includes `message`, None for messages everyone can receive."""
    if message in defn.messages:
        return None
    for persona, path in defn.personas.items():
        if any(step.message == message for step in path.drip):
            return persona
    return None


# --- Cards -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    persona: Persona
    locale: str
    sample: SampleUser
    width: Literal["desktop", "mobile"]

    def query(self, **changes: str) -> str:
        params = {
            "persona": self.persona,
            "locale": self.locale,
            "sample": self.sample.key,
            "width": self.width,
        }
        return urlencode({**params, **changes})


@dataclass(frozen=True)
class Fallback:
    kind: Literal["persona", "locale"]
    text: str


@dataclass(frozen=True)
class Card:
    send: Send
    url: str
    template: str | None = None
    """The file used after fallbacks; None when none exists."""
    rendered: Rendered | None = None
    error: str | None = None
    not_sent: str | None = None
    """Why a user of this persona never gets this message (another persona's drip)."""
    fallbacks: tuple[Fallback, ...] = ()
    notes: tuple[str, ...] = ()
    segments: tuple[str, int] | None = None
    over_segments: bool = False


def fallbacks_used(template: str | None, persona: str, locale: str) -> tuple[Fallback, ...]:
    """Each fallback that chose `template` instead of the persona's file in the locale."""
    parts = (template or "").rsplit("/", 1)[-1].split(".")
    if len(parts) != 5:
        return ()
    who, loc = parts[1], parts[2]
    used = []
    if who != persona:
        used.append(Fallback("persona", f"no {persona} file, {who} copy"))
    if loc != locale:
        used.append(Fallback("locale", f"no {locale} file, {loc} copy"))
    return tuple(used)


def describe_error(
    err: Exception, template: str | None, send: Send, templates_dir: Path, context: dict[str, Any]
) -> str:
    where = template or f"{send.channel}/{send.message}"
    if isinstance(err, TemplateProblem):
        message = str(err)
        if template and message.startswith(f"{template}: "):
            # The Renderer names no line for front-matter values (a subject): find the key.
            found = front_matter_failure(templates_dir / template, context)
            if found:
                line, key = found
                return f"{template}:{line}: {key}: {message.removeprefix(f'{template}: ')}"
        return message
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        # The YAML starts on the file's second line, after the opening `---`.
        return f"{where}:{err.problem_mark.line + 2}: invalid front matter: {err.problem}"
    return f"{where}: {type(err).__name__}: {err}"


def front_matter_failure(path: Path, context: dict[str, Any]) -> tuple[int, str] | None:
    """(line, key) of the first front-matter value that does not render, if one does not."""
    try:
        source = path.read_text(encoding="utf-8")
        meta, _, _ = split_front_matter(source)
    except (OSError, ValueError, TemplateProblem, yaml.YAMLError):
        return None
    strings = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    for key, value in meta.items():
        try:
            strings.from_string(str(value)).render(context)
        except TemplateError:
            for number, line in enumerate(source.splitlines(), 1):
                if line.startswith(f"{key}:"):
                    return number, str(key)
    return None


@dataclass
class Preview:
    settings: Settings
    renderer: Renderer = field(init=False)
    product: Product = field(init=False)
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set on Ctrl-C: open event streams end, so the server stops without waiting for tabs."""

    def __post_init__(self) -> None:
        self.renderer = Renderer(self.settings.templates_dir)
        self.product = Product(
            name=self.settings.product_name,
            app_url=self.settings.product_app_url,
            company_address=self.settings.company_address,
            support_email=self.settings.support_email,
        )

    @property
    def templates_dir(self) -> Path:
        return self.settings.templates_dir

    def definition(self) -> JourneyDefinition:
        # Read on each page, like the templates: the page follows edits to the journey too.
        try:
            return load_definition(self.settings.journey_file)
        except DefinitionError as err:
            raise BadView(500, str(err)) from err

    def card(self, defn: JourneyDefinition, send: Send, view: View) -> Card:
        url = f"/message/{send.channel}/{send.message}?{view.query()}"
        owner = drip_owner(defn, send.message)
        if owner and owner != view.persona:
            why = f"{view.persona} users never receive {send.message}: it is in the {owner} drip."
            return Card(send, url, not_sent=why)
        notes = []
        if send.channel == "sms" and not view.sample.phone:
            fallback = defn.message(send.message).fallback
            instead = f"; the {CHANNEL_LABELS[fallback]} version goes instead" if fallback else ""
            notes.append(f"{view.sample.first_name} has no phone number: no SMS is sent{instead}.")
        context = sample_context(
            self.product, send.channel, send.message, view.persona, view.locale, view.sample
        )
        template = None
        try:
            template = self.renderer.resolve(send.channel, send.message, view.persona, view.locale)
            rendered = self.renderer.render(
                send.channel, send.message, view.persona, view.locale, context
            )
        except Exception as err:  # any failure belongs on its card; the rest of the page renders
            return Card(
                send,
                url,
                template=template,
                error=describe_error(err, template, send, self.templates_dir, context),
                fallbacks=fallbacks_used(template, view.persona, view.locale),
                notes=tuple(notes),
            )
        segments = sms_segments(rendered.text) if send.channel == "sms" else None
        return Card(
            send,
            url,
            template=rendered.template,
            rendered=rendered,
            fallbacks=fallbacks_used(rendered.template, view.persona, view.locale),
            notes=tuple(notes),
            segments=segments,
            over_segments=bool(segments and segments[1] > self.settings.sms_max_segments),
        )


# --- HTTP --------------------------------------------------------------------------------------


class BadView(StarletteHTTPException):
    """A query value the page cannot show; answered as a short HTML page, not a traceback."""


def get_preview(request: Request) -> Preview:
    preview: Preview = request.app.state.preview
    return preview


PreviewDep = Annotated[Preview, Depends(get_preview)]
Param = Annotated[str | None, Query()]


def parse_view(
    preview: Preview,
    defn: JourneyDefinition,
    persona: str | None,
    locale: str | None,
    sample: str | None,
    width: str | None,
) -> View:
    chosen = next((p for p in PERSONAS if p == (persona or defn.default_persona)), None)
    if chosen is None:
        raise BadView(400, f"Unknown persona {persona!r}: choose {', '.join(PERSONAS)}.")
    locales = template_locales(preview.templates_dir)
    locale = locale or FALLBACK_LOCALE
    if locale not in locales:
        raise BadView(
            400, f"Unknown locale {locale!r}: the templates are written in {', '.join(locales)}."
        )
    sample = sample or next(iter(SAMPLE_USERS))
    if sample not in SAMPLE_USERS:
        raise BadView(400, f"Unknown sample {sample!r}: choose {', '.join(SAMPLE_USERS)}.")
    width = width or "desktop"
    if width not in WIDTHS:
        raise BadView(400, f"Unknown width {width!r}: choose {' or '.join(WIDTHS)}.")
    return View(chosen, locale, SAMPLE_USERS[sample], "mobile" if width == "mobile" else "desktop")


router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def gallery(
    preview: PreviewDep,
    persona: Param = None,
    locale: Param = None,
    sample: Param = None,
    width: Param = None,
) -> HTMLResponse:
    defn = preview.definition()
    view = parse_view(preview, defn, persona, locale, sample, width)
    stamp = fingerprint(preview.templates_dir)
    groups = [
        (group, [preview.card(defn, send, view) for send in group.sends])
        for group in journey_groups(defn, view.persona)
    ]
    cards = [card for _, group_cards in groups for card in group_cards]
    body = _page(
        "gallery.html.j2",
        preview,
        view,
        stamp,
        action="/",
        groups=groups,
        total=len(cards),
        errors=[card for card in cards if card.error],
        fallbacks=sum(1 for card in cards if card.fallbacks),
        anchors=_anchors(defn, view),
    )
    return HTMLResponse(body)


@router.get("/message/{channel}/{message}", response_class=HTMLResponse)
def one_message(
    preview: PreviewDep,
    channel: str,
    message: str,
    persona: Param = None,
    locale: Param = None,
    sample: Param = None,
    width: Param = None,
) -> HTMLResponse:
    defn = preview.definition()
    view = parse_view(preview, defn, persona, locale, sample, width)
    sends = {
        (send.message, send.channel): send
        for who in PERSONAS
        for group in journey_groups(defn, who)
        for send in group.sends
    }
    send = sends.get((message, channel))
    if send is None:
        raise BadView(404, f"The journey never sends {message!r} by {channel!r}.")
    stamp = fingerprint(preview.templates_dir)
    card = preview.card(defn, send, view)
    body = _page(
        "message.html.j2",
        preview,
        view,
        stamp,
        action=f"/message/{channel}/{message}",
        card=card,
        anchors=_anchors(defn, view),
    )
    return HTMLResponse(body)


@router.get("/journey", response_class=HTMLResponse)
def journey_page(preview: PreviewDep) -> HTMLResponse:
    """The journey drawn, read from the journey file at each load like the cards."""
    return HTMLResponse(to_html(journey_map(preview.definition()), preview_link()))


def _anchors(defn: JourneyDefinition, view: View) -> dict[str, str]:
    """Where each message is drawn on /journey, on the viewed persona's path if it is there."""
    drawn = journey_map(defn)
    anchors = {}
    for node in drawn.nodes():
        if node.message is not None and node.message not in anchors:
            anchor = drawn.anchor(node.message, view.persona)
            if anchor is not None:
                anchors[node.message] = anchor
    return anchors


@router.get("/events")
async def events(preview: PreviewDep, since: Param = None) -> StreamingResponse:
    return StreamingResponse(
        template_changes(preview.templates_dir, since, stop=preview.stopping),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/version")
def version(preview: PreviewDep) -> dict[str, Any]:
    stamp = fingerprint(preview.templates_dir)
    return {
        "fingerprint": stamp.digest,
        "files": stamp.files,
        "newest_mtime_ns": stamp.newest_mtime_ns,
    }


async def _problem_page(request: Request, exc: Exception) -> HTMLResponse | JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path == "/version":
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    body = _PAGES.get_template("problem.html.j2").render(
        status=exc.status_code, detail=exc.detail, title="Message preview"
    )
    return HTMLResponse(body, status_code=exc.status_code)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="Trialpath message preview", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.preview = Preview(settings)
    app.include_router(router)
    app.add_exception_handler(StarletteHTTPException, _problem_page)
    return app


def serve_preview(
    settings: Settings, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False
) -> None:
    """Serves the preview until Ctrl-C; raises ServiceError when it cannot start."""
    if not settings.templates_dir.is_dir():
        raise ServiceError(f"templates folder {settings.templates_dir} does not exist")
    if port_open(host, port):
        raise ServiceError(f"{host}:{port} is already in use; choose another port with --port")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("preview listening on %s: anyone who can reach it sees the templates", host)
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", access_log=False, timeout_graceful_shutdown=3
    )
    server = _Server(config, app.state.preview)
    if open_browser:
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
        threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
    server.run()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, preview: Preview) -> None:
        super().__init__(config)
        self.preview = preview

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.preview.stopping.set()
        super().handle_exit(sig, frame)


def _open_when_started(server: uvicorn.Server, url: str) -> None:
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    if server.started:
        webbrowser.open(url)


# --- Page templates ----------------------------------------------------------------------------


def _page(name: str, preview: Preview, view: View, stamp: Fingerprint, **values: Any) -> str:
    return _PAGES.get_template(name).render(
        view=view,
        fingerprint=stamp.digest,
        templates_dir=str(preview.templates_dir),
        personas=PERSONAS,
        locales=template_locales(preview.templates_dir),
        samples=SAMPLE_USERS.values(),
        widths=WIDTHS,
        frame_width=WIDTHS[view.width],
        labels=CHANNEL_LABELS,
        sender_name=preview.settings.product_name,
        sender_email=preview.settings.sender_email,
        support_email=preview.settings.support_email,
        max_segments=preview.settings.sms_max_segments,
        **values,
    )


_STYLE = """
:root { --ink: #1f2933; --muted: #6b7785; --line: #dde1e6; --brand: #3b4cca; --bg: #f4f5f7; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: var(--ink); background: var(--bg); }
a { color: var(--brand); }
.bar { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid var(--line);
  padding: 10px 20px; display: flex; flex-wrap: wrap; gap: 10px 18px; align-items: center; }
.bar h1 { font-size: 16px; margin: 0 12px 0 0; }
.bar h1 a { color: inherit; text-decoration: none; }
.bar label { color: var(--muted); font-size: 12px; display: flex; gap: 6px; align-items: center; }
.bar select { font: inherit; padding: 3px 6px; border: 1px solid var(--line); border-radius: 5px;
  background: #fff; max-width: 340px; }
.toggle { display: inline-flex; border: 1px solid var(--line); border-radius: 6px;
  overflow: hidden; }
.toggle a { padding: 3px 10px; text-decoration: none; color: var(--ink); }
.toggle a.on { background: var(--brand); color: #fff; }
.summary { margin-left: auto; color: var(--muted); font-size: 12px; }
.summary .bad { color: #b42318; font-weight: 600; }
.toc { padding: 8px 20px; font-size: 12px; color: var(--muted); background: #fafbfc;
  border-bottom: 1px solid var(--line); }
.toc a { margin-right: 10px; white-space: nowrap; }
.toc a.err { color: #b42318; font-weight: 600; }
main { padding: 16px 20px 40px; }
.group { margin: 0 0 28px; }
.group > h2 { font-size: 15px; margin: 0 0 8px; display: flex; gap: 8px; align-items: baseline; }
.group > h2 .when { color: var(--muted); font-weight: 400; font-size: 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px;
  min-width: 320px; max-width: 100%; box-shadow: 0 1px 2px rgba(16, 24, 40, .04); }
.card > header { display: flex; flex-wrap: wrap; gap: 6px 8px; align-items: center;
  margin-bottom: 10px; }
.channel { font-weight: 600; }
.tag { font-size: 11px; padding: 1px 7px; border-radius: 10px; background: #eef0f3;
  color: #475467; }
.tag.marketing { background: #fdf2fa; color: #c11574; }
.tag.transactional { background: #ecfdf3; color: #027a48; }
.badge { font-size: 11px; font-weight: 600; padding: 1px 7px; border-radius: 10px;
  background: #fffaeb; color: #b54708; border: 1px solid #fedf89; }
.badge.locale { background: #fef3f2; color: #b42318; border-color: #fecdca; }
.file { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; color: var(--muted); }
.open { margin-left: auto; font-size: 12px; }
.note { font-size: 12px; color: #475467; background: #f2f4f7; border-radius: 6px; padding: 6px 8px;
  margin: 0 0 8px; max-width: 600px; }
.error { background: #fef3f2; border: 1px solid #f04438; color: #912018; border-radius: 6px;
  padding: 10px 12px; font: 12px/1.5 ui-monospace, SFMono-Regular, Menlo, monospace;
  white-space: pre-wrap; word-break: break-word; max-width: 600px; }
.inbox { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px;
  margin-bottom: 10px; max-width: 100%; }
.inbox .from { display: flex; justify-content: space-between; font-size: 13px; }
.inbox .from b { font-weight: 600; }
.inbox .from span { color: var(--muted); font-size: 12px; }
.inbox .subject { font-weight: 700; margin-top: 2px; }
.inbox .preheader { color: var(--muted); white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
iframe { display: block; border: 1px solid var(--line); border-radius: 6px; background: #fff;
  height: 520px; max-width: 100%; }
details { margin-top: 8px; max-width: 600px; }
details pre { white-space: pre-wrap; font: 12px/1.5 ui-monospace, SFMono-Regular, Menlo, monospace;
  background: #f9fafb; border: 1px solid var(--line); border-radius: 6px; padding: 10px; }
.phone { width: 300px; background: #f2f4f7; border-radius: 22px; padding: 18px 14px; }
.bubble { background: #e5e5ea; color: #000; border-radius: 18px 18px 18px 4px; padding: 9px 13px;
  white-space: pre-wrap; word-break: break-word; font-size: 14px; }
.segments { font-size: 12px; color: var(--muted); margin-top: 8px; }
.segments.over { color: #b42318; font-weight: 600; }
.in-app { width: 340px; border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px;
  box-shadow: 0 4px 14px rgba(16, 24, 40, .08); }
.in-app .title { font-weight: 700; margin-bottom: 6px; }
.in-app .text { white-space: pre-wrap; }
.in-app .cta { display: inline-block; margin-top: 12px; background: var(--brand); color: #fff;
  text-decoration: none; padding: 7px 14px; border-radius: 6px; font-weight: 600; }
.large { font-size: 15px; width: fit-content; }
.large .in-app, .large .phone { width: 420px; }
.problem { max-width: 640px; margin: 60px auto; background: #fff; border: 1px solid var(--line);
  border-radius: 10px; padding: 24px; }
"""

_SCRIPT = """
function fit(frame) {
  try { frame.style.height = frame.contentDocument.documentElement.scrollHeight + 2 + "px"; }
  catch (e) { /* the frame keeps its fixed height */ }
}
const events = new EventSource("/events?since=" + encodeURIComponent(FINGERPRINT));
events.addEventListener("change", () => location.reload());
"""

_BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}{{ title }}{% endblock %}</title>
<style>{{ style|safe }}</style>
{% if fingerprint is defined %}
<script>const FINGERPRINT = {{ fingerprint|tojson }};{{ script|safe }}</script>
{% endif %}
</head>
<body>
{% block body %}{% endblock %}
</body>
</html>
"""

_BAR = """
<form class="bar" method="get" action="{{ action }}" data-testid="controls">
  <h1><a href="/?{{ view.query() }}">Message preview</a></h1>
  <a href="/journey" data-testid="journey-link">Journey map</a>
  <label>Persona
    <select name="persona" data-testid="persona-select" onchange="this.form.submit()">
    {% for p in personas %}
      <option value="{{ p }}"{{ ' selected' if p == view.persona }}>{{ p }}</option>
    {% endfor %}
    </select></label>
  <label>Locale
    <select name="locale" data-testid="locale-select" onchange="this.form.submit()">
    {% for l in locales %}
      <option value="{{ l }}"{{ ' selected' if l == view.locale }}>{{ l }}</option>
    {% endfor %}
    </select></label>
  <label>Sample user
    <select name="sample" data-testid="sample-select" onchange="this.form.submit()">
    {% for s in samples %}
      <option value="{{ s.key }}"{{ ' selected' if s == view.sample }}>{{ s.label }}</option>
    {% endfor %}
    </select></label>
  <input type="hidden" name="width" value="{{ view.width }}">
  <span class="toggle" data-testid="width-toggle">
  {% for w, px in widths.items() %}
    <a href="{{ action }}?{{ view.query(width=w) }}" data-testid="width-{{ w }}"
      class="{{ 'on' if w == view.width }}" title="{{ px }} px">{{ w|capitalize }}</a>
  {% endfor %}
  </span>
  <noscript><button type="submit">Show</button></noscript>
  {% if total is defined %}{% include "summary.html.j2" %}{% endif %}
</form>
"""

_SUMMARY = """
<span class="summary" data-testid="summary">{{ total }} cards ·
{% if errors %}
  {% set first = errors[0].send %}
  <a class="bad" href="#card-{{ first.message }}-{{ first.channel }}">
    {{- errors|length }} error{{ 's' if errors|length != 1 }}</a>
{% else %}
  no errors
{% endif %}
  · {{ fallbacks }} with fallbacks</span>
"""

_CARD = """
{% macro card_html(card, large=False) %}
{% set r = card.rendered %}
{% set send = card.send %}
<article class="card{{ ' large' if large }}" data-testid="card" id="card-{{ send.message }}-
  {{- send.channel }}" data-message="{{ send.message }}" data-channel="{{ send.channel }}"
  data-template="{{ card.template or '' }}" data-fallback="{{ 'yes' if card.fallbacks else 'no' }}"
  data-error="{{ 'yes' if card.error else 'no' }}">
  <header>
    <span class="channel">{{ labels[send.channel] }}</span>
    <span class="tag {{ send.category }}">{{ send.category }}</span>
    {% if card.template %}
    <code class="file" data-testid="template" title="{{ templates_dir }}/{{ card.template }}">
      {{- card.template }}</code>
    {% endif %}
    {% for fb in card.fallbacks %}
    <span class="badge {{ fb.kind }}" data-testid="fallback-badge" data-kind="{{ fb.kind }}">
      {{- 'fallback · ' ~ fb.text }}</span>
    {% endfor %}
    {% if not large %}<a class="open" href="{{ card.url }}">open alone</a>{% endif %}
    {% if anchors is defined and send.message in anchors %}
    <a class="open" href="/journey#{{ anchors[send.message] }}" data-testid="in-journey">
      in the journey</a>{% endif %}
  </header>
  {% if send.note %}<p class="note">{{ labels[send.channel] }} {{ send.note }}.</p>{% endif %}
  {% for note in card.notes %}<p class="note" data-testid="card-note">{{ note }}</p>{% endfor %}
  {% if card.not_sent %}
  <p class="note" data-testid="not-sent">{{ card.not_sent }}</p>
  {% elif card.error %}
  <div class="error" data-testid="render-error">{{ card.error }}</div>
  {% elif send.channel in ('email', 'support') %}
  <div class="inbox" style="width: {{ frame_width }}px">
    <div class="from"><b data-testid="sender" title="{{ sender_email }}">{{ sender_name }}</b>
      <span>to {{ support_email if send.channel == 'support' else view.sample.name }}</span></div>
    <div class="subject" data-testid="subject">{{ r.subject }}</div>
    <div class="preheader" data-testid="preheader">{{ r.preheader }}</div>
  </div>
  <iframe data-testid="email-frame" sandbox="allow-same-origin" srcdoc="{{ r.html }}"
    width="{{ frame_width }}" style="width: {{ frame_width }}px" onload="fit(this)"
    title="{{ r.subject }}"></iframe>
  <details data-testid="plain-text"><summary>Plain-text version</summary>
    <pre>{{ r.text }}</pre></details>
  {% elif send.channel == 'sms' %}
  <div class="phone">
    <div class="bubble" data-testid="sms-text">{{ r.text }}</div>
  </div>
  {% set encoding, count = card.segments %}
  <div class="segments{{ ' over' if card.over_segments }}" data-testid="sms-segments">
    {{ count }} segment{{ 's' if count != 1 }}, {{ encoding }} · {{ r.text|length }} characters
    {%- if card.over_segments %} · over the limit of {{ max_segments }}, not sent{% endif %}
  </div>
  {% else %}
  <div class="in-app">
    <div class="title" data-testid="in-app-title">{{ r.title }}</div>
    <div class="text" data-testid="in-app-text">{{ r.text }}</div>
    {% if r.cta_label %}
    <a class="cta" data-testid="in-app-cta" href="{{ r.cta_url }}" title="{{ r.cta_url }}"
      target="_blank" rel="noopener">{{ r.cta_label }}</a>
    {% endif %}
  </div>
  {% endif %}
</article>
{% endmacro %}
"""

_GALLERY = """{% extends "base.html.j2" %}
{% from "card.html.j2" import card_html with context %}
{% block title %}Messages · {{ view.persona }} · {{ view.locale }}{% endblock %}
{% block body %}
{% include "bar.html.j2" %}
<nav class="toc">
{% for group, cards in groups %}
  <a href="#msg-{{ group.message }}" class="{{ 'err' if cards|selectattr('error')|list }}">
    {{- group.message }}</a>
{% endfor %}
</nav>
<main>
{% for group, cards in groups %}
<section class="group" id="msg-{{ group.message }}" data-testid="message-group"
  data-message="{{ group.message }}">
  <h2>{{ group.message }} <span class="when">{{ group.category }} · {{ group.when }}</span></h2>
  <div class="cards">
  {% for card in cards %}{{ card_html(card) }}{% endfor %}
  </div>
</section>
{% endfor %}
</main>
{% endblock %}
"""

_MESSAGE = """{% extends "base.html.j2" %}
{% from "card.html.j2" import card_html with context %}
{% block title %}{{ card.send.message }} · {{ labels[card.send.channel] }}{% endblock %}
{% block body %}
{% include "bar.html.j2" %}
<main>
  <p><a href="/?{{ view.query() }}#card-{{ card.send.message }}-{{ card.send.channel }}">
    ← every message</a></p>
  <h2>{{ card.send.message }}</h2>
  {{ card_html(card, large=True) }}
</main>
{% endblock %}
"""

_PROBLEM = """{% extends "base.html.j2" %}
{% block body %}
<div class="problem" data-testid="problem">
  <h1>{{ status }}</h1>
  <p>{{ detail }}</p>
  <p><a href="/">Back to every message</a></p>
</div>
{% endblock %}
"""

_PAGES = Environment(
    loader=DictLoader(
        {
            "base.html.j2": _BASE,
            "bar.html.j2": _BAR,
            "summary.html.j2": _SUMMARY,
            "card.html.j2": _CARD,
            "gallery.html.j2": _GALLERY,
            "message.html.j2": _MESSAGE,
            "problem.html.j2": _PROBLEM,
        }
    ),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_PAGES.globals.update(style=_STYLE, script=_SCRIPT)

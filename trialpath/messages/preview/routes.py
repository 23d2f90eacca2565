"""The preview's HTTP routes: the gallery of cards, one card alone, the journey map, the change
events and the folder's fingerprint, and the short page that answers a bad query."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from trialpath.core.definition import PERSONAS, JourneyDefinition
from trialpath.messages.journeymap import journey_map, preview_link, to_html
from trialpath.messages.preview.cards import WIDTHS, BadView, Preview, View
from trialpath.messages.preview.folder import fingerprint, template_changes, template_locales
from trialpath.messages.preview.pages import PAGES, page
from trialpath.messages.preview.sends import journey_groups
from trialpath.messages.samples import SAMPLE_USERS
from trialpath.messages.templating import FALLBACK_LOCALE


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
    body = page(
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
    body = page(
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


async def problem_page(request: Request, exc: Exception) -> HTMLResponse | JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path == "/version":
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    body = PAGES.get_template("problem.html.j2").render(
        status=exc.status_code, detail=exc.detail, title="Message preview"
    )
    return HTMLResponse(body, status_code=exc.status_code)

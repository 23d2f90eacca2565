"""Routes about messages once sent: the in-app inbox, preferences, one-click unsubscribe links
and the providers' webhooks.

The inbox and preferences need an API key, like every other route. The unsubscribe link is
opened by the user (or their mail client, RFC 8058) and carries its own signature; webhooks are
authenticated by the provider's signature. Neither takes an API key.
"""

from __future__ import annotations

import html
import logging
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from trialpath.delivery.deliveries import (
    Deliveries,
    EventsRecorded,
    InboxItem,
    InboxPage,
    Preferences,
    Unsubscribed,
)
from trialpath.delivery.preferences import SURVEY_SCALES, BadToken, SurveyTokens, UnsubscribeTokens
from trialpath.delivery.sendgrid import parse_sendgrid_events, verify_sendgrid_signature
from trialpath.delivery.twilio import parse_twilio_callback, verify_twilio_signature
from trialpath.entry.api.problems import Problem, problem
from trialpath.entry.api.routes import UserId, _problems
from trialpath.entry.api.security import allow
from trialpath.entry.commands import SurveyAnswer
from trialpath.entry.trials import Trials
from trialpath.operations.config import Settings

log = logging.getLogger("trialpath.api")

COMMON = (401, 403, 422, 503)


def _described(**codes: str) -> dict[int | str, dict[str, Any]]:
    """Problem responses of the routes without an API key, described in their own words."""
    return {
        int(code.removeprefix("s")): {
            "model": Problem,
            "description": text,
            "content": {"application/problem+json": {}},
        }
        for code, text in codes.items()
    }


async def deliveries(request: Request) -> Deliveries:
    service: Deliveries = request.app.state.deliveries
    return service


DeliveriesDep = Annotated[Deliveries, Depends(deliveries)]
MessageId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$")]

users = APIRouter(prefix="/v1/users", tags=["inbox"])
public = APIRouter(prefix="/v1")


@users.get(
    "/{user_id}/inbox",
    dependencies=[Depends(allow("inbox"))],
    response_model=InboxPage,
    summary="The user's in-app messages, unread first, newest first",
    responses=_problems(*COMMON),
)
async def inbox(
    user_id: UserId,
    service: DeliveriesDep,
    unread: Annotated[bool, Query(description="Only unread messages")] = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> InboxPage:
    return await service.inbox(user_id, unread, limit)


@users.post(
    "/{user_id}/inbox/{message_id}/read",
    dependencies=[Depends(allow("inbox", "inbox.read"))],
    response_model=InboxItem,
    summary="Mark an in-app message read (reported to the trial as a `message_read` event)",
    responses=_problems(*COMMON, 404),
)
async def read(user_id: UserId, message_id: MessageId, service: DeliveriesDep) -> InboxItem:
    return await service.mark_read(user_id, message_id)


@users.get(
    "/{user_id}/preferences",
    dependencies=[Depends(allow("read"))],
    response_model=Preferences,
    tags=["preferences"],
    summary="Which channels the user accepts marketing messages on, and why not",
    responses=_problems(*COMMON),
)
async def preferences(user_id: UserId, service: DeliveriesDep) -> Preferences:
    return await service.preferences(user_id)


# --- one-click unsubscribe -----------------------------------------------------------------

Token = Annotated[str, Path(min_length=10, max_length=500)]
_CHANNEL_WORDS = {"email": "emails", "sms": "text messages", "in_app": "in-app messages"}


def _tokens(request: Request) -> UnsubscribeTokens:
    tokens: UnsubscribeTokens = request.app.state.tokens
    return tokens


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>body{{font-family:system-ui,sans-serif;"
        "max-width:32rem;margin:4rem auto;padding:0 1rem;color:#1f2937}"
        "button{font-size:1rem;padding:.6rem 1.2rem;border-radius:.4rem;border:0;"
        "background:#4f46e5;color:#fff;cursor:pointer}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
    )


@public.get(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    tags=["preferences"],
    summary="Confirmation page of a one-click unsubscribe link (no API key)",
    responses=_described(s404="Not a valid link", s422="Malformed token"),
)
async def unsubscribe_page(token: Token, request: Request) -> Response:
    settings: Settings = request.app.state.settings
    try:
        _, channel = _tokens(request).read(token)
    except BadToken as err:
        return problem(404, "Invalid link", str(err), request)
    words = _CHANNEL_WORDS.get(channel, "messages")
    return _page(
        f"Unsubscribe from {settings.product_name} {words}?",
        f"<p>You will stop receiving tips and offers by {html.escape(words)}. Messages about "
        "your account, such as a call you booked, still reach you.</p>"
        f'<form method=post action="{html.escape(request.url.path)}">'
        '<input type=hidden name=List-Unsubscribe value="One-Click">'
        "<button type=submit>Unsubscribe</button></form>",
    )


@public.post(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    tags=["preferences"],
    summary="One-click unsubscribe (RFC 8058): mail clients POST `List-Unsubscribe=One-Click`",
    responses={
        200: {"description": "Unsubscribed"},
        **_described(s404="Not a valid link", s413="Body too large", s422="Malformed token"),
    },
)
async def unsubscribe_link(token: Token, request: Request, service: DeliveriesDep) -> Response:
    settings: Settings = request.app.state.settings
    try:
        user_id, channel = _tokens(request).read(token)
    except BadToken as err:
        return problem(404, "Invalid link", str(err), request)
    done: Unsubscribed = await service.unsubscribe(user_id, channel, "link")  # type: ignore[arg-type]
    log.info("user %s unsubscribed from %s by link (%s)", user_id, channel, done.channels)
    words = _CHANNEL_WORDS.get(channel, "messages")
    return _page(
        "You are unsubscribed",
        f"<p>{html.escape(settings.product_name)} will not send you any more tips or offers by "
        f"{html.escape(words)}.</p>",
    )


# --- survey links ----------------------------------------------------------------------------

_SURVEY_WORDS = {
    "csat": ("How useful was your call?", "not useful at all", "exactly what I needed"),
    "ces": ("How easy was it to get your first result?", "very hard", "very easy"),
}


def _survey_page(request: Request, survey: str, chosen: int | None, error: str = "") -> Response:
    question, low, high = _SURVEY_WORDS[survey]
    top = SURVEY_SCALES[survey]
    buttons = "".join(
        f"<button type=submit name=score value={n}"
        + (' aria-pressed=true style="outline:3px solid #111"' if n == chosen else "")
        + f">{n}</button> "
        for n in range(1, top + 1)
    )
    note = f"<p style=color:#b91c1c>{html.escape(error)}</p>" if error else ""
    return _page(
        question,
        f'{note}<form method=post action="{html.escape(request.url.path)}">'
        f"<p>{buttons}</p><p style=color:#6b7280>1 = {low}, {top} = {high}</p>"
        "<p><textarea name=comment rows=3 cols=40 maxlength=2000 "
        'placeholder="Anything to add? (optional)"></textarea></p>'
        "<p>Choose a score to send it.</p></form>",
        status=422 if error else 200,
    )


@public.get(
    "/surveys/{token}",
    response_class=HTMLResponse,
    tags=["surveys"],
    summary="The page a survey link opens (no API key); nothing is recorded until it is sent",
    responses=_described(s404="Not a valid link", s422="Malformed token"),
)
async def survey_page(
    token: Token, request: Request, score: Annotated[int | None, Query(ge=1, le=7)] = None
) -> Response:
    try:
        _, survey = SurveyTokens(_tokens(request).secret).read(token)
    except BadToken as err:
        return problem(404, "Invalid link", str(err), request)
    return _survey_page(request, survey, score)


@public.post(
    "/surveys/{token}",
    response_class=HTMLResponse,
    tags=["surveys"],
    summary="Send a survey answer from its signed link (form: score, comment)",
    responses={
        200: {"description": "Recorded"},
        **_described(
            s404="Not a valid link or no such trial", s413="Body too large", s422="Bad token"
        ),
    },
)
async def survey_answer(token: Token, request: Request) -> Response:
    try:
        user_id, survey = SurveyTokens(_tokens(request).secret).read(token)
    except BadToken as err:
        return problem(404, "Invalid link", str(err), request)
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    try:
        answer = SurveyAnswer(
            survey=survey,
            score=int(form.get("score", "0")),
            comment=(form.get("comment") or "").strip() or None,
        )
    except ValueError:
        return _survey_page(
            request, survey, None, f"Choose a score from 1 to {SURVEY_SCALES[survey]}."
        )
    trials: Trials = request.app.state.trials
    recorded = await trials.answer_survey(user_id, answer, source="link")
    thanks = "You had already answered: your first answer is kept." if recorded.duplicate else ""
    return _page("Thank you!", f"<p>Your answer helps us improve. {html.escape(thanks)}</p>")


# --- provider webhooks ---------------------------------------------------------------------

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


@public.post(
    "/webhooks/sendgrid",
    response_model=EventsRecorded,
    tags=["webhooks"],
    summary="SendGrid Event Webhook (signed with the account's ECDSA key)",
    responses=_described(
        s403="Missing or bad signature", s413="Body too large", s422="Not a list of events"
    ),
)
async def sendgrid_events(request: Request, service: DeliveriesDep) -> Any:
    settings: Settings = request.app.state.settings
    body = await request.body()
    key = settings.sendgrid_webhook_public_key
    if not key:
        return problem(
            403, "Forbidden", "TRIALPATH_SENDGRID_WEBHOOK_PUBLIC_KEY is not configured", request
        )
    signature = request.headers.get(SENDGRID_SIGNATURE, "")
    timestamp = request.headers.get(SENDGRID_TIMESTAMP, "")
    max_age = settings.sendgrid_webhook_max_age_seconds
    if not verify_sendgrid_signature(key, body, signature, timestamp, max_age_seconds=max_age):
        return problem(
            403,
            "Forbidden",
            "the SendGrid signature does not match, or its timestamp is over "
            f"{max_age:g} s from now (a replay)",
            request,
        )
    try:
        events = parse_sendgrid_events(body)
    except ValueError as err:
        return problem(422, "Invalid request", str(err), request)
    return await service.record(events)


@public.post(
    "/webhooks/twilio",
    tags=["webhooks"],
    summary="Twilio SMS status callbacks and replies (signed with X-Twilio-Signature)",
    responses={
        200: {"description": "Recorded (an empty TwiML answer)", "content": {"text/xml": {}}},
        **_described(
            s403="Missing or bad signature", s413="Body too large", s422="Not a Twilio callback"
        ),
    },
)
async def twilio_events(request: Request, service: DeliveriesDep) -> Response:
    settings: Settings = request.app.state.settings
    body = await request.body()
    token = settings.twilio_auth_token.get_secret_value()
    if not token:
        return problem(403, "Forbidden", "TRIALPATH_TWILIO_AUTH_TOKEN is not configured", request)
    try:
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        return problem(422, "Invalid request", "the body is not UTF-8 form data", request)
    # Twilio signs the URL it called, which is the public one, not what a proxy forwards.
    url = settings.effective_public_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("X-Twilio-Signature", "")
    if not verify_twilio_signature(token, url, params, signature):
        return problem(403, "Forbidden", "the Twilio signature does not match", request)
    try:
        event = parse_twilio_callback(params, request.query_params.get("key"))
    except ValueError as err:
        return problem(422, "Invalid request", str(err), request)
    await service.record([event])
    return Response('<?xml version="1.0" encoding="UTF-8"?><Response/>', media_type="text/xml")

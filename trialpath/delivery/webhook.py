"""The `webhook` provider: support alerts posted to a Slack-compatible incoming webhook.

One `deliver` is one POST of a Slack message to the webhook URL: `text` (the whole alert, for
notifications and receivers without blocks) and `blocks` (the subject as a header, the text,
the trial, and a button to the trial's workflow in the Temporal UI when there is one). Each
post carries

- `X-Trialpath-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the
  shared secret, when one is set, for receivers that check where a post comes from
  (`verify_signature`);
- `Idempotency-Key`: a hash of the message's key, the same on every attempt, for receivers
  that drop repeats.

An incoming webhook keeps no record anyone can ask for, and Slack drops no repeats, so `find`
raises `NotImplementedError`: a post whose answer was lost (a timeout after the request left)
is posted again once the reconcile window has passed. A post answered 2xx is never repeated
(its message row is `sent`); one whose answer was lost, or whose worker died before recording
the answer, may be, with the same body and key: at least once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from trialpath.delivery import (
    DeliveryError,
    OutgoingMessage,
    Receipt,
    classify_status,
    parse_retry_after,
)

PROVIDER = "webhook"
SIGNATURE_HEADER = "X-Trialpath-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_TOLERANCE_SECONDS = 300.0

# Slack's limits (api.slack.com/reference/block-kit/blocks): longer texts are refused.
HEADER_MAX = 150
SECTION_MAX = 3000
SECTIONS_MAX = 10
TEXT_MAX = 40_000
BUTTON_URL_MAX = 3000
NEVER_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)
"""Failures before the request left: the receiver certainly has not got the post."""
TRIAL_ID = "{trial_id}"
"""Where a link template takes the trial's workflow id."""


def message_hash(key: str) -> str:
    """The `Idempotency-Key` of a message: its key hashed, so no user id leaves in a header."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def sign(secret: str, body: bytes, at: int) -> str:
    """The `X-Trialpath-Signature` value for `body` posted at unix time `at`."""
    digest = hmac.new(secret.encode("utf-8"), f"{at}.".encode() + body, hashlib.sha256)
    return f"t={at},v1={digest.hexdigest()}"


def verify_signature(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether `header` (an `X-Trialpath-Signature`) signs the raw `body` with `secret`, at a
    time no further than `tolerance_seconds` from `now` (unix seconds; the clock by default),
    which refuses a post replayed later. Any `v1=` entry may match. Never raises."""
    if not secret or not header:
        return False
    at: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isdigit():
            at = int(value)
        elif name == "v1" and value:
            candidates.append(value.lower())
    if at is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - at) > tolerance_seconds:
        return False
    expected = sign(secret, body, at).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def temporal_ui_link(ui_url: str, namespace: str) -> str:
    """A link template (`{trial_id}` in it) to a trial's workflow in the Temporal UI: its
    workflow list filtered on the id, which shows every run of it."""
    if not ui_url:
        return ""
    space = urllib.parse.quote(namespace, safe="")
    query = urllib.parse.quote('WorkflowId="', safe="") + TRIAL_ID + urllib.parse.quote('"')
    return f"{ui_url.rstrip('/')}/namespaces/{space}/workflows?query={query}"


def build_payload(message: OutgoingMessage, link: str = "") -> dict[str, Any]:
    """The Slack message for one alert. `link` is the trial's page (empty: no button)."""
    subject = message.subject.strip() or "Support alert"
    text = message.text.strip()
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(subject, HEADER_MAX)}}
    ]
    for chunk in _sections(text):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
    about = [f"`{_escape(value)}`" for value in (message.trial_id, message.message) if value]
    if about:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(about)}]}
        )
    if link and len(link) <= BUTTON_URL_MAX:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open the trial"},
                        "url": link,
                    }
                ],
            }
        )
    fallback = f"*{_escape(subject)}*"
    if text:
        fallback += f"\n\n{_escape(text)}"
    if link:
        fallback += f"\n\n{link}"
    return {"text": _cut(fallback, TEXT_MAX), "blocks": blocks}


class WebhookProvider:
    name = PROVIDER

    def __init__(
        self,
        url: str,
        *,
        secret: str = "",
        link: str = "",
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`link`: a template with `{trial_id}` for the button (`temporal_ui_link`).
        `transport` replaces the network (tests); `clock` gives the signature's time."""
        if not url:
            raise ValueError("the webhook provider needs the webhook's URL")
        self._url = httpx.URL(url)
        self.secret = secret
        self.link = link
        self.timeout = timeout
        self._transport = transport
        self._clock = clock
        _HIDDEN.urls.add(str(self._url))
        httpx_logger = logging.getLogger("httpx")
        if _HIDDEN not in httpx_logger.filters:
            httpx_logger.addFilter(_HIDDEN)

    def __repr__(self) -> str:
        return f"WebhookProvider({_masked(self._url)!r})"

    def deliver(self, message: OutgoingMessage) -> Receipt:
        link = ""
        if self.link and message.trial_id:
            link = self.link.replace(TRIAL_ID, urllib.parse.quote(message.trial_id, safe=""))
        body = json.dumps(
            build_payload(message, link), ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
        key = message_hash(message.key)
        headers = {"Content-Type": "application/json; charset=utf-8", IDEMPOTENCY_HEADER: key}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body, int(self._clock()))
        # A client per post: alerts are few, and a kept-alive connection the receiver closed
        # meanwhile would fail the next post as if its outcome were unknown.
        try:
            with httpx.Client(
                timeout=self.timeout, transport=self._transport, follow_redirects=False
            ) as client:
                response = client.post(self._url, content=body, headers=headers)
        except NEVER_SENT as error:
            raise DeliveryError(
                f"could not connect to the webhook: {_reason(error)}", permanent=False
            ) from error
        except (httpx.WriteError, httpx.WriteTimeout) as error:
            # The body was not all written: the receiver cannot have taken the post.
            raise DeliveryError(
                f"the post to the webhook broke off while sending: {_reason(error)}",
                permanent=False,
            ) from error
        except httpx.TimeoutException as error:
            raise DeliveryError(
                f"the webhook did not answer within {self.timeout:g}s, the alert may have been "
                "posted",
                permanent=False,
                in_doubt=True,
            ) from error
        except httpx.RequestError as error:
            raise DeliveryError(
                f"the connection to the webhook broke, the alert may have been posted: "
                f"{_reason(error)}",
                permanent=False,
                in_doubt=True,
            ) from error
        if response.is_success:
            return Receipt(provider=PROVIDER, message_id=key)
        raise _status_error(response)

    def find(self, message: OutgoingMessage, since: datetime) -> Receipt | None:
        raise NotImplementedError("an incoming webhook keeps no record of the posts it took")


def _status_error(response: httpx.Response) -> DeliveryError:
    status = response.status_code
    detail = " ".join(response.text.split())[:200]
    if classify_status(status):
        text = f"the webhook refused the alert ({status})"
        return DeliveryError(f"{text}: {detail}" if detail else text, permanent=True, status=status)
    text = f"the webhook answered {status}"
    return DeliveryError(
        f"{text}: {detail}" if detail else text,
        permanent=False,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        status=status,
    )


def _reason(error: httpx.HTTPError) -> str:
    # httpx's messages name no URL; the class name says what failed when the message is empty.
    return str(error) or type(error).__name__


def _escape(text: str) -> str:
    """Slack's mrkdwn escapes: only these three characters are control characters there."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _sections(text: str) -> list[str]:
    """`text` escaped, in pieces a section takes (cut at line ends when possible), at most
    `SECTIONS_MAX` of them; what does not fit is cut, and the `text` field still has it."""
    chunks: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        piece = _escape(line)
        while piece:
            room = SECTION_MAX - len(current)
            if len(piece) <= room:
                current, piece = current + piece, ""
            elif current:
                chunks.append(current)
                current = ""
            else:
                # One line longer than a section: cut it, never inside an escape (`&amp;`).
                cut = piece.rfind("&", room - 4, room)
                cut = cut if cut > 0 else room
                chunks.append(piece[:cut])
                piece = piece[cut:]
    if current.strip():
        chunks.append(current)
    chunks = [chunk.strip() for chunk in chunks if chunk.strip()]
    if len(chunks) > SECTIONS_MAX:
        chunks = chunks[:SECTIONS_MAX]
        chunks[-1] = chunks[-1][: SECTION_MAX - 1] + "…"
    return chunks


def _masked(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.host}/[REDACTED]"


class _HiddenUrls(logging.Filter):
    """Keeps the webhook URLs (credentials) out of httpx's `HTTP Request: POST <url>` lines."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(str(a) in self.urls for a in record.args):
            record.args = tuple(
                _masked(httpx.URL(str(a))) if str(a) in self.urls else a for a in record.args
            )
        return True


_HIDDEN = _HiddenUrls()


__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "WebhookProvider",
    "build_payload",
    "message_hash",
    "sign",
    "temporal_ui_link",
    "verify_signature",
]

"""A local stand-in for SendGrid and Twilio that fails a set share of requests.

`FaultyProvider` is a `ThreadingHTTPServer` on 127.0.0.1 (a free port) that answers

- SendGrid `POST /v3/mail/send` with 202 and an `X-Message-Id`;
- Twilio `POST /2010-04-01/Accounts/{sid}/Messages.json` with 201 and a Message resource, and
  `GET` on the same path with the accepted messages to a number (what `TwilioProvider.find`
  asks when an attempt's outcome is unknown);

except that, at `FaultPlan.rate`, a send is answered with a fault instead: 429 with
`Retry-After`, 500, 503, or no answer within the client's timeout (a lookup: 500). A faulted
send is never recorded as accepted, except `accepted_timeout` (Twilio only): the message is
accepted, then the answer comes too late, which is the truly in-doubt case `find` must settle.

Whether a request faults is drawn from a `random.Random` seeded with the plan's seed, the
request's idempotency key and how many times that key was seen: the same message meets the
same faults on every run, whatever order the worker's threads send in.
"""

from __future__ import annotations

import json
import random
import re
import threading
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

SENDGRID_PATH = "/v3/mail/send"
TWILIO_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC[0-9a-f]{32})/Messages\.json$")

RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
UNAVAILABLE = "unavailable"
TIMEOUT = "timeout"
ACCEPTED_TIMEOUT = "accepted_timeout"
LOOKUP_ERROR = "lookup_error"

SENDGRID_FAULTS = (RATE_LIMITED, SERVER_ERROR, UNAVAILABLE, TIMEOUT)
"""No `accepted_timeout` for SendGrid: Mail Send has no lookup, so our code learns that a
timed-out send was accepted only from the Event Webhook, which this server does not post. After
`reconcile_after` without an event the send is made again, as it must be when the first one
really was lost: with accept-then-stall here that would be a correct resend counted as a
duplicate."""
TWILIO_FAULTS = (RATE_LIMITED, SERVER_ERROR, UNAVAILABLE, TIMEOUT, ACCEPTED_TIMEOUT)


@dataclass(frozen=True)
class FaultPlan:
    rate: float = 0.30
    """Share of requests (POSTs and lookups) answered with a fault."""
    seed: int = 1
    stall_seconds: float = 2.5
    """How long a timeout keeps the client waiting: more than the client's own timeout (2 s in
    tests/test_faults.py)."""
    retry_after_seconds: int = 1
    script: Mapping[tuple[str, str], Sequence[str | None]] = field(default_factory=dict)
    """Faults set by hand, by (`sendgrid`, key), (`twilio`, key) or (`lookup`, phone number):
    the n-th request gets the n-th entry (None: no fault); later ones are drawn at `rate`."""

    def draw(self, provider: str, key: str, seen: int) -> str | None:
        """The fault for the `seen`-th request (from 0) carrying `key`, or None to accept."""
        scripted = self.script.get((provider, key), ())
        if seen < len(scripted):
            return scripted[seen]
        rng = random.Random(f"{self.seed}:{provider}:{key}:{seen}")
        if rng.random() >= self.rate:
            return None
        return rng.choice(SENDGRID_FAULTS if provider == "sendgrid" else TWILIO_FAULTS)


@dataclass(frozen=True)
class Accepted:
    provider: str
    key: str
    recipient: str
    body: str
    message_id: str
    at: datetime
    resource: dict[str, Any] | None = None
    """Twilio's Message resource as created, listed again by lookups."""


class FaultyProvider:
    """Plays SendGrid and Twilio on one local port; a context manager that starts and stops it.

    `accepted` lists every message the "provider" took, `faults` counts faults by kind,
    `posts` counts send requests by provider and `lookups` counts Twilio list requests.
    """

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self.plan = plan or FaultPlan()
        self.accepted: list[Accepted] = []
        self.faults: Counter[str] = Counter()
        self.posts: Counter[str] = Counter()
        self.lookups = 0
        self.unknown: list[str] = []
        """Requests this server does not play (method and path): a test should expect none."""
        self._seen: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="faulty-provider",
            daemon=True,
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultyProvider:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Stalled handlers wait on this event, so they end now rather than after their stall.
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # --- what happened -------------------------------------------------------------------

    def accepted_keys(self) -> Counter[str]:
        with self._lock:
            return Counter(item.key for item in self.accepted)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            posts = sum(self.posts.values())
            post_faults = sum(n for kind, n in self.faults.items() if kind != LOOKUP_ERROR)
            return {
                "posts": dict(self.posts),
                "accepted": len(self.accepted),
                "faults": dict(sorted(self.faults.items())),
                "post_fault_rate": post_faults / posts if posts else 0.0,
                "lookups": self.lookups,
            }

    # --- decisions -----------------------------------------------------------------------

    def _draw(self, provider: str, key: str) -> str | None:
        with self._lock:
            seen = self._seen[(provider, key)]
            self._seen[(provider, key)] += 1
        return self.plan.draw(provider, key, seen)

    def _count(self, provider: str, fault: str | None) -> None:
        with self._lock:
            self.posts[provider] += 1
            if fault is not None:
                self.faults[fault] += 1

    def _accept(self, item: Accepted) -> None:
        with self._lock:
            self.accepted.append(item)

    def _twilio_listing(self, to: str | None, sent_after: datetime | None) -> list[Any]:
        with self._lock:
            resources = [item.resource for item in self.accepted if item.resource is not None]
        found = [
            resource
            for resource in resources
            if (to is None or resource["to"] == to)
            and (sent_after is None or _after(resource.get("date_sent"), sent_after))
        ]
        # Twilio lists the newest first.
        return list(reversed(found))

    def _stall(self) -> None:
        self._stopping.wait(self.plan.stall_seconds)

    # --- HTTP ----------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                twilio = TWILIO_PATH.match(path)
                if path == SENDGRID_PATH:
                    self._sendgrid(json.loads(raw))
                elif twilio:
                    form = {name: values[0] for name, values in parse_qs(raw.decode()).items()}
                    self._twilio_create(twilio["sid"], form)
                else:
                    self._unknown()

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                twilio = TWILIO_PATH.match(url.path)
                if not twilio:
                    self._unknown()
                    return
                query = {name: values[0] for name, values in parse_qs(url.query).items()}
                to = query.get("To")
                with fake._lock:
                    fake.lookups += 1
                    seen = fake._seen[("lookup", to or "")]
                    fake._seen[("lookup", to or "")] += 1
                if fake.plan.draw("lookup", to or "", seen) is not None:
                    with fake._lock:
                        fake.faults[LOOKUP_ERROR] += 1
                    self._twilio_error(500, 20500, "Internal Server Error")
                    return
                after = query.get("DateSent>") or query.get("DateSent>=")
                sent_after = datetime.fromisoformat(after.replace("Z", "+00:00")) if after else None
                size = int(query.get("PageSize") or 50)
                messages = fake._twilio_listing(to, sent_after)[:size]
                self._json(
                    200,
                    {
                        "messages": messages,
                        "end": max(len(messages) - 1, 0),
                        "first_page_uri": f"{url.path}?PageSize={size}&Page=0",
                        "next_page_uri": None,
                        "page": 0,
                        "page_size": size,
                        "previous_page_uri": None,
                        "start": 0,
                        "uri": f"{url.path}?{url.query}",
                    },
                )

            # --- SendGrid ---

            def _sendgrid(self, payload: dict[str, Any]) -> None:
                key = _sendgrid_key(payload)
                fault = fake._draw("sendgrid", key)
                fake._count("sendgrid", fault)
                if self._fault(fault):
                    return
                message_id = uuid.uuid4().hex[:22]
                fake._accept(
                    Accepted(
                        provider="sendgrid",
                        key=key,
                        recipient=payload["personalizations"][0]["to"][0]["email"],
                        body=payload.get("subject", ""),
                        message_id=message_id,
                        at=datetime.now(UTC),
                    )
                )
                self._reply(202, b"", {"X-Message-Id": message_id})

            # --- Twilio ---

            def _twilio_create(self, account_sid: str, form: dict[str, str]) -> None:
                callback = form.get("StatusCallback", "")
                key = parse_qs(urlsplit(callback).query).get("key", [""])[0]
                fault = fake._draw("twilio", key)
                fake._count("twilio", fault)
                if fault != ACCEPTED_TIMEOUT and self._fault(fault):
                    return
                resource = _twilio_message(account_sid, form)
                fake._accept(
                    Accepted(
                        provider="twilio",
                        key=key,
                        recipient=form["To"],
                        body=form["Body"],
                        message_id=resource["sid"],
                        at=datetime.now(UTC),
                        resource=resource,
                    )
                )
                if fault == ACCEPTED_TIMEOUT:
                    # Taken, but the answer comes after the client gave up: truly in doubt.
                    fake._stall()
                self._json(201, resource)

            # --- answers ---

            def _fault(self, fault: str | None) -> bool:
                """Answers with `fault` (True), or does nothing when there is none (False)."""
                if fault is None:
                    return False
                if fault == RATE_LIMITED:
                    headers = {"Retry-After": str(fake.plan.retry_after_seconds)}
                    self._error(429, "Too Many Requests", headers)
                elif fault == SERVER_ERROR:
                    self._error(500, "Internal Server Error")
                elif fault == UNAVAILABLE:
                    self._error(503, "Service Unavailable")
                else:
                    # Not taken: no answer until the client has given up, then a hang-up.
                    fake._stall()
                    self.close_connection = True
                return True

            def _error(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
                if TWILIO_PATH.match(urlsplit(self.path).path):
                    self._twilio_error(status, 20000 + status, text, headers)
                else:
                    self._json(status, {"errors": [{"field": None, "message": text}]}, headers)

            def _twilio_error(
                self, status: int, code: int, text: str, headers: dict[str, str] | None = None
            ) -> None:
                body = {
                    "code": code,
                    "message": text,
                    "more_info": f"https://www.twilio.com/docs/errors/{code}",
                    "status": status,
                }
                self._json(status, body, headers)

            def _unknown(self) -> None:
                with fake._lock:
                    fake.unknown.append(f"{self.command} {self.path}")
                self._reply(404, b"", {})

            def _json(
                self, status: int, body: object, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode()
                self._reply(status, data, {"Content-Type": "application/json", **(headers or {})})

            def _reply(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (an accepted_timeout answering late)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def _sendgrid_key(payload: dict[str, Any]) -> str:
    """Our idempotency key: the `trialpath_key` custom arg, per personalization or top-level."""
    for personalization in payload.get("personalizations", []):
        key = (personalization.get("custom_args") or {}).get("trialpath_key")
        if key:
            return str(key)
    return str((payload.get("custom_args") or {}).get("trialpath_key", ""))


def _twilio_message(account_sid: str, form: dict[str, str]) -> dict[str, Any]:
    sid = "SM" + uuid.uuid4().hex
    stamp = format_datetime(datetime.now(UTC), usegmt=True)
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": form["Body"],
        "date_created": stamp,
        "date_sent": None,
        "date_updated": stamp,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": form.get("From"),
        "messaging_service_sid": form.get("MessagingServiceSid"),
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {
            "media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"
        },
        "to": form["To"],
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
    }


def _after(date_sent: str | None, since: datetime) -> bool:
    # A queued message has no send date yet: Twilio leaves it out of a DateSent filter.
    return date_sent is not None and parsedate_to_datetime(date_sent) >= since


__all__ = [
    "ACCEPTED_TIMEOUT",
    "LOOKUP_ERROR",
    "RATE_LIMITED",
    "SENDGRID_FAULTS",
    "SERVER_ERROR",
    "TIMEOUT",
    "TWILIO_FAULTS",
    "UNAVAILABLE",
    "Accepted",
    "FaultPlan",
    "FaultyProvider",
]

"""Bearer-key authentication (constant-time comparison) and `Idempotency-Key` replay."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trialpath.entry.api.problems import PROBLEM_JSON
from trialpath.operations.access import MAY, ApiKey, Permission, find_key, may
from trialpath.operations.models import IdempotencyRecord

bearer = HTTPBearer(
    auto_error=False, description="An API key from TRIALPATH_API_KEYS (the secret part)."
)


def key_matches(candidate: str, keys: Sequence[str]) -> bool:
    """Compares against every key in constant time, so timing reveals nothing."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate.encode(), key.encode())
    return found


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiKey:
    """The caller's key (401 without one, 403 for an unknown one), kept on the request for the
    audit log."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            401,
            "send `Authorization: Bearer <api key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = find_key(credentials.credentials, request.app.state.settings.api_keys)
    if key is None:
        raise HTTPException(403, "this API key is not accepted")
    request.state.api_key = key
    return key


def allow(
    permission: Permission, action: str | None = None
) -> Callable[..., Coroutine[Any, Any, ApiKey]]:
    """A dependency: the caller's key, if its role grants `permission` (else 403). `action`
    names the write for the audit log (`trialpath.operations.audit`), recorded once it is
    answered."""

    # Coroutines, like every dependency that does no I/O: FastAPI runs a plain function in its
    # thread pool, two thread hops a request for a comparison of strings.
    async def check(request: Request, key: Annotated[ApiKey, Depends(require_api_key)]) -> ApiKey:
        if action is not None:
            request.state.audit_action = action  # refused attempts are recorded too
        require(key, permission)
        return key

    return check


def require(key: ApiKey, permission: Permission) -> None:
    """403, naming the key and what it may not do, unless its role grants `permission`."""
    if not may(key, permission):
        raise HTTPException(403, f"the key {key.name} ({key.role}) may not {MAY[permission]}")


class BodyLimit:
    """Refuses bodies over the limit with 413, whether announced by Content-Length or not.

    `limits` gives other limits by path prefix (provider webhooks send batches of events)."""

    def __init__(self, app: ASGIApp, limit: int, limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.default = limit
        self.limits = limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        limit = next(
            (v for prefix, v in self.limits.items() if path.startswith(prefix)), self.default
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _too_large(send, limit)
            return
        seen = 0
        responded = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal responded
            responded = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not responded:
                await _too_large(send, limit)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    await _problem(send, 413, "Payload too large", f"the body is over {limit // 1024} KiB")


class Idempotency:
    """Replays the stored answer to a POST repeated with the same `Idempotency-Key` and body;
    the same key with a different body is a 409. Keys are scoped to the API key used."""

    def __init__(self, app: ASGIApp, engine: Engine, keys: Sequence[ApiKey]) -> None:
        self.app = app
        self.engine = engine
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", []))
        header = headers.get(b"idempotency-key")
        auth = headers.get(b"authorization", b"").decode(errors="replace")
        api_key = auth[7:] if auth.lower().startswith("bearer ") else ""
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or header is None
            or find_key(api_key, self.keys) is None
        ):
            await self.app(scope, receive, send)
            return
        if not 1 <= len(header) <= 255:
            await _problem(
                send, 422, "Invalid request", "Idempotency-Key must be 1 to 255 characters"
            )
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        record_key = hashlib.sha256(api_key.encode() + b"\0" + header).hexdigest()
        request_hash = hashlib.sha256(scope["path"].encode() + b"\0" + body).hexdigest()
        user_id = _user_of(scope["path"], body)
        existing = await asyncio.to_thread(self._claim, record_key, request_hash, user_id)
        if existing is not None:
            if existing.request_hash != request_hash:
                await _problem(
                    send, 409, "Conflict", "this Idempotency-Key was used with a different request"
                )
            elif existing.status_code is None:
                await _problem(
                    send,
                    409,
                    "Conflict",
                    "a request with this Idempotency-Key is still being processed",
                )
            else:
                await _replay(send, existing)
            return

        status = 500
        content_type = "application/json"
        parts: list[bytes] = []

        async def replay_receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = message["status"]
                content_type = MutableHeaders(raw=message["headers"]).get(
                    "content-type", content_type
                )
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        finally:
            await asyncio.to_thread(self._settle, record_key, status, b"".join(parts), content_type)

    def _claim(self, key: str, request_hash: str, user_id: str | None) -> IdempotencyRecord | None:
        with Session(self.engine) as session:
            session.add(IdempotencyRecord(key=key, request_hash=request_hash, user_id=user_id))
            try:
                session.commit()
                return None
            except IntegrityError:
                session.rollback()
                return session.get(IdempotencyRecord, key)

    def _settle(self, key: str, status: int, body: bytes, content_type: str) -> None:
        with Session(self.engine) as session:
            record = session.get(IdempotencyRecord, key)
            if record is None:
                return
            if status >= 500:
                # A failure the client may retry: forget the key so the retry runs again.
                session.delete(record)
            else:
                record.status_code = status
                record.body = body.decode()
                record.content_type = content_type
                session.add(record)
            session.commit()


_USER_PATH = re.compile(r"^/v1/(?:trials|users)/([A-Za-z0-9._:-]{1,128})(?:/|$)")


def _user_of(path: str, body: bytes) -> str | None:
    """Whose request this is (from the path, or a start's body), so erasing that user also
    deletes the answer stored for a retry (it may hold their address)."""
    found = _USER_PATH.match(path)
    if found:
        return found.group(1)
    if path.rstrip("/") == "/v1/trials" and len(body) <= 1_000_000:
        try:
            user_id = json.loads(body).get("user_id")
        except (ValueError, AttributeError):
            return None
        if isinstance(user_id, str) and 1 <= len(user_id) <= 128:
            return user_id
    return None


async def _replay(send: Send, record: IdempotencyRecord) -> None:
    body = (record.body or "").encode()
    await send(
        {
            "type": "http.response.start",
            "status": record.status_code,
            "headers": [
                (b"content-type", (record.content_type or "application/json").encode()),
                (b"content-length", str(len(body)).encode()),
                (b"idempotent-replayed", b"true"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _problem(send: Send, status: int, title: str, detail: str) -> None:
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""The codec server: lets the Temporal UI (and `temporal --codec-endpoint`) show encrypted
payloads decrypted, to the people allowed to see them.

The remote codec protocol: `POST …/encode` and `POST …/decode` take and return
`{"payloads": [...]}`, protobuf JSON of `temporal.api.common.v1.Payloads`; only the last path
segment counts. The UI calls it from the browser, so CORS allows one origin, the UI's
(`TRIALPATH_CODEC_CORS_ORIGIN`).

Who may decrypt: a caller sending `Authorization: Bearer <key>` with a key from
`TRIALPATH_CODEC_AUTH_KEYS` (the CLI: `--codec-auth "Bearer <key>"`), or a browser that entered
such a key on this server's page (`GET /`): the browser then gets an HttpOnly cookie holding
a signed session token (never the key itself), valid 8 hours and only while its key is still
configured, which the UI sends when started with `TEMPORAL_CODEC_INCLUDE_CREDENTIALS=true`.
Without keys the server only listens on the loopback interface. Bodies are bounded (413) and
read only after the caller is known, except the small key form.
"""

from __future__ import annotations

import hashlib
import html
import logging
import secrets
from collections.abc import Sequence
from urllib.parse import parse_qs

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads

from trialpath.entry.api.security import key_matches
from trialpath.operations.codec import (
    CodecError,
    CodecKeyError,
    EncryptionCodec,
    codec_from_settings,
)
from trialpath.operations.config import Settings

log = logging.getLogger("trialpath.codec_server")
COOKIE = "trialpath_codec_key"
COOKIE_MAX_AGE = 8 * 3600
MAX_BODY = 4 * 1024 * 1024
"""Largest encode/decode request: Temporal's own limit for a payload is 2 MiB."""
MAX_FORM = 4096
"""Largest key form: it is read before the caller is known."""
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
ALLOWED_HEADERS = "authorization, content-type, x-namespace"


class CodecServerError(RuntimeError):
    """The codec server cannot start with these settings; the message says why."""


def check_exposure(settings: Settings, host: str) -> None:
    """Without auth keys anyone who can reach the port can decrypt: loopback only then."""
    if not settings.codec_auth_keys and host not in LOOPBACK:
        raise CodecServerError(
            f"TRIALPATH_CODEC_AUTH_KEYS is empty, so the codec server would decrypt payloads "
            f"for anyone reaching {host}; without keys it only listens on 127.0.0.1. "
            "Set TRIALPATH_CODEC_AUTH_KEYS to listen on another address."
        )


class BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes whatever Content-Length claims."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def create_codec_app(settings: Settings) -> Starlette:
    codec = codec_from_settings(settings)
    if codec is not None:
        codec.require = False  # It shows histories as they are, unencrypted parts included.
    keys: Sequence[str] = settings.codec_auth_keys
    origin = settings.codec_cors_origin.strip().rstrip("/")
    # Sessions are signed with a secret of this process: a restart signs everyone out.
    sessions = URLSafeTimedSerializer(secrets.token_bytes(32), salt="trialpath-codec-session")

    def session_valid(token: str) -> bool:
        try:
            fingerprint = sessions.loads(token, max_age=COOKIE_MAX_AGE)
        except BadSignature:
            return False
        # Only while the key it was made from is still configured (rotation ends sessions).
        return any(secrets.compare_digest(fingerprint, _fingerprint(k)) for k in keys)

    def cors(request: Request, response: Response) -> Response:
        response.headers["Vary"] = "Origin"
        if origin and request.headers.get("origin") == origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
        return response

    def problem(request: Request, status: int, detail: str) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        body = {"title": detail, "status": status}
        return cors(request, JSONResponse(body, status, headers, "application/problem+json"))

    def allowed(request: Request) -> bool | None:
        """True: a valid key; False: a wrong one; None: none given."""
        if not keys:
            return True
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return key_matches(credentials.strip(), keys)
        cookie = request.cookies.get(COOKIE)
        if cookie:
            return session_valid(cookie)
        return None

    async def preflight(request: Request) -> Response:
        if not origin or request.headers.get("origin") != origin:
            return Response("origin not allowed", 403, {"Vary": "Origin"})
        response = Response(status_code=204)
        response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
        return cors(request, response)

    async def transcode(request: Request) -> Response:
        if request.method == "OPTIONS":
            return await preflight(request)
        verdict = allowed(request)
        if verdict is None:
            return problem(request, 401, "send `Authorization: Bearer <codec key>`")
        if not verdict:
            return problem(request, 403, "this key may not use the codec server")
        operation = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        try:
            payloads = json_format.Parse(await _read_body(request, MAX_BODY), Payloads())
        except BodyTooLarge:
            return problem(request, 413, f"the body is over {MAX_BODY} bytes")
        except (json_format.ParseError, DecodeError, UnicodeDecodeError) as err:
            return problem(request, 400, f"the body is not protobuf JSON Payloads: {err}")
        try:
            converted = await _convert(codec, operation, list(payloads.payloads))
        except (CodecError, CodecKeyError) as err:
            log.warning("codec server could not %s: %s", operation, err)
            return problem(request, 422, str(err))
        body = json_format.MessageToJson(Payloads(payloads=converted))
        return cors(request, Response(body, media_type="application/json"))

    async def page(request: Request) -> Response:
        state = {True: "accepted", False: "not accepted", None: "not set"}[allowed(request)]
        return HTMLResponse(_PAGE.format(state=html.escape(state), origin=html.escape(origin)))

    async def session(request: Request) -> Response:
        """Keeps an accepted key in a cookie the UI's requests then carry (same site)."""
        try:
            form = parse_qs((await _read_body(request, MAX_FORM)).decode(errors="replace"))
        except BodyTooLarge:
            return HTMLResponse(_PAGE.format(state="not accepted", origin=html.escape(origin)), 413)
        key = (form.get("key") or [""])[0].strip()
        if not keys or not key_matches(key, keys):
            return HTMLResponse(_PAGE.format(state="not accepted", origin=html.escape(origin)), 403)
        response = HTMLResponse(_PAGE.format(state="accepted", origin=html.escape(origin)))
        response.set_cookie(
            COOKIE,
            sessions.dumps(_fingerprint(key)),
            max_age=COOKIE_MAX_AGE,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "encrypting": codec is not None})

    return Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/session", session, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/{prefix:path}/encode", transcode, methods=["POST", "OPTIONS"]),
            Route("/{prefix:path}/decode", transcode, methods=["POST", "OPTIONS"]),
            Route("/encode", transcode, methods=["POST", "OPTIONS"]),
            Route("/decode", transcode, methods=["POST", "OPTIONS"]),
        ]
    )


async def _convert(
    codec: EncryptionCodec | None, operation: str, payloads: list[Payload]
) -> list[Payload]:
    if codec is None:  # Nothing is encrypted: payloads pass through.
        return payloads
    if operation == "encode":
        return await codec.encode(payloads)
    return await codec.decode(payloads)


def serve_codec(settings: Settings, host: str, port: int) -> None:
    """Runs the codec server until Ctrl-C or SIGTERM."""
    import uvicorn

    from trialpath.operations.logs import configure_from_settings

    check_exposure(settings, host)
    app = create_codec_app(settings)  # Bad keys fail here, before anything listens.
    configure_from_settings(settings)
    if not settings.codec_auth_keys:
        log.warning("no TRIALPATH_CODEC_AUTH_KEYS: anyone on this machine can decrypt payloads")
    if codec_from_settings(settings) is None:
        log.warning("no TRIALPATH_CODEC_KEYS: payloads are not encrypted, they pass through")
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Trialpath codec server</title></head>
<body style="font-family: sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>Trialpath codec server</h1>
<p>Decrypts workflow payloads for the Temporal UI at <code>{origin}</code>.
Key for this browser: <strong>{state}</strong>.</p>
<form method="post" action="/session">
<label>Codec access key <input name="key" type="password" autocomplete="off" required></label>
<button type="submit">Use this key</button>
</form>
<p>The UI sends the key when it runs with <code>TEMPORAL_CODEC_INCLUDE_CREDENTIALS=true</code>;
command-line tools send <code>Authorization: Bearer &lt;key&gt;</code>.</p>
</body></html>
"""

"""The client's errors: `TrialpathError` and a subclass for each kind of error answer, read
from the API's RFC 9457 problem bodies by `error_for`, or raised when the API cannot be reached."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx


class TrialpathError(Exception):
    """An error answer of the API (its RFC 9457 problem body parsed), or no answer at all.

    `status` is the HTTP status, or None when the API could not be reached; `errors` lists the
    invalid fields (`{"field": ..., "message": ...}`) when the API named them."""

    def __init__(
        self,
        status: int | None,
        title: str,
        detail: str,
        errors: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{status or 'no answer'} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors: list[dict[str, Any]] = [dict(e) for e in errors or ()]


class NotFound(TrialpathError):
    """404: no trial for this user."""


class Conflict(TrialpathError):
    """409: the trial has ended, exists with other data, or the Idempotency-Key was reused."""


class InvalidRequest(TrialpathError):
    """400, 413 or 422: the request was refused as invalid; `errors` names the fields."""


class Unauthorized(TrialpathError):
    """401 (no API key sent) or 403 (the key is not accepted)."""


class Unavailable(TrialpathError):
    """503 (Temporal or the database is unreachable), or the API itself could not be reached."""


_ERRORS: dict[int, type[TrialpathError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    503: Unavailable,
}


def error_for(response: httpx.Response) -> TrialpathError:
    """The exception for an error answer, from its problem body when it has one (the demo and
    the synthetic population read the API's answers with it too)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    errors = body.get("errors")
    kind = _ERRORS.get(response.status_code, TrialpathError)
    return kind(
        response.status_code,
        str(body.get("title") or response.reason_phrase or "Error"),
        str(body.get("detail") or response.text.strip() or response.reason_phrase),
        [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else None,
    )


def _unreachable(err: httpx.TransportError) -> Unavailable:
    return Unavailable(None, "Unreachable", f"{err.__class__.__name__}: {err}".rstrip(": "))

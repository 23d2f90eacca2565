"""RFC 9457 problem details for every error the API answers."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from trialpath.entry.commands import TrialProblem

PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    """An RFC 9457 problem: `title` says what kind of error, `detail` what exactly."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


def problem(
    status: int,
    title: str,
    detail: str,
    request: Request | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path if request else None,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    return ".".join(parts[:1]) + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts[1:])


async def validation_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        field = _field(error.get("loc", ()))
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "json_invalid":
            message = "the body is not valid JSON"
        errors.append({"field": field, "message": message})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return problem(422, "Invalid request", detail, request, errors)


async def trial_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TrialProblem)
    errors = [{"field": exc.field, "message": exc.detail}] if exc.field else None
    return problem(exc.status, exc.title, exc.detail, request, errors)


async def http_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot decode (not UTF-8): malformed input like bad JSON.
        message = "the body is not valid JSON (it must be UTF-8 encoded)"
        return problem(
            422,
            "Invalid request",
            f"body: {message}",
            request,
            [{"field": "body", "message": message}],
        )
    titles = {401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed"}
    title = titles.get(exc.status_code, "Error")
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        # Starlette names the methods of the first route on the path only (POST /v1/trials
        # said `Allow: POST`, forgetting GET): name those of every route on it.
        headers["Allow"] = ", ".join(_methods_on(request))
    return problem(exc.status_code, title, str(exc.detail), request, headers=headers or None)


def _methods_on(request: Request) -> list[str]:
    path = request.url.path
    methods: set[str] = set()
    for pattern, allowed in getattr(request.app.state, "route_methods", ()):
        if pattern.match(path):
            methods |= allowed
    return sorted(methods)


async def unexpected_problem(request: Request, exc: Exception) -> JSONResponse:
    return problem(
        500, "Internal error", "an unexpected error occurred; it has been logged", request
    )

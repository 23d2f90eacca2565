"""A typed Python client for the Trialpath HTTP API (`/v1`), sync and async.

    from trialpath.client import Trialpath
    with Trialpath("http://127.0.0.1:8000", api_key="...") as tp:
        tp.start_trial("user-42", "ada@example.com", name="Ada Lovelace")
        tp.track("user-42", "integration_connected")
        print(tp.get("user-42").stage)

`AsyncTrialpath` has the same methods, to be awaited (`async with AsyncTrialpath(...) as tp:`).
Every method returns the API's own pydantic models and raises a `TrialpathError` subclass for
an error answer (an RFC 9457 problem) or when the API cannot be reached.

The request each method sends is built by the pure functions below (`_start_trial`,
`_track`...), shared by both classes, which only send it and parse the answer.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, RootModel
from pydantic_core import to_jsonable_python

from trialpath.core.contract import (
    Acquisition,
    Locale,
    Qualification,
    QualifyResult,
    Stage,
    TrialStatus,
    UnsubscribeChannel,
)
from trialpath.core.definition import Challenge, Persona, Urgency
from trialpath.entry.commands import (
    MAX_EVENTS_PER_REQUEST,
    Accepted,
    Erased,
    EventsAccepted,
    NewEvent,
    TrialCreated,
    TrialPage,
    TrialSummary,
)
from trialpath.messages.guidance import Checklist, WidgetToken
from trialpath.support.agents import AgentPublic, AgentSettings

__all__ = [
    "AsyncTrialpath",
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "Trialpath",
    "TrialpathError",
    "Unauthorized",
    "Unavailable",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
API_KEY_ENV = "TRIALPATH_API_KEY"

ModelT = TypeVar("ModelT", bound=BaseModel)
TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)


# --- Errors ----------------------------------------------------------------------------------


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


# --- Requests (pure, shared by both clients) -------------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[ModelT]):
    """One HTTP request and the model its successful answer is parsed into."""

    method: str
    path: str
    model: type[ModelT]
    json: Any = None
    params: Mapping[str, Any] | None = None
    idempotency_key: str | None = None

    def options(self) -> dict[str, Any]:
        """Keyword arguments for `httpx.Client.request` / `httpx.AsyncClient.request`."""
        headers = {"Idempotency-Key": self.idempotency_key} if self.idempotency_key else None
        return {
            "method": self.method,
            "url": self.path,
            "json": self.json,
            "params": self.params,
            "headers": headers,
        }

    def parse(self, response: httpx.Response) -> ModelT:
        if not response.is_success:
            raise error_for(response)
        try:
            return self.model.model_validate_json(response.content)
        except ValueError as err:
            raise TrialpathError(
                response.status_code,
                "Unexpected answer",
                f"the answer is not a valid {self.model.__name__}: {err}",
            ) from err


class _Health(BaseModel):
    status: str


def _compact(**fields: Any) -> dict[str, Any]:
    """JSON-ready fields, leaving out those not given (None), so the API applies its defaults."""
    data: dict[str, Any] = to_jsonable_python(
        {k: v for k, v in fields.items() if v is not None}, exclude_none=True
    )
    return data


def _trial_path(user_id: str, *tail: str) -> str:
    if not user_id:
        raise ValueError("user_id is empty")
    return "/".join(("/v1/trials", quote(user_id, safe=""), *tail))


def _start_trial(
    user_id: str,
    email: str,
    name: str,
    phone: str | None,
    locale: Locale,
    timezone: str,
    company: str,
    trial_days: int | None,
    qualification: Mapping[str, Any] | Qualification | None,
    idempotency_key: str | None,
    source: Mapping[str, Any] | Acquisition | None = None,
) -> _Call[TrialCreated]:
    body = _compact(
        user_id=user_id,
        email=email,
        name=name,
        phone=phone,
        locale=locale,
        timezone=timezone,
        company=company,
        trial_days=trial_days,
        qualification=qualification,
        source=source,
    )
    return _Call("POST", "/v1/trials", TrialCreated, json=body, idempotency_key=idempotency_key)


def _qualify(
    user_id: str,
    role: Persona,
    challenge: Challenge,
    urgency: Urgency,
    idempotency_key: str | None,
) -> _Call[QualifyResult]:
    body = _compact(role=role, challenge=challenge, urgency=urgency)
    path = _trial_path(user_id, "qualification")
    return _Call("POST", path, QualifyResult, json=body, idempotency_key=idempotency_key)


def _track(
    user_id: str,
    name: str,
    occurred_at: datetime | None,
    properties: Mapping[str, Any] | None,
    idempotency_key: str | None,
) -> _Call[EventsAccepted]:
    """One event. Its idempotency key is the event's own (the API stores it once per user and
    key); it is not sent as the Idempotency-Key header, whose scope is the whole API key: two
    users' events may share a key such as "first-login"."""
    body = _compact(
        name=name,
        occurred_at=occurred_at,
        properties=properties,
        idempotency_key=idempotency_key,
    )
    path = _trial_path(user_id, "events")
    return _Call("POST", path, EventsAccepted, json=body)


def _track_many(
    user_id: str,
    events: Sequence[NewEvent | Mapping[str, Any]],
    idempotency_key: str | None,
) -> list[_Call[EventsAccepted]]:
    """Requests of at most MAX_EVENTS_PER_REQUEST events; each gets its own Idempotency-Key
    (`key`, or `key:1`, `key:2`... when split), since one key cannot cover two bodies."""
    bodies = [
        event.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        if isinstance(event, NewEvent)
        else _compact(**event)
        for event in events
    ]
    batches = [
        bodies[i : i + MAX_EVENTS_PER_REQUEST]
        for i in range(0, len(bodies), MAX_EVENTS_PER_REQUEST)
    ]
    path = _trial_path(user_id, "events")
    return [
        _Call(
            "POST",
            path,
            EventsAccepted,
            json=batch,
            idempotency_key=(
                f"{idempotency_key}:{n}"
                if idempotency_key and len(batches) > 1
                else idempotency_key
            ),
        )
        for n, batch in enumerate(batches, start=1)
    ]


def _merged(results: Sequence[EventsAccepted]) -> EventsAccepted:
    return EventsAccepted(
        accepted=sum(r.accepted for r in results),
        duplicates=sum(r.duplicates for r in results),
        events=[event for r in results for event in r.events],
    )


def _command(
    user_id: str, endpoint: str, idempotency_key: str | None, **fields: Any
) -> _Call[Accepted]:
    """A command that the API turns into a workflow signal (call, extension, conversion...)."""
    path = _trial_path(user_id, endpoint)
    return _Call("POST", path, Accepted, json=_compact(**fields), idempotency_key=idempotency_key)


def _cancel(user_id: str, reason: str | None, erase: bool) -> _Call[Erased]:
    params = _compact(erase=erase, reason=reason)
    return _Call("DELETE", _trial_path(user_id), Erased, params=params)


def _get(user_id: str) -> _Call[TrialStatus]:
    return _Call("GET", _trial_path(user_id), TrialStatus)


def _user_path(user_id: str, tail: str) -> str:
    if not user_id:
        raise ValueError("user_id is empty")
    return f"/v1/users/{quote(user_id, safe='')}/{tail}"


def _checklist(user_id: str) -> _Call[Checklist]:
    return _Call("GET", _user_path(user_id, "checklist"), Checklist)


def _widget_token(user_id: str) -> _Call[WidgetToken]:
    return _Call("POST", _user_path(user_id, "widget-token"), WidgetToken)


def _list(
    stage: Stage | None,
    persona: Persona | None,
    activated: bool | None,
    page_size: int,
    page_token: str | None,
) -> _Call[TrialPage]:
    params = _compact(
        stage=stage,
        persona=persona,
        activated=activated,
        page_size=page_size,
        page_token=page_token,
    )
    return _Call("GET", "/v1/trials", TrialPage, params=params)


_HEALTHZ = _Call("GET", "/v1/healthz", _Health)


class _Agents(RootModel[list[AgentPublic]]):
    pass


_AGENTS = _Call("GET", "/v1/agents", _Agents)


def _agent_path(name: str) -> str:
    if not name:
        raise ValueError("the agent's name is empty")
    return f"/v1/agents/{quote(name, safe='')}"


def _set_agent(name: str, settings: AgentSettings) -> _Call[AgentPublic]:
    return _Call("PUT", _agent_path(name), AgentPublic, json=settings.model_dump(mode="json"))


def _remove_agent(name: str) -> _Call[AgentPublic]:
    return _Call("DELETE", _agent_path(name), AgentPublic)


_READYZ = _Call("GET", "/v1/readyz", _Health)


def _http_options(base_url: str, api_key: str | None, timeout: float) -> dict[str, Any]:
    """Keyword arguments shared by the `httpx.Client` and `httpx.AsyncClient` of the clients."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    headers = {"Accept": "application/json, application/problem+json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return {"base_url": base_url, "headers": headers, "timeout": timeout}


def _transport(transport: object, kind: type[TransportT]) -> TransportT | None:
    if transport is None:
        return None
    if not isinstance(transport, kind):
        raise TypeError(f"transport must be an {kind.__module__}.{kind.__name__}")
    return transport


# --- Clients ---------------------------------------------------------------------------------


class Trialpath:
    """Synchronous client. `api_key` defaults to the TRIALPATH_API_KEY environment variable."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            transport=_transport(transport, httpx.BaseTransport),
            **_http_options(base_url, api_key, timeout),
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, call: _Call[ModelT]) -> ModelT:
        try:
            response = self._http.request(**call.options())
        except httpx.TransportError as err:
            raise _unreachable(err) from err
        return call.parse(response)

    def start_trial(
        self,
        user_id: str,
        email: str,
        *,
        name: str,
        phone: str | None = None,
        locale: Locale = "en",
        timezone: str = "UTC",
        company: str = "",
        trial_days: int | None = None,
        qualification: Mapping[str, Any] | Qualification | None = None,
        idempotency_key: str | None = None,
        source: Mapping[str, Any] | Acquisition | None = None,
    ) -> TrialCreated:
        """Starts the trial; succeeds too if it already runs with the same data (else
        `Conflict`). `source`: where the user came from (`utm_source`, `utm_medium`,
        `utm_campaign`, `referrer`, `landing_page`)."""
        return self._request(
            _start_trial(
                user_id,
                email,
                name,
                phone,
                locale,
                timezone,
                company,
                trial_days,
                qualification,
                idempotency_key,
                source,
            )
        )

    def qualify(
        self,
        user_id: str,
        role: Persona,
        challenge: Challenge,
        urgency: Urgency,
        *,
        idempotency_key: str | None = None,
    ) -> QualifyResult:
        return self._request(_qualify(user_id, role, challenge, urgency, idempotency_key))

    def track(
        self,
        user_id: str,
        name: str,
        *,
        occurred_at: datetime | None = None,
        properties: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> EventsAccepted:
        return self._request(_track(user_id, name, occurred_at, properties, idempotency_key))

    def track_many(
        self,
        user_id: str,
        events: Sequence[NewEvent | Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> EventsAccepted:
        """Sends the events in order, 100 per request, and merges the answers. If a request
        fails, the earlier ones stay accepted: give events idempotency keys to retry safely."""
        calls = _track_many(user_id, events, idempotency_key)
        return _merged([self._request(call) for call in calls])

    def call_booked(
        self,
        user_id: str,
        at: datetime,
        agent: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Accepted:
        return self._request(
            _command(user_id, "call", idempotency_key, action="booked", at=at, agent=agent)
        )

    def call_rescheduled(
        self, user_id: str, at: datetime, *, idempotency_key: str | None = None
    ) -> Accepted:
        return self._request(
            _command(user_id, "call", idempotency_key, action="rescheduled", at=at)
        )

    def call_completed(
        self, user_id: str, notes: str | None = None, *, idempotency_key: str | None = None
    ) -> Accepted:
        return self._request(
            _command(user_id, "call", idempotency_key, action="completed", notes=notes)
        )

    def call_no_show(self, user_id: str, *, idempotency_key: str | None = None) -> Accepted:
        return self._request(_command(user_id, "call", idempotency_key, action="no_show"))

    def extend(self, user_id: str, days: int, *, idempotency_key: str | None = None) -> Accepted:
        return self._request(_command(user_id, "extension", idempotency_key, days=days))

    def convert(
        self,
        user_id: str,
        plan: str,
        mrr: float | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Accepted:
        return self._request(_command(user_id, "conversion", idempotency_key, plan=plan, mrr=mrr))

    def unsubscribe(
        self, user_id: str, channel: UnsubscribeChannel, *, idempotency_key: str | None = None
    ) -> Accepted:
        return self._request(_command(user_id, "unsubscribe", idempotency_key, channel=channel))

    def cancel(self, user_id: str, *, reason: str | None = None, erase: bool = False) -> Erased:
        return self._request(_cancel(user_id, reason, erase))

    def get(self, user_id: str) -> TrialStatus:
        return self._request(_get(user_id))

    def checklist(self, user_id: str) -> Checklist:
        """The user's onboarding checklist (docs/in-app.md)."""
        return self._request(_checklist(user_id))

    def widget_token(self, user_id: str) -> WidgetToken:
        """A short-lived token for the in-app widget of this user, to put in the page."""
        return self._request(_widget_token(user_id))

    def list(
        self,
        *,
        stage: Stage | None = None,
        persona: Persona | None = None,
        activated: bool | None = None,
        page_size: int = 50,
        page_token: str | None = None,
    ) -> TrialPage:
        return self._request(_list(stage, persona, activated, page_size, page_token))

    def iter_trials(
        self,
        *,
        stage: Stage | None = None,
        persona: Persona | None = None,
        activated: bool | None = None,
        page_size: int = 50,
    ) -> Iterator[TrialSummary]:
        """Every trial matching the filters, page after page."""
        token: str | None = None
        while True:
            page = self._request(_list(stage, persona, activated, page_size, token))
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    def agents(self) -> Sequence[AgentPublic]:
        """The success-call agents: hours, time zone, days, daily capacity, calls to come."""
        return self._request(_AGENTS).root

    def set_agent(self, name: str, settings: AgentSettings) -> AgentPublic:
        """Creates or replaces an agent's settings."""
        return self._request(_set_agent(name, settings))

    def remove_agent(self, name: str) -> AgentPublic:
        """Removes an agent (no new calls; calls already booked keep them); NotFound if none."""
        return self._request(_remove_agent(name))

    def healthy(self) -> bool:
        """Whether the API process answers (False when it cannot be reached)."""
        try:
            return self._request(_HEALTHZ).status == "ok"
        except Unavailable:
            return False

    def ready(self) -> bool:
        """Whether Temporal and the database answer the API (False on 503 or no answer)."""
        try:
            return self._request(_READYZ).status == "ready"
        except Unavailable:
            return False


class AsyncTrialpath:
    """Asynchronous client: the methods of `Trialpath`, to be awaited."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            transport=_transport(transport, httpx.AsyncBaseTransport),
            **_http_options(base_url, api_key, timeout),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, call: _Call[ModelT]) -> ModelT:
        try:
            response = await self._http.request(**call.options())
        except httpx.TransportError as err:
            raise _unreachable(err) from err
        return call.parse(response)

    async def start_trial(
        self,
        user_id: str,
        email: str,
        *,
        name: str,
        phone: str | None = None,
        locale: Locale = "en",
        timezone: str = "UTC",
        company: str = "",
        trial_days: int | None = None,
        qualification: Mapping[str, Any] | Qualification | None = None,
        idempotency_key: str | None = None,
        source: Mapping[str, Any] | Acquisition | None = None,
    ) -> TrialCreated:
        """Starts the trial; succeeds too if it already runs with the same data (else
        `Conflict`). `source`: where the user came from (`utm_source`, `utm_medium`,
        `utm_campaign`, `referrer`, `landing_page`)."""
        return await self._request(
            _start_trial(
                user_id,
                email,
                name,
                phone,
                locale,
                timezone,
                company,
                trial_days,
                qualification,
                idempotency_key,
                source,
            )
        )

    async def qualify(
        self,
        user_id: str,
        role: Persona,
        challenge: Challenge,
        urgency: Urgency,
        *,
        idempotency_key: str | None = None,
    ) -> QualifyResult:
        return await self._request(_qualify(user_id, role, challenge, urgency, idempotency_key))

    async def track(
        self,
        user_id: str,
        name: str,
        *,
        occurred_at: datetime | None = None,
        properties: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> EventsAccepted:
        return await self._request(_track(user_id, name, occurred_at, properties, idempotency_key))

    async def track_many(
        self,
        user_id: str,
        events: Sequence[NewEvent | Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> EventsAccepted:
        """Sends the events in order, 100 per request, and merges the answers. If a request
        fails, the earlier ones stay accepted: give events idempotency keys to retry safely."""
        calls = _track_many(user_id, events, idempotency_key)
        return _merged([await self._request(call) for call in calls])

    async def call_booked(
        self,
        user_id: str,
        at: datetime,
        agent: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Accepted:
        return await self._request(
            _command(user_id, "call", idempotency_key, action="booked", at=at, agent=agent)
        )

    async def call_rescheduled(
        self, user_id: str, at: datetime, *, idempotency_key: str | None = None
    ) -> Accepted:
        return await self._request(
            _command(user_id, "call", idempotency_key, action="rescheduled", at=at)
        )

    async def call_completed(
        self, user_id: str, notes: str | None = None, *, idempotency_key: str | None = None
    ) -> Accepted:
        return await self._request(
            _command(user_id, "call", idempotency_key, action="completed", notes=notes)
        )

    async def call_no_show(self, user_id: str, *, idempotency_key: str | None = None) -> Accepted:
        return await self._request(_command(user_id, "call", idempotency_key, action="no_show"))

    async def extend(
        self, user_id: str, days: int, *, idempotency_key: str | None = None
    ) -> Accepted:
        return await self._request(_command(user_id, "extension", idempotency_key, days=days))

    async def convert(
        self,
        user_id: str,
        plan: str,
        mrr: float | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Accepted:
        return await self._request(
            _command(user_id, "conversion", idempotency_key, plan=plan, mrr=mrr)
        )

    async def unsubscribe(
        self, user_id: str, channel: UnsubscribeChannel, *, idempotency_key: str | None = None
    ) -> Accepted:
        return await self._request(
            _command(user_id, "unsubscribe", idempotency_key, channel=channel)
        )

    async def cancel(
        self, user_id: str, *, reason: str | None = None, erase: bool = False
    ) -> Erased:
        return await self._request(_cancel(user_id, reason, erase))

    async def get(self, user_id: str) -> TrialStatus:
        return await self._request(_get(user_id))

    async def checklist(self, user_id: str) -> Checklist:
        """The user's onboarding checklist (docs/in-app.md)."""
        return await self._request(_checklist(user_id))

    async def widget_token(self, user_id: str) -> WidgetToken:
        """A short-lived token for the in-app widget of this user, to put in the page."""
        return await self._request(_widget_token(user_id))

    async def list(
        self,
        *,
        stage: Stage | None = None,
        persona: Persona | None = None,
        activated: bool | None = None,
        page_size: int = 50,
        page_token: str | None = None,
    ) -> TrialPage:
        return await self._request(_list(stage, persona, activated, page_size, page_token))

    async def iter_trials(
        self,
        *,
        stage: Stage | None = None,
        persona: Persona | None = None,
        activated: bool | None = None,
        page_size: int = 50,
    ) -> AsyncIterator[TrialSummary]:
        """Every trial matching the filters, page after page."""
        token: str | None = None
        while True:
            page = await self._request(_list(stage, persona, activated, page_size, token))
            for item in page.items:
                yield item
            token = page.next_page_token
            if not token:
                return

    async def agents(self) -> Sequence[AgentPublic]:
        """The success-call agents: hours, time zone, days, daily capacity, calls to come."""
        return (await self._request(_AGENTS)).root

    async def set_agent(self, name: str, settings: AgentSettings) -> AgentPublic:
        """Creates or replaces an agent's settings."""
        return await self._request(_set_agent(name, settings))

    async def remove_agent(self, name: str) -> AgentPublic:
        """Removes an agent (no new calls; calls already booked keep them); NotFound if none."""
        return await self._request(_remove_agent(name))

    async def healthy(self) -> bool:
        """Whether the API process answers (False when it cannot be reached)."""
        try:
            return (await self._request(_HEALTHZ)).status == "ok"
        except Unavailable:
            return False

    async def ready(self) -> bool:
        """Whether Temporal and the database answer the API (False on 503 or no answer)."""
        try:
            return (await self._request(_READYZ)).status == "ready"
        except Unavailable:
            return False

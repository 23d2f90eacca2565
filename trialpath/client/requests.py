"""The requests the clients send, built by pure functions shared by both clients: each a `_Call`
(method, path, body and the model its answer is parsed into); and the options of their HTTP
connections."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, RootModel
from pydantic_core import to_jsonable_python

from trialpath.client.errors import TrialpathError, error_for
from trialpath.core.contract import (
    Acquisition,
    Locale,
    Qualification,
    QualifyResult,
    Stage,
    TrialStatus,
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
)
from trialpath.messages.guidance import Checklist, WidgetToken
from trialpath.support.agents import AgentPublic, AgentSettings

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
API_KEY_ENV = "TRIALPATH_API_KEY"

ModelT = TypeVar("ModelT", bound=BaseModel)
TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)


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

"""`AsyncTrialpath`, the asynchronous client: the methods of `Trialpath`, to be awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import httpx

from trialpath.client.errors import Unavailable, _unreachable
from trialpath.client.requests import (
    _AGENTS,
    _HEALTHZ,
    _READYZ,
    DEFAULT_BASE_URL,
    ModelT,
    _Call,
    _cancel,
    _checklist,
    _command,
    _get,
    _http_options,
    _list,
    _merged,
    _qualify,
    _remove_agent,
    _set_agent,
    _start_trial,
    _track,
    _track_many,
    _transport,
    _widget_token,
)
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

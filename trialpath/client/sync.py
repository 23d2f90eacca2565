"""`Trialpath`, the synchronous client: each method sends the request built in `requests` and
parses the answer into the API's own model."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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

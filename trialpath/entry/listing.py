"""Listing trials (`GET /v1/trials`, `trialpath trial list`) from Temporal's visibility, with
page tokens signed for the filter they belong to."""

from __future__ import annotations

import base64
import binascii

from itsdangerous import BadSignature, URLSafeSerializer
from temporalio.client import Client, WorkflowExecutionStatus as ExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from trialpath.core.contract import (
    ACTIVATED,
    CS_OWNER,
    PERSONA,
    STAGES,
    TRIAL_ENDS_AT,
    TRIAL_STAGE,
    WORKFLOW_TYPE,
    Stage,
)
from trialpath.core.definition import Persona
from trialpath.entry.commands import InvalidRequest, TrialPage, TrialSummary, Unavailable
from trialpath.entry.signal_queue import RPC_TIMEOUT


class PageTokens:
    """`page_token`s of `GET /v1/trials`: Temporal's token and the filter it belongs to, signed,
    so a token this API did not return (or one of another filter) is refused at once (422)
    instead of reaching Temporal, which answers a forged token slowly or not at all."""

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeSerializer(secret, salt="trialpath-page-token")

    def make(self, token: bytes, query: str) -> str:
        return self._serializer.dumps([base64.b64encode(token).decode(), query])

    def read(self, page_token: str, query: str) -> bytes:
        try:
            token, made_for = self._serializer.loads(page_token)
            decoded = base64.b64decode(token, validate=True)
        except (BadSignature, binascii.Error, ValueError, TypeError) as err:
            raise InvalidRequest(
                "page_token is not a token this API returned", field="query.page_token"
            ) from err
        if made_for != query:
            raise InvalidRequest(
                "page_token belongs to a listing with other filters: pass the same stage, "
                "persona and activated as for the first page",
                field="query.page_token",
            )
        return decoded


async def list_trials(
    client: Client,
    tokens: PageTokens,
    stage: Stage | None = None,
    persona: Persona | None = None,
    activated: bool | None = None,
    page_size: int = 50,
    page_token: str | None = None,
) -> TrialPage:
    """A page of trials from Temporal's visibility, newest first, filtered by their search
    attributes; the next page's token signed for this filter."""
    query = f"WorkflowType = '{WORKFLOW_TYPE}'"
    if stage is not None:
        assert stage in STAGES
        query += f" AND TrialStage = '{stage}'"
    if persona is not None:
        query += f" AND Persona = '{persona}'"
    if activated is not None:
        query += f" AND Activated = {'true' if activated else 'false'}"
    token = tokens.read(page_token, query) if page_token else None
    executions = client.list_workflows(
        query, page_size=page_size, next_page_token=token, rpc_timeout=RPC_TIMEOUT
    )
    try:
        await executions.fetch_next_page()
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise InvalidRequest(f"invalid page_token or filter: {err.message}") from err
        raise Unavailable(f"Temporal did not answer: {err.message}") from err
    items = []
    for execution in executions.current_page or []:
        attrs = execution.typed_search_attributes
        items.append(
            TrialSummary(
                user_id=execution.id.removeprefix("trial-"),
                workflow_id=execution.id,
                running=execution.status == ExecutionStatus.RUNNING,
                stage=attrs.get(TRIAL_STAGE),
                persona=attrs.get(PERSONA),
                activated=attrs.get(ACTIVATED),
                trial_ends_at=attrs.get(TRIAL_ENDS_AT),
                cs_owner=attrs.get(CS_OWNER),
                started_at=execution.start_time,
            )
        )
    next_token = executions.next_page_token
    encoded = tokens.make(next_token, query) if next_token else None
    return TrialPage(items=items, next_page_token=encoded)

"""Operations on trials, shared by the HTTP API and the support CLI.

Each operation turns a typed command (`trialpath.entry.commands`) into Temporal calls and
database writes, and reports problems as the exceptions there, which the API maps to HTTP
statuses and the CLI to messages.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from pydantic import BaseModel
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select
from temporalio.api.common.v1 import WorkflowExecution as WorkflowExecutionRef
from temporalio.api.workflowservice.v1 import (
    DeleteWorkflowExecutionRequest,
    GetSystemInfoRequest,
)
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus as ExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributeKey, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from trialpath.core.contract import (
    QUERY_STATUS,
    SIGNAL_CALL_BOOKED,
    SIGNAL_CALL_COMPLETED,
    SIGNAL_CALL_NO_SHOW,
    SIGNAL_CALL_RESCHEDULED,
    SIGNAL_CANCEL,
    SIGNAL_CONVERTED,
    SIGNAL_EVENT,
    SIGNAL_EXTEND_TRIAL,
    SIGNAL_UNSUBSCRIBE,
    STAGES,
    UPDATE_QUALIFY,
    WORKFLOW_TYPE,
    QualifyInput,
    QualifyResult,
    Stage,
    TrialProfile,
    TrialStatus,
    workflow_id_for,
)
from trialpath.core.definition import Persona
from trialpath.core.journey import TrialInput
from trialpath.delivery.preferences import set_subscribed, signing_secret
from trialpath.entry.commands import (
    COMPARED_ON_RESTART,
    MAX_EVENTS_PER_REQUEST,
    Accepted,
    CallCommand,
    ConversionCommand,
    Erased,
    EventResult,
    EventsAccepted,
    ExtensionCommand,
    InvalidRequest,
    NewEvent,
    QualifyCommand,
    StartTrial,
    SurveyAnswer,
    SurveyRecorded,
    TrialConflict,
    TrialCreated,
    TrialEnded,
    TrialNotFound,
    TrialPage,
    TrialProblem,
    TrialSummary,
    Unavailable,
    UnsubscribeCommand,
)
from trialpath.entry.signal_queue import RPC_TIMEOUT, SignalQueue
from trialpath.operations.audit import pseudonym
from trialpath.operations.config import Settings
from trialpath.operations.erasure import erase_rows
from trialpath.operations.models import PendingSignal, Trial, TrialEvent

FUTURE_SKEW = timedelta(minutes=5)


# --- Operations ------------------------------------------------------------------------------

STAGE_KEY = SearchAttributeKey.for_keyword("TrialStage")
PERSONA_KEY = SearchAttributeKey.for_keyword("Persona")
ACTIVATED_KEY = SearchAttributeKey.for_bool("Activated")
ENDS_KEY = SearchAttributeKey.for_datetime("TrialEndsAt")
OWNER_KEY = SearchAttributeKey.for_keyword("CsOwner")


Clock = Callable[[], Awaitable[datetime]]
"""Where the API reads the time it accepts a command at."""


async def wall_clock() -> datetime:
    return datetime.now(UTC)


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


@dataclass
class Trials:
    client: Client
    engine: Engine
    settings: Settings
    clock: Clock = wall_clock
    """The time commands are accepted at: the host's clock, the same as Temporal's in
    production (tests on the time-skipping server pass that server's clock)."""

    # -- start --

    async def start(self, command: StartTrial) -> tuple[TrialCreated, bool]:
        """Starts the trial; (trial, True) if new, (trial, False) if it exists with the same
        data; TrialConflict if it exists with different data."""
        workflow_id = workflow_id_for(command.user_id)
        signup_at = await self.clock()
        try:
            profile = command.profile(self.settings.seconds_per_day)
        except ValueError as err:
            raise InvalidRequest(_first_error(err)) from err
        try:
            handle = await self.client.start_workflow(
                WORKFLOW_TYPE,
                TrialInput(profile=profile),
                id=workflow_id,
                task_queue=self.settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                rpc_timeout=RPC_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:
            existing, started_at = await self._start_profile(workflow_id)
            differing = [
                name
                for name in COMPARED_ON_RESTART
                if _normal(getattr(existing, name)) != _normal(getattr(command, name))
            ]
            if differing:
                raise TrialConflict(
                    f"a trial for user {command.user_id} already exists with different "
                    f"{', '.join(differing)}"
                ) from None
            signed_up = existing.signup_at or started_at
            return self._created(command, workflow_id, None, signed_up), False
        except RPCError as err:
            raise _unavailable(err) from err
        return self._created(command, workflow_id, handle.first_execution_run_id, signup_at), True

    def _created(
        self, command: StartTrial, workflow_id: str, run_id: str | None, signup_at: datetime
    ) -> TrialCreated:
        persona = command.qualification.role if command.qualification else None
        return TrialCreated(
            user_id=command.user_id,
            workflow_id=workflow_id,
            run_id=run_id,
            signup_at=signup_at,
            persona=persona,
            trial=command,
        )

    async def _start_profile(self, workflow_id: str) -> tuple[TrialProfile, datetime]:
        """The profile a trial was started with, and when (first event of its history)."""
        handle = self.client.get_workflow_handle(workflow_id)
        async for event in handle.fetch_history_events():
            attributes = event.workflow_execution_started_event_attributes
            payloads = list(attributes.input.payloads)
            converted = await self.client.data_converter.decode(payloads, [TrialInput])
            start: TrialInput = converted[0]
            return start.profile, event.event_time.ToDatetime(tzinfo=UTC)
        raise TrialNotFound(f"no trial for workflow {workflow_id}")  # pragma: no cover

    # -- qualification --

    async def qualify(self, user_id: str, command: QualifyCommand) -> QualifyResult:
        handle = await self._running(user_id)
        try:
            result: QualifyResult = await handle.execute_update(
                UPDATE_QUALIFY,
                QualifyInput(**command.model_dump()),
                result_type=QualifyResult,
                rpc_timeout=RPC_TIMEOUT,
            )
        except WorkflowUpdateFailedError as err:
            message = str(err.cause) if err.cause else str(err)
            if "has ended" in message:
                raise TrialEnded(message) from err
            raise InvalidRequest(message) from err
        except RPCError as err:
            raise _rpc_problem(err, user_id) from err
        return result

    # -- events --

    async def add_events(self, user_id: str, events: Sequence[NewEvent]) -> EventsAccepted:
        """Stores each event once and queues its signal in one transaction, then delivers."""
        if not events:
            raise InvalidRequest("at least one event is needed", field="body")
        if len(events) > MAX_EVENTS_PER_REQUEST:
            raise InvalidRequest(
                f"at most {MAX_EVENTS_PER_REQUEST} events per request, got {len(events)}",
                field="body",
            )
        now = await self.clock()
        for i, event in enumerate(events):
            if event.occurred_at is not None and event.occurred_at > now + FUTURE_SKEW:
                where = f"body[{i}].occurred_at" if len(events) > 1 else "body.occurred_at"
                raise InvalidRequest(
                    f"{where} is in the future ({event.occurred_at.isoformat()})", field=where
                )
        try:
            await self._running(user_id)
        except TrialEnded:
            # What the user does after the trial still counts for retention, upsell, referral
            # and CLTV (never for activation): stored for `events_after_end_days`.
            return await asyncio.to_thread(self._store_after_end, user_id, events, now)
        workflow_id = workflow_id_for(user_id)
        results, pending = await asyncio.to_thread(
            self._store_events, user_id, workflow_id, events, now
        )
        outcomes = await self.queue.send(pending)
        # The trial can end between the check above and the signal: such events are stored
        # uncounted, as any event after the end.
        gone = {row_id for row_id, _, is_gone in outcomes if is_gone}
        if gone:
            new = [r for r in results if not r.duplicate]
            for result, row_id in zip(new, pending, strict=True):
                result.counted = row_id not in gone
        accepted = sum(not r.duplicate for r in results)
        return EventsAccepted(accepted=accepted, duplicates=len(results) - accepted, events=results)

    def _store_after_end(
        self, user_id: str, events: Sequence[NewEvent], now: datetime
    ) -> EventsAccepted:
        """Events of a trial whose workflow has ended: stored once each (`counted` false), no
        signal; refused (409) past `events_after_end_days` on the trial's clock, or once the
        user's data was erased."""
        with Session(self.engine) as session:
            trial = session.get(Trial, user_id)
            if trial is None:
                raise TrialEnded(f"the trial of user {user_id} has ended")
            if trial.erased_at is not None:
                raise TrialEnded(f"the trial of user {user_id} has ended and its data was erased")
            ended = trial.ended_at or trial.updated_at
            days = self.settings.events_after_end_days
            if now > ended + timedelta(seconds=days * trial.seconds_per_day):
                raise TrialEnded(
                    f"the trial of user {user_id} ended on {ended:%Y-%m-%d}, more than "
                    f"{days:g} days ago: its events are no longer kept"
                )
            keys = [e.idempotency_key or str(uuid.uuid4()) for e in events]
            ids = [f"{user_id}:{key}" for key in keys]
            known = set(
                session.exec(select(TrialEvent.id).where(col(TrialEvent.id).in_(ids))).all()
            )
            results: list[EventResult] = []
            for event, key, event_id in zip(events, keys, ids, strict=True):
                duplicate = event_id in known
                results.append(
                    EventResult(id=key, name=event.name, duplicate=duplicate, counted=False)
                )
                if duplicate:
                    continue
                known.add(event_id)
                session.add(
                    TrialEvent(
                        id=event_id,
                        user_id=user_id,
                        name=event.name,
                        occurred_at=event.occurred_at or now,
                        counted=False,
                        properties=event.properties,
                    )
                )
            session.commit()
        accepted = sum(not r.duplicate for r in results)
        return EventsAccepted(accepted=accepted, duplicates=len(results) - accepted, events=results)

    def _store_events(
        self, user_id: str, workflow_id: str, events: Sequence[NewEvent], now: datetime
    ) -> tuple[list[EventResult], list[int]]:
        results: list[EventResult] = []
        rows: list[PendingSignal] = []
        with Session(self.engine) as session:
            keys = [e.idempotency_key or str(uuid.uuid4()) for e in events]
            ids = [f"{user_id}:{key}" for key in keys]
            known = set(
                session.exec(select(TrialEvent.id).where(col(TrialEvent.id).in_(ids))).all()
            )
            for event, key, event_id in zip(events, keys, ids, strict=True):
                duplicate = event_id in known
                results.append(EventResult(id=key, name=event.name, duplicate=duplicate))
                if duplicate:
                    continue
                known.add(event_id)
                occurred = event.occurred_at or now
                session.add(
                    TrialEvent(
                        id=event_id,
                        user_id=user_id,
                        name=event.name,
                        occurred_at=occurred,
                        properties=event.properties,
                    )
                )
                payload: dict[str, Any] = {
                    "name": event.name,
                    "properties": event.properties,
                    "id": key,
                    # The workflow counts the event then, however late the signal reaches it
                    # (a busy worker, or Temporal away and the row redelivered later).
                    "accepted_at": now.isoformat(),
                }
                if event.occurred_at is not None:
                    payload["occurred_at"] = event.occurred_at.isoformat()
                row = PendingSignal(workflow_id=workflow_id, signal=SIGNAL_EVENT, payload=payload)
                session.add(row)
                rows.append(row)
            session.commit()
            return results, [r.id for r in rows if r.id is not None]

    async def deliver(self, ids: Sequence[int] | None = None, limit: int = 200) -> int:
        """Sends queued signals (the given ones, or the oldest undelivered); returns how many
        were delivered. Failures stay queued and are retried later."""
        return await self.queue.deliver(ids, limit)

    def pending_count(self) -> int:
        return self.queue.pending_count()

    @cached_property
    def queue(self) -> SignalQueue:
        return SignalQueue(self.client, self.engine)

    # -- other signals --

    async def call(self, user_id: str, command: CallCommand) -> Accepted:
        if command.action in ("booked", "rescheduled") and command.at is None:
            raise InvalidRequest(
                f"'at' is required to mark a call {command.action}", field="body.at"
            )
        if command.action == "booked":
            name, payload = SIGNAL_CALL_BOOKED, {"at": command.at, "agent": command.agent}
        elif command.action == "rescheduled":
            name, payload = SIGNAL_CALL_RESCHEDULED, {"at": command.at}
        elif command.action == "completed":
            name, payload = SIGNAL_CALL_COMPLETED, {"notes": command.notes}
        else:
            name, payload = SIGNAL_CALL_NO_SHOW, {}
        return await self._signal(
            user_id, name, payload, refused=f"a call {command.action}", call=command
        )

    async def _check_call(
        self,
        user_id: str,
        command: CallCommand,
        description: WorkflowExecutionDescription,
        now: datetime,
    ) -> None:
        """Refuses what cannot be true at `now`: a call booked or moved into the past (422) or
        past the trial's end, marked completed or missed before it starts (409). The workflow
        ignores such signals anyway; the caller hears why."""
        if command.action in ("booked", "rescheduled") and command.at is not None:
            if command.at <= now:
                raise InvalidRequest(
                    f"body.at is in the past ({command.at.isoformat()})", field="body.at"
                )
            ends = description.typed_search_attributes.get(ENDS_KEY)
            if ends is not None and command.at >= ends:
                raise TrialConflict(
                    f"the call time {command.at.isoformat()} is after the trial of user "
                    f"{user_id} ends ({ends.isoformat()}): extend the trial first"
                )
            return
        if command.action in ("completed", "no_show"):
            recorded = await asyncio.to_thread(recorded_status, self.engine, user_id)
            call = recorded.call if recorded is not None else None
            if call is not None and call.at is not None and now < call.at:
                missed = "completed" if command.action == "completed" else "marked a no-show"
                raise TrialConflict(
                    f"the success call of user {user_id} is at {call.at.isoformat()}: it cannot "
                    f"be {missed} before it starts (reschedule it first if it happened earlier)"
                )

    async def extend(self, user_id: str, command: ExtensionCommand) -> Accepted:
        return await self._signal(
            user_id, SIGNAL_EXTEND_TRIAL, command.model_dump(), refused="an extension"
        )

    async def convert(self, user_id: str, command: ConversionCommand) -> Accepted:
        return await self._signal(
            user_id, SIGNAL_CONVERTED, command.model_dump(), refused="a conversion"
        )

    async def unsubscribe(
        self, user_id: str, command: UnsubscribeCommand, source: str = "api"
    ) -> Accepted:
        """Stops marketing on the channel: recorded as the user's preference (which the send
        activity checks at the last moment), then signalled to the running trial."""
        await self._running(user_id)
        changed = await asyncio.to_thread(
            set_subscribed, self.engine, user_id, [command.channel], subscribed=False, source=source
        )
        if not changed:
            # Already unsubscribed there: a repeated request (a link clicked again, a mail
            # client's retries) adds nothing to the trial's history.
            return Accepted(user_id=user_id, signal=SIGNAL_UNSUBSCRIBE)
        return await self.notify_unsubscribe(user_id, command)

    async def notify_unsubscribe(self, user_id: str, command: UnsubscribeCommand) -> Accepted:
        """Tells the running trial of an opt-out already recorded as a preference."""
        return await self._signal(user_id, SIGNAL_UNSUBSCRIBE, command.model_dump())

    async def answer_survey(
        self, user_id: str, answer: SurveyAnswer, source: str = "api"
    ) -> SurveyRecorded:
        """Stores the answer as a `survey_<name>` event, once per user and survey (the first
        answer counts). A running trial also gets it as a signal; an ended one just stores it."""
        event = NewEvent(
            name=f"survey_{answer.survey}",
            properties={"score": answer.score, "comment": answer.comment, "source": source},
            idempotency_key=f"survey_{answer.survey}",
        )
        try:
            result = await self.add_events(user_id, [event])
            duplicate = result.duplicates > 0
        except TrialEnded:
            duplicate = not await asyncio.to_thread(
                self._store_ended_event, user_id, event, await self.clock()
            )
        return SurveyRecorded(
            user_id=user_id, survey=answer.survey, score=answer.score, duplicate=duplicate
        )

    def _store_ended_event(self, user_id: str, event: NewEvent, now: datetime) -> bool:
        with Session(self.engine) as session:
            event_id = f"{user_id}:{event.idempotency_key}"
            if session.get(TrialEvent, event_id) is not None:
                return False
            session.add(
                TrialEvent(
                    id=event_id,
                    user_id=user_id,
                    name=event.name,
                    occurred_at=now,
                    counted=False,
                    properties=event.properties,
                )
            )
            session.commit()
            return True

    async def cancel(self, user_id: str, reason: str | None = None, erase: bool = False) -> Erased:
        """Cancels the trial; with `erase`, also deletes its workflow history and wipes the
        personal data stored for it (aggregate rows are kept, anonymised)."""
        workflow_id = workflow_id_for(user_id)
        handle = self.client.get_workflow_handle(workflow_id)
        running = await self._is_running(handle)
        if running is None and not await asyncio.to_thread(self._has_row, user_id):
            raise TrialNotFound(f"no trial for user {user_id}")
        if not erase:
            if not running:
                raise TrialEnded(f"the trial of user {user_id} has already ended")
            await self._signal(user_id, SIGNAL_CANCEL, {"reason": reason}, refused="a cancellation")
            return Erased(user_id=user_id, cancelled=True, erased=False)
        if running:
            try:
                await handle.terminate(reason="personal data erased on request")
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise _unavailable(err) from err
        # The rows first: from here on nothing writes the profile back (an activity still
        # running when the workflow was terminated finds the trial erased).
        rows = await asyncio.to_thread(
            erase_rows,
            self.engine,
            user_id,
            self.settings.outbox_dir,
            bool(running),
            pseudonym=pseudonym(signing_secret(self.settings), user_id),
        )
        runs, supported, pending = await self._delete_history(workflow_id)
        return Erased(
            user_id=user_id,
            cancelled=bool(running),
            erased=True,
            history_deleted=supported and not pending and (runs > 0 or running is None),
            erased_rows=rows.counts,
            runs_deleted=runs,
            history_pending=pending,
            nothing_left=rows.total == 0 and runs == 0 and not pending,
        )

    async def _delete_history(self, workflow_id: str) -> tuple[int, bool, int]:
        """Deletes every run of the workflow and waits until Temporal finds none: (runs whose
        deletion this call asked for, whether the server can delete at all, runs still there
        when it stopped waiting). Deletion is asynchronous on the server (tens of seconds for
        a workflow just closed) and visibility lags: both are asked again until nothing is
        left or `erase_wait_seconds` pass."""
        deleted: set[str] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.erase_wait_seconds
        while True:
            runs = await self._runs(workflow_id)
            if not runs:
                return len(deleted), True, 0
            for run_id in runs:
                try:
                    await self.client.workflow_service.delete_workflow_execution(
                        DeleteWorkflowExecutionRequest(
                            namespace=self.client.namespace,
                            workflow_execution=WorkflowExecutionRef(
                                workflow_id=workflow_id, run_id=run_id
                            ),
                        ),
                        timeout=RPC_TIMEOUT,
                    )
                    deleted.add(run_id)
                except RPCError as err:
                    if err.status == RPCStatusCode.UNIMPLEMENTED:
                        return 0, False, 0
                    if err.status != RPCStatusCode.NOT_FOUND:
                        raise _unavailable(err) from err
            if loop.time() > deadline:
                return len(deleted), True, len(runs)
            await asyncio.sleep(1.0)

    async def _runs(self, workflow_id: str) -> set[str]:
        """Run ids Temporal still has for the workflow: every run visibility lists, and the
        latest one, which describe finds even before visibility catches up."""
        runs: set[str] = set()
        try:
            async for execution in self.client.list_workflows(
                f"WorkflowId = '{workflow_id}'", rpc_timeout=RPC_TIMEOUT
            ):
                runs.add(execution.run_id)
        except RPCError as err:
            if err.status not in (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.INVALID_ARGUMENT):
                raise _unavailable(err) from err
        description = await self._describe(self.client.get_workflow_handle(workflow_id))
        if description is not None:
            runs.add(description.run_id)
        return runs

    def _has_row(self, user_id: str) -> bool:
        with Session(self.engine) as session:
            return session.get(Trial, user_id) is not None

    async def _signal(
        self,
        user_id: str,
        name: str,
        payload: dict[str, Any],
        refused: str | None = None,
        call: CallCommand | None = None,
    ) -> Accepted:
        """Signals the running trial. `refused`: what the command is, when it cannot apply to
        a converted or cancelled trial (409 instead of a signal the workflow would ignore);
        `call`: a call outcome, checked against the time first."""
        accepted_at = await self.clock()
        handle, description = await self._running_described(user_id, refused)
        if call is not None:
            await self._check_call(user_id, call, description, accepted_at)
        payload = {**payload, "accepted_at": accepted_at}
        data = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in payload.items()}
        try:
            await handle.signal(name, data, rpc_timeout=RPC_TIMEOUT)
        except RPCError as err:
            raise _rpc_problem(err, user_id) from err
        return Accepted(user_id=user_id, signal=name)

    async def _is_running(self, handle: WorkflowHandle[Any, Any]) -> bool | None:
        """True if running, False if closed, None if there is no such workflow."""
        description = await self._describe(handle)
        return None if description is None else description.status == ExecutionStatus.RUNNING

    async def _describe(
        self, handle: WorkflowHandle[Any, Any]
    ) -> WorkflowExecutionDescription | None:
        try:
            return await handle.describe(rpc_timeout=RPC_TIMEOUT)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise _unavailable(err) from err

    async def _running(self, user_id: str, refused: str | None = None) -> WorkflowHandle[Any, Any]:
        """The trial's handle if its workflow runs. With `refused` (what the command is), also
        refuses a trial that converted or was cancelled: its workflow may still run (the
        referral ask after a purchase) but the command no longer applies."""
        handle, _ = await self._running_described(user_id, refused)
        return handle

    async def _running_described(
        self, user_id: str, refused: str | None = None
    ) -> tuple[WorkflowHandle[Any, Any], WorkflowExecutionDescription]:
        handle = self.client.get_workflow_handle(workflow_id_for(user_id))
        description = await self._describe(handle)
        if description is None:
            raise TrialNotFound(f"no trial for user {user_id}")
        if description.status != ExecutionStatus.RUNNING:
            raise TrialEnded(f"the trial of user {user_id} has ended")
        stage = description.typed_search_attributes.get(STAGE_KEY)
        if refused is not None and stage in ("converted", "cancelled"):
            raise TrialEnded(
                f"the trial of user {user_id} has {stage.replace('cancelled', 'been cancelled')}:"
                f" {refused} no longer applies"
            )
        return handle, description

    # -- reading --

    async def status(self, user_id: str) -> TrialStatus:
        """The live status; once the trial has ended (or Temporal cannot be reached), the final
        status recorded in the database."""
        final = await asyncio.to_thread(recorded_status, self.engine, user_id, True)
        if final is not None:
            return final
        handle = self.client.get_workflow_handle(workflow_id_for(user_id))
        try:
            status: TrialStatus = await handle.query(
                QUERY_STATUS, result_type=TrialStatus, rpc_timeout=RPC_TIMEOUT
            )
            return status
        except RPCError:
            pass
        recorded = await asyncio.to_thread(recorded_status, self.engine, user_id)
        if recorded is None:
            raise TrialNotFound(f"no trial for user {user_id}")
        return recorded

    async def list(
        self,
        stage: Stage | None = None,
        persona: Persona | None = None,
        activated: bool | None = None,
        page_size: int = 50,
        page_token: str | None = None,
    ) -> TrialPage:
        query = f"WorkflowType = '{WORKFLOW_TYPE}'"
        if stage is not None:
            assert stage in STAGES
            query += f" AND TrialStage = '{stage}'"
        if persona is not None:
            query += f" AND Persona = '{persona}'"
        if activated is not None:
            query += f" AND Activated = {'true' if activated else 'false'}"
        token = self._page_tokens.read(page_token, query) if page_token else None
        executions = self.client.list_workflows(
            query, page_size=page_size, next_page_token=token, rpc_timeout=RPC_TIMEOUT
        )
        try:
            await executions.fetch_next_page()
        except RPCError as err:
            if err.status == RPCStatusCode.INVALID_ARGUMENT:
                raise InvalidRequest(f"invalid page_token or filter: {err.message}") from err
            raise _unavailable(err) from err
        items = []
        for execution in executions.current_page or []:
            attrs = execution.typed_search_attributes
            items.append(
                TrialSummary(
                    user_id=execution.id.removeprefix("trial-"),
                    workflow_id=execution.id,
                    running=execution.status == ExecutionStatus.RUNNING,
                    stage=attrs.get(STAGE_KEY),
                    persona=attrs.get(PERSONA_KEY),
                    activated=attrs.get(ACTIVATED_KEY),
                    trial_ends_at=attrs.get(ENDS_KEY),
                    cs_owner=attrs.get(OWNER_KEY),
                    started_at=execution.start_time,
                )
            )
        next_token = executions.next_page_token
        encoded = self._page_tokens.make(next_token, query) if next_token else None
        return TrialPage(items=items, next_page_token=encoded)

    @cached_property
    def _page_tokens(self) -> PageTokens:
        return PageTokens(signing_secret(self.settings))

    # -- health --

    async def check_temporal(self) -> str | None:
        try:
            await self.client.workflow_service.get_system_info(
                GetSystemInfoRequest(), timeout=timedelta(seconds=3)
            )
        except RPCError as err:
            return f"Temporal: {err.message}"
        return None

    def check_database(self) -> str | None:
        try:
            with Session(self.engine) as session:
                session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        except Exception as err:
            return f"database: {err.__class__.__name__}"
        return None


def recorded_status(engine: Engine, user_id: str, ended_only: bool = False) -> TrialStatus | None:
    """The last status the workflow recorded (with `ended_only`, only once the trial ended)."""
    with Session(engine) as session:
        row = session.get(Trial, user_id)
    if row is None or not row.status or (ended_only and row.ended_at is None):
        return None
    return TrialStatus.model_validate(row.status)


def _normal(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if value == "":
        return None
    return value


def _first_error(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"body.{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(err)


def _unavailable(err: RPCError) -> Unavailable:
    return Unavailable(f"Temporal did not answer: {err.message}")


def _rpc_problem(err: RPCError, user_id: str) -> TrialProblem:
    if err.status == RPCStatusCode.NOT_FOUND:
        return TrialEnded(f"the trial of user {user_id} has ended")
    return _unavailable(err)

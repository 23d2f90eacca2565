"""Operations on trials, shared by the HTTP API and the support CLI.

Each operation turns a typed command (`trialpath.entry.commands`) into Temporal calls and
database writes, and reports problems as the exceptions there, which the API maps to HTTP
statuses and the CLI to messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine, text
from sqlmodel import Session
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
from temporalio.common import WorkflowIDReusePolicy
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
    SIGNAL_EXTEND_TRIAL,
    SIGNAL_UNSUBSCRIBE,
    TRIAL_ENDS_AT,
    TRIAL_STAGE,
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
    Unavailable,
    UnsubscribeCommand,
)
from trialpath.entry.event_store import (
    accepted,
    store_after_end,
    store_ended_event,
    store_events,
)
from trialpath.entry.listing import PageTokens, list_trials
from trialpath.entry.signal_queue import RPC_TIMEOUT, SignalQueue
from trialpath.operations.audit import pseudonym
from trialpath.operations.config import Settings
from trialpath.operations.erasure import erase_rows
from trialpath.operations.models import Trial

FUTURE_SKEW = timedelta(minutes=5)


# --- Operations ------------------------------------------------------------------------------

Clock = Callable[[], Awaitable[datetime]]
"""Where the API reads the time it accepts a command at."""


async def wall_clock() -> datetime:
    return datetime.now(UTC)


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
        workflow_id = workflow_id_for(user_id)
        # The trial's row says whether it runs, without a call to Temporal; a trial not
        # recorded yet, or one whose row says it ended, is asked for.
        stored = await asyncio.to_thread(
            store_events, self.engine, user_id, workflow_id, events, now
        )
        if stored is None:
            try:
                await self._running(user_id)
            except TrialEnded:
                # What the user does after the trial still counts for retention, upsell,
                # referral and CLTV (never for activation): stored for `events_after_end_days`.
                return await asyncio.to_thread(
                    store_after_end,
                    self.engine,
                    user_id,
                    events,
                    now,
                    self.settings.events_after_end_days,
                )
            stored = await asyncio.to_thread(
                store_events, self.engine, user_id, workflow_id, events, now, running=True
            )
        assert stored is not None  # a running trial's events are always stored
        results, pending = stored
        outcomes = await self.queue.send_rows(pending)
        # The trial can end between the check above and the signal (or have closed without
        # its row saying so): such events are stored uncounted, as any event after the end.
        gone = {row_id for row_id, _, is_gone in outcomes if is_gone}
        if gone:
            new = [r for r in results if not r.duplicate]
            for result, row in zip(new, pending, strict=True):
                result.counted = row.id not in gone
        return accepted(results)

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
            ends = description.typed_search_attributes.get(TRIAL_ENDS_AT)
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
                store_ended_event, self.engine, user_id, event, await self.clock()
            )
        return SurveyRecorded(
            user_id=user_id, survey=answer.survey, score=answer.score, duplicate=duplicate
        )

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
        stage = description.typed_search_attributes.get(TRIAL_STAGE)
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
        return await list_trials(
            self.client, self._page_tokens, stage, persona, activated, page_size, page_token
        )

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

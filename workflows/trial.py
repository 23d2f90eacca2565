"""TrialWorkflow: one durable workflow per trial user (timing and Temporal glue only).

Every decision is taken by the pure rules in `trialpath.core.journey`; this class feeds them
signals, performs the steps they ask for through activities, and sleeps until the next wake-up or
signal.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.calls import AssignAgentInput, CallActivities, ReleaseSlotsInput
    from activities.journey import JourneyActivities, LoadJourneyInput
    from activities.message_io import (
        TEMPLATE_BROKEN,
        ChannelPlan,
        SendMessageInput,
        SendResult,
        SendStepInput,
        TemplateFailure,
    )
    from activities.messaging import LOOKUP_ROOM, MessagingActivities
    from activities.records import (
        CsTaskInput,
        EventRecord,
        RecordActivities,
        RecordProgressInput,
        StageRecord,
        TrialSnapshot,
    )
    from trialpath.core import journey, moves
    from trialpath.core.contract import (
        ACTIVATED,
        CS_OWNER,
        EXPERIMENT_ARM,
        JOURNEY_VERSION,
        NEEDS_ATTENTION,
        PERSONA,
        QUERY_MOVE_PROBLEMS,
        QUERY_STATUS,
        SEARCH_ATTRIBUTES,
        SIGNAL_CALL_BOOKED,
        SIGNAL_CALL_COMPLETED,
        SIGNAL_CALL_NO_SHOW,
        SIGNAL_CALL_RESCHEDULED,
        SIGNAL_CANCEL,
        SIGNAL_CONVERTED,
        SIGNAL_EVENT,
        SIGNAL_EVENTS,
        SIGNAL_EXTEND_TRIAL,
        SIGNAL_TASK_CLOSED,
        SIGNAL_UNSUBSCRIBE,
        TRIAL_ENDS_AT,
        TRIAL_STAGE,
        UPDATE_MOVE_JOURNEY,
        UPDATE_QUALIFY,
        WORKFLOW_TYPE,
        CallBooked,
        CallCompleted,
        CallNoShow,
        CallRescheduled,
        Cancel,
        Converted,
        EventSignal,
        EventsSignal,
        ExtendTrial,
        JourneyVersionRef,
        MoveJourney,
        MoveResult,
        QualifyInput,
        QualifyResult,
        TaskClosed,
        TrialStatus,
        Unsubscribe,
        workflow_id_for,
    )
    from trialpath.core.definition import Channel, JourneyDefinition
    from trialpath.support.agents import SlotRequest
    from workflows import shapes
    from workflows.policy import (
        DB_RETRY,
        EVENTS_PER_RECORD,
        PATCH_ACCEPTED_AT,
        PATCH_FEWER_ACTIONS,
        PATCH_JOURNEY_VERSIONS,
        PATCH_NEEDS_ATTENTION,
        PATCH_RULES_2,
        PATCH_RULES_3,
        PATCH_RULES_4,
        PATCH_RULES_5,
        PATCH_RULES_6,
        PATCH_SIGNUP_AT_START,
        PATCH_STEP_SENDS,
        PATCH_SYNC_LATE_SIGNALS,
        SEND_RETRY,
        TASK_KINDS,
    )


@workflow.defn(name=WORKFLOW_TYPE)
class TrialWorkflow:
    """The onboarding journey of one trial user, from signup to conversion or win-back.

    Workflow id `trial-{user_id}`. Started with a `TrialInput`.

    Signals: `event` (a product action; duplicate `id` ignored), `events` (several at once),
    `call_booked`,
    `call_rescheduled`, `call_completed`, `call_no_show`, `extend_trial`, `converted`, `cancel`,
    `unsubscribe`, `task_closed` (support closed a task with an outcome).
    Update: `qualify` (role, challenge, urgency → persona; invalid answers are rejected).
    Query: `status` (the whole state in plain words).
    Activities: `load_journey`, `send_step` (every channel of a step; `send_message`, one
    channel, before `one-activity-per-step`), `alert_template_failure`, `open_cs_task`,
    `record_progress`; `assign_agent` (rules 1-3: round-robin) or `offer_call_slot` and
    `release_call_slots` (rules 4: the agents' calendars).
    Timers: one at a time, until the next step the journey rules ask for (qualifier timeout,
    send window, drip day, stall, call reminders, end of trial, win-back); every signal wakes
    the workflow early so moved times (rescheduled call, extension) apply at once. Since
    `fewer-actions`, a signal that leaves the next wake-up where it was keeps the running timer,
    and events are written to the database with the trial's next record rather than one
    `record_progress` each.
    Search attributes: TrialStage, Persona, Activated, TrialEndsAt, ExperimentArm, CsOwner,
    NeedsAttention (why a human should look now: stalled, inactive, no_show, template_broken,
    call_unassigned; absent when nothing waits).
    """

    @workflow.init
    def __init__(self, input: journey.TrialInput) -> None:
        self._profile = input.profile
        carried = input.carried
        self._defn: JourneyDefinition | None = carried.definition if carried else None
        self._state: journey.TrialState | None = carried.state if carried else None
        self._version: JourneyVersionRef | None = carried.version if carried else None
        self._move: MoveJourney | None = None
        self._fewer_actions: bool | None = None
        self._rules_6_on: bool | None = None
        self._step_sends: bool | None = None
        if carried:
            self._clock = carried.clock
        else:
            # Dated from the start request (the signup), not from the first workflow task,
            # which a backlog or a worker outage can delay by minutes. Older runs kept their
            # first task's time.
            signup = input.profile.signup_at or (
                workflow.info().workflow_start_time
                if self._patched(PATCH_SIGNUP_AT_START)
                else workflow.now()
            )
            self._clock = journey.JourneyClock(
                origin=signup, seconds_per_day=input.profile.seconds_per_day
            )
        self._buffered: list[Any] = []
        self._dirty = False
        self._events: list[EventRecord] = []
        self._stages: list[StageRecord] = []
        self._recorded: dict[str, Any] | None = None
        self._profile_saved = False
        self._attributes: dict[str, Any] = {}
        self._next_wakeup: datetime | None = None
        self._timer: asyncio.Task[None] | None = None
        self._timer_until: datetime | None = None
        self._woken = True

    # --- run ---------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: journey.TrialInput) -> TrialStatus:
        if self._defn is None and self._patched(PATCH_JOURNEY_VERSIONS):
            loaded = await workflow.execute_activity_method(
                JourneyActivities.load_journey_version,
                LoadJourneyInput(),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=DB_RETRY,
            )
            self._defn, self._version = loaded.definition, loaded.version
        elif self._defn is None:
            self._defn = await workflow.execute_activity_method(
                JourneyActivities.load_journey,
                LoadJourneyInput(),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=DB_RETRY,
            )
        defn = self._defn
        if self._state is None:
            # A new trial decides by today's rules; one started before they were versioned
            # replays with the rules its history was made by.
            if self._rules_6():
                rules = journey.RULES
            elif self._patched(PATCH_RULES_5):
                rules = 5
            elif self._patched(PATCH_RULES_4):
                rules = 4
            elif self._patched(PATCH_RULES_3):
                rules = 3
            elif self._patched(PATCH_RULES_2):
                rules = 2
            else:
                rules = 1
            self._state = journey.start(defn, self._profile, self._clock.origin, rules)
        state = self._state
        for apply in self._buffered:
            apply(self._now())
        self._buffered.clear()

        while True:
            # Cleared before deciding, not before sleeping: a signal that arrives while an
            # activity runs must wake the next wait at once.
            self._dirty = False
            now = self._now()
            if self._move is not None:
                # Between two steps: nothing is being sent. The next run starts from the same
                # state with the new definition (docs/versioning.md, "Moving running trials").
                move = self._move
                await self._sync(now, force=True)
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    journey.TrialInput(
                        profile=self._profile,
                        carried=journey.Carried(
                            definition=move.definition,
                            state=state,
                            clock=self._clock,
                            version=move.version,
                        ),
                    )
                )
            step = journey.next_step(defn, state, now)
            await self._sync(now)
            for occurrence in journey.take_abandoned(state):
                await self._alert_abandoned(occurrence)
            if isinstance(step, journey.Send):
                await self._send(step)
            elif isinstance(step, journey.AssignAgent):
                agent = await workflow.execute_activity_method(
                    CallActivities.assign_agent,
                    AssignAgentInput(
                        workflow_id=workflow.info().workflow_id, agents=list(step.agents)
                    ),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=DB_RETRY,
                )
                journey.assign_agent(defn, state, agent, self._now())
            elif isinstance(step, journey.OfferCall):
                await self._offer_call(step)
            elif isinstance(step, journey.ReleaseCall):
                await workflow.execute_activity_method(
                    CallActivities.release_call_slots,
                    ReleaseSlotsInput(workflow_id=workflow.info().workflow_id, after=step.after),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=DB_RETRY,
                )
                journey.apply_call_released(state)
            elif isinstance(step, journey.Finish):
                self._cancel_timer()
                break
            else:
                if self._should_continue_as_new():
                    await self._sync(now, force=True)
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    workflow.continue_as_new(
                        journey.TrialInput(
                            profile=self._profile,
                            carried=journey.Carried(
                                definition=defn,
                                state=state,
                                clock=self._clock,
                                version=self._version,
                            ),
                        )
                    )
                if self._rules_6():
                    # The steps taken in a row since the last wait make one record, written
                    # as the trial goes to sleep.
                    await self._sync(now, settle=True)
                await self._sleep(step.until, now)

        await workflow.wait_condition(workflow.all_handlers_finished)
        now = self._now()
        await self._sync(now, ended=True)
        # Signals that came in during that last write (an event sent as the trial ends) are in
        # the state and the result: the database gets them too before the workflow completes.
        while (self._events or self._stages) and self._patched(PATCH_SYNC_LATE_SIGNALS):
            await workflow.wait_condition(workflow.all_handlers_finished)
            now = self._now()
            await self._sync(now, ended=True)
        return self._status(now)

    async def _sleep(self, until: datetime | None, now: datetime) -> None:
        self._next_wakeup = until
        if self._lean():
            self._upsert_attributes()
            await self._sleep_on_timer(until, now)
        else:
            timeout = None
            if until is not None:
                timeout = max(self._clock.real_duration(until - now), timedelta(milliseconds=1))
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._dirty, timeout=timeout)
        self._next_wakeup = None

    async def _sleep_on_timer(self, until: datetime | None, now: datetime) -> None:
        """Waits for a signal or the wake-up, keeping the timer already running for the same
        wake-up: an event that changes nothing costs its signal only."""
        if until is None:
            self._cancel_timer()
            await workflow.wait_condition(lambda: self._dirty)
            self._woken = False
            return
        if self._timer is None or self._timer.done() or self._timer_until != until:
            self._cancel_timer()
            delay = max(self._clock.real_duration(until - now), timedelta(milliseconds=1))
            self._timer = asyncio.create_task(asyncio.sleep(delay.total_seconds()))
            self._timer_until = until
        timer = self._timer
        await workflow.wait_condition(lambda: self._dirty or timer.done())
        self._woken = timer.done()

    def _cancel_timer(self) -> None:
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()
        self._timer = None
        self._timer_until = None

    def _newest(self) -> bool:
        """Whether this run started with the newest patch (`one-activity-per-step`), which
        stands for every older one: a new run records this marker only."""
        if self._step_sends is None:
            self._step_sends = workflow.patched(PATCH_STEP_SENDS)
        return self._step_sends

    def _rules_6(self) -> bool:
        """Whether this run decides by rules 6 and records once per wake-up (`journey-rules-6`,
        or a newer patch)."""
        if self._rules_6_on is None:
            self._rules_6_on = self._newest() or workflow.patched(PATCH_RULES_6)
        return self._rules_6_on

    def _lean(self) -> bool:
        """Whether this run keeps its timer and merges event records and upserts
        (`fewer-actions`, or a newer patch)."""
        if self._fewer_actions is None:
            self._fewer_actions = self._rules_6() or workflow.patched(PATCH_FEWER_ACTIONS)
        return self._fewer_actions

    def _patched(self, patch: str) -> bool:
        """Whether this run takes the change an older patch brought. A run started with today's
        code records the newest patch only, which implies all the older ones: each patch marker
        is a history event, and the SDK upserts `TemporalChangeVersion` with it. A run recorded
        before it asks each patch, as it did."""
        return self._lean() or workflow.patched(patch)

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        assert self._defn is not None
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._defn.max_history_events
        )

    def _now(self) -> datetime:
        return self._clock.journey(workflow.now())

    # --- steps -------------------------------------------------------------------------------

    async def _send(self, step: journey.Send) -> None:
        assert self._defn is not None and self._state is not None
        if self._newest():
            results = await self._send_step(step)
        else:
            results = await asyncio.gather(
                *(
                    self._send_with_fallback(step, plan)
                    for plan in shapes.channel_plans(self._defn, step)
                )
            )
        delivered = [
            journey.Delivered(channel=channel, key=r.key, template=r.template)
            for channel, r in results
            if r is not None and r.status == "sent"
        ]
        broken = [c for c, r in results if r is not None and r.status == TEMPLATE_BROKEN]
        now = self._now()
        attempt = (
            self._state.held[step.occurrence].attempts if step.occurrence in self._state.held else 0
        )
        journey.mark_done(self._defn, self._state, step, delivered, now, broken)
        for channel, result in results:
            if result is not None and result.status == TEMPLATE_BROKEN:
                held = self._state.held.get(step.occurrence)
                await workflow.execute_activity_method(
                    MessagingActivities.alert_template_failure,
                    TemplateFailure(
                        workflow_id=workflow.info().workflow_id,
                        user_id=self._state.user_id,
                        occurrence=step.occurrence,
                        message=step.message,
                        channel=channel,
                        error=result.error or "",
                        attempt=attempt + 1,
                        retry_at=self._clock.real(held.retry_at) if held else None,
                        gave_up=(
                            None
                            if held
                            else "the retries are used up"
                            if attempt + 1 >= self._defn.template_retry_max
                            else "the message would no longer make sense by the next retry"
                        ),
                    ),
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=SEND_RETRY,
                )
        if step.message in TASK_KINDS and step.extra.get("cs_task"):
            # Named after the user, not this run's id: a replay under another id (tests) or a
            # closed task's signal finds the same key.
            key = f"{workflow_id_for(self._state.user_id)}:{step.occurrence}"
            kind = str(step.extra.get("kind", TASK_KINDS[step.message]))
            await workflow.execute_activity_method(
                RecordActivities.open_cs_task,
                CsTaskInput(
                    key=key,
                    user_id=self._state.user_id,
                    agent=self._state.call.agent,
                    reason=str(step.extra.get("reason", "stalled")),
                    kind=kind,
                    workflow_id=workflow.info().workflow_id,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=DB_RETRY,
            )
            journey.open_task(self._state, key, kind)

    async def _offer_call(self, step: journey.OfferCall) -> None:
        """Asks the agents' calendars for the call (rules 4); the rules apply the answer."""
        assert self._defn is not None and self._state is not None
        defn, state = self._defn, self._state
        offer = await workflow.execute_activity_method(
            CallActivities.offer_call_slot,
            SlotRequest(
                workflow_id=workflow.info().workflow_id,
                request=step.request,
                agents=list(defn.call.agents),
                duration_minutes=defn.call.duration_minutes,
                user_timezone=state.timezone,
                user_opens=defn.send_window.start,
                user_closes=defn.send_window.end,
                earliest=step.earliest,
                latest=step.latest,
                at=step.at,
                prefer=step.prefer,
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=DB_RETRY,
            summary=f"call slot ({step.purpose})",
        )
        journey.apply_call_offer(defn, state, step, offer.agent, offer.at, self._now())

    async def _alert_abandoned(self, occurrence: str) -> None:
        """A step whose broken template went stale before it was fixed: support is told it
        will not go out (it was told of each failed attempt)."""
        assert self._state is not None
        await workflow.execute_activity_method(
            MessagingActivities.alert_template_failure,
            TemplateFailure(
                workflow_id=workflow.info().workflow_id,
                user_id=self._state.user_id,
                occurrence=occurrence,
                message=occurrence.removeprefix("drip.").split(".")[0],
                channel="all",
                error="Its template was still broken when the message stopped making sense.",
                attempt=0,
                retry_at=None,
                gave_up="the message went stale before its template was fixed",
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=SEND_RETRY,
        )

    async def _send_step(self, step: journey.Send) -> list[tuple[Channel, SendResult | None]]:
        """Every channel of the step in one activity (`one-activity-per-step`): one activity
        task and one workflow task per step, whatever its channels. Each channel is still sent
        once, retried and settled on its own, and falls back inside the activity."""
        assert self._defn is not None
        if not step.channels:
            return []
        plans = shapes.channel_plans(self._defn, step)
        request = SendStepInput(message=self._request(step, step.channels[0]), channels=plans)
        sends = len(plans) + sum(1 for p in plans if p.fallback)
        try:
            results = await workflow.execute_activity_method(
                MessagingActivities.send_step,
                request,
                # Each provider call has its own timeouts; the step gets room for all of them.
                start_to_close_timeout=timedelta(seconds=60) * sends,
                retry_policy=SEND_RETRY,
                summary=f"{step.message} via {', '.join(step.channels)}",
            )
        except ActivityError as err:
            # Only cancellation ends it so: every channel's failure is settled inside.
            workflow.logger.warning("send failed for %s: %s", step.occurrence, err.cause or err)
            return [(channel, None) for channel in step.channels]
        return [(cast(Channel, r.channel), r) for r in results]

    async def _send_with_fallback(
        self, step: journey.Send, plan: ChannelPlan
    ) -> tuple[Channel, SendResult | None]:
        """Sends on the plan's channel (one activity per channel, before
        `one-activity-per-step`); when that fails for good and the plan has a fallback, sends
        there instead (SMS → email)."""
        channel = cast(Channel, plan.channel)
        if plan.fallback is None:
            return channel, await self._send_one(step, channel)
        result = await self._send_one(step, channel, plan.max_attempts)
        if result is not None and result.status != "failed":
            return channel, result
        workflow.logger.info("%s: %s failed, using %s", step.occurrence, channel, plan.fallback)
        return cast(Channel, plan.fallback), await self._send_one(step, plan.fallback)

    def _request(self, step: journey.Send, channel: str, max_attempts: int = 0) -> SendMessageInput:
        assert self._defn is not None and self._state is not None
        return shapes.send_request(
            self._defn,
            self._state,
            self._profile,
            step,
            channel,
            self._now(),
            workflow.info().workflow_id,
            max_attempts,
        )

    async def _send_one(
        self, step: journey.Send, channel: str, max_attempts: int = 0
    ) -> SendResult | None:
        request = self._request(step, channel, max_attempts)
        try:
            return await workflow.execute_activity_method(
                MessagingActivities.send_message,
                request,
                start_to_close_timeout=timedelta(seconds=60),
                # The activity settles the row after `max_attempts` provider calls; lookups of
                # an earlier call's outcome get room of their own.
                retry_policy=replace(SEND_RETRY, maximum_attempts=max_attempts * LOOKUP_ROOM),
                summary=f"{step.message} via {channel}",
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == "TemplateError":
                # The template is broken: nothing was written or sent. The step is held and
                # tried again later, so a fixed template still goes out.
                return SendResult(
                    key=request.key,
                    channel=channel,
                    template="",
                    content_hash="",
                    status=TEMPLATE_BROKEN,
                    error=cause.message,
                )
            # A permanent failure (rejected address) is recorded on the message row; the
            # journey goes on without this channel.
            workflow.logger.warning(
                "send failed for %s/%s: %s", step.occurrence, channel, err.cause or err
            )
            return None

    # --- records, search attributes, details -------------------------------------------------

    async def _sync(
        self, now: datetime, *, force: bool = False, ended: bool = False, settle: bool = False
    ) -> None:
        """Keeps the stage, the search attributes, the current details and the database's copy
        of the trial up to date. A run started with `journey-rules-6` writes its record when
        it settles (goes to sleep, continues as new, ends), not after each step."""
        assert self._defn is not None and self._state is not None
        defn, state = self._defn, self._state
        stage = journey.stage_of(defn, state, now)
        if stage != state.stage or state.stage_changes == 0:
            state.stage_changes += 1
            self._stages.append(
                StageRecord(
                    seq=state.stage_changes,
                    from_stage=state.stage if state.stage_changes > 1 else None,
                    to_stage=stage,
                    at=self._clock.real(now),
                )
            )
            state.stage = stage
        if force or ended or not self._lean():
            # Otherwise when the trial goes to sleep: the steps taken in a row between two
            # waits make one upsert, not one each.
            self._upsert_attributes()
        workflow.set_current_details(journey.summary(defn, state, now))
        if not (force or ended or settle) and self._rules_6():
            return
        snapshot = self._snapshot(now, ended)
        comparable = snapshot.model_dump(exclude={"status"})
        events_due = bool(self._events)
        if events_due and self._lean():
            # Events that change nothing else wait for the next record, a timer's wake-up or
            # a full batch: the API stored them already (counted), and the status query reads
            # the state. One that does not count is written at once, for the KPIs.
            events_due = (
                self._woken
                or ended
                or len(self._events) >= EVENTS_PER_RECORD
                or not all(e.counted for e in self._events)
            )
        self._woken = False
        if events_due or self._stages or force or comparable != self._recorded:
            events, self._events = self._events, []
            stages, self._stages = self._stages, []
            await workflow.execute_activity_method(
                RecordActivities.record_progress,
                RecordProgressInput(
                    trial=snapshot,
                    profile=None if self._profile_saved else self._profile,
                    events=events,
                    stages=stages,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=DB_RETRY,
            )
            self._profile_saved = True
            self._recorded = comparable

    def _upsert_attributes(self) -> None:
        assert self._state is not None
        state = self._state
        wanted: dict[str, Any] = {
            TRIAL_STAGE.name: state.stage,
            PERSONA.name: state.persona,
            ACTIVATED.name: state.activated_at is not None,
            TRIAL_ENDS_AT.name: self._clock.real(journey.trial_ends_at(state)),
            EXPERIMENT_ARM.name: state.arm,
            CS_OWNER.name: state.call.agent,
        }
        updates: list[SearchAttributeUpdate[Any]] = []
        for key in SEARCH_ATTRIBUTES:
            value = wanted[key.name]
            if value is not None and self._attributes.get(key.name) != value:
                updates.append(key.value_set(value))
                self._attributes[key.name] = value
        if self._defn is not None and self._patched(PATCH_NEEDS_ATTENTION):
            reasons = journey.needs_attention(self._defn, state, self._now())
            if self._attributes.get(NEEDS_ATTENTION.name, []) != reasons:
                # An empty list removes the attribute: the trial drops out of the queries.
                updates.append(
                    NEEDS_ATTENTION.value_set(reasons) if reasons else NEEDS_ATTENTION.value_unset()
                )
                self._attributes[NEEDS_ATTENTION.name] = reasons
        if self._version is not None and self._attributes.get(JOURNEY_VERSION.name) != (
            name := self._version.name
        ):
            updates.append(JOURNEY_VERSION.value_set(name))
            self._attributes[JOURNEY_VERSION.name] = name
        if updates:
            workflow.upsert_search_attributes(updates)

    def _snapshot(self, now: datetime, ended: bool) -> TrialSnapshot:
        assert self._state is not None
        return shapes.trial_snapshot(
            self._state,
            self._clock,
            workflow.info().workflow_id,
            self._version,
            self._status(now),
            workflow.now() if ended else None,
        )

    # --- signals -----------------------------------------------------------------------------

    def _apply(self, change: Any, accepted_at: datetime | None) -> None:
        """Applies a state change at the signal's time, now or (if the journey is not loaded
        yet) right after start."""
        if self._state is None or self._defn is None:
            self._buffered.append(lambda now: change(self._signal_time(accepted_at, now)))
        else:
            change(self._signal_time(accepted_at, self._now()))
        self._dirty = True

    def _signal_time(self, accepted_at: datetime | None, now: datetime) -> datetime:
        """When a relayed signal counts: when the API accepted it, on the journey clock, however
        long the worker or Temporal was away (never before signup, never after now). Signals
        without that time, and trials started before this rule, count on arrival."""
        if accepted_at is None or not self._patched(PATCH_ACCEPTED_AT):
            return now
        return min(max(self._clock.journey(accepted_at), self._clock.origin), now)

    def _real_to_journey(self, at: datetime) -> datetime:
        return self._clock.journey(at)

    @workflow.signal(name=SIGNAL_EVENT)
    def event(self, payload: EventSignal) -> None:
        event_id = payload.id or str(workflow.uuid4())

        def apply(now: datetime) -> None:
            assert self._defn is not None and self._state is not None
            occurred = self._real_to_journey(payload.occurred_at) if payload.occurred_at else now
            outcome = journey.apply_event(
                self._defn, self._state, payload.name, occurred, payload.id, now
            )
            if outcome.accepted:
                self._events.append(
                    EventRecord(
                        id=f"{self._state.user_id}:{event_id}",
                        name=payload.name,
                        occurred_at=self._clock.real(min(occurred, now)),
                        counted=outcome.counted,
                        properties=payload.properties,
                    )
                )

        self._apply(apply, payload.accepted_at)

    @workflow.signal(name=SIGNAL_EVENTS)
    def events(self, payload: EventsSignal) -> None:
        for event in payload.events:
            if event.accepted_at is None and payload.accepted_at is not None:
                event = event.model_copy(update={"accepted_at": payload.accepted_at})
            self.event(event)

    @workflow.signal(name=SIGNAL_CALL_BOOKED)
    def call_booked(self, payload: CallBooked) -> None:
        self._apply(
            lambda now: journey.apply_call_booked(
                self._state_(), self._real_to_journey(payload.at), payload.agent, now
            ),
            payload.accepted_at,
        )

    @workflow.signal(name=SIGNAL_CALL_RESCHEDULED)
    def call_rescheduled(self, payload: CallRescheduled) -> None:
        self._apply(
            lambda now: journey.apply_call_rescheduled(
                self._state_(), self._real_to_journey(payload.at), now
            ),
            payload.accepted_at,
        )

    @workflow.signal(name=SIGNAL_CALL_COMPLETED)
    def call_completed(self, payload: CallCompleted) -> None:
        self._apply(
            lambda now: journey.apply_call_completed(self._state_(), payload.notes, now),
            payload.accepted_at,
        )

    @workflow.signal(name=SIGNAL_CALL_NO_SHOW)
    def call_no_show(self, payload: CallNoShow) -> None:
        self._apply(
            lambda now: journey.apply_call_no_show(self._state_(), now), payload.accepted_at
        )

    @workflow.signal(name=SIGNAL_EXTEND_TRIAL)
    def extend_trial(self, payload: ExtendTrial) -> None:
        self._apply(
            lambda now: journey.apply_extension(self._state_(), payload.days, now),
            payload.accepted_at,
        )

    @workflow.signal(name=SIGNAL_CONVERTED)
    def converted(self, payload: Converted) -> None:
        self._apply(
            lambda now: journey.apply_conversion(self._state_(), payload.plan, payload.mrr, now),
            payload.accepted_at,
        )

    @workflow.signal(name=SIGNAL_CANCEL)
    def cancel(self, payload: Cancel) -> None:
        self._apply(
            lambda now: journey.apply_cancel(self._state_(), payload.reason, now),
            payload.accepted_at,
        )

    @workflow.signal(name=SIGNAL_TASK_CLOSED)
    def task_closed(self, payload: TaskClosed) -> None:
        self._apply(
            lambda now: journey.apply_task_closed(
                self._state_(), payload.task, payload.kind, payload.outcome, now
            ),
            payload.accepted_at,
        )

    @workflow.signal(name=SIGNAL_UNSUBSCRIBE)
    def unsubscribe(self, payload: Unsubscribe) -> None:
        self._apply(
            lambda now: journey.apply_unsubscribe(self._state_(), payload), payload.accepted_at
        )

    def _state_(self) -> journey.TrialState:
        assert self._state is not None
        return self._state

    # --- update ------------------------------------------------------------------------------

    @workflow.update(name=UPDATE_QUALIFY)
    async def qualify(self, answers: QualifyInput) -> QualifyResult:
        await workflow.wait_condition(lambda: self._state is not None)
        assert self._defn is not None and self._state is not None
        persona = journey.apply_qualification(
            self._defn,
            self._state,
            answers.role,  # type: ignore[arg-type]
            answers.challenge,
            answers.urgency,  # type: ignore[arg-type]
            self._now(),
        )
        self._dirty = True
        return QualifyResult(persona=persona)

    @qualify.validator
    def _validate_qualify(self, answers: QualifyInput) -> None:
        problems = answers.problems()
        if problems:
            raise ValueError("invalid qualifier answers: " + "; ".join(problems))
        if self._state is not None and journey.is_ended(self._state):
            raise ValueError("the trial has ended; qualifier answers no longer apply")

    @workflow.update(name=UPDATE_MOVE_JOURNEY)
    async def move_journey(self, move: MoveJourney) -> MoveResult:
        """Moves the trial to another journey version at the next safe point: right away, between
        two steps, it continues as new with the same state and the new definition."""
        self._move = move
        self._dirty = True
        return MoveResult(
            moved_from=self._version.name if self._version else None, moved_to=move.version.name
        )

    @move_journey.validator
    def _validate_move(self, move: MoveJourney) -> None:
        problems = self._move_problems(move)
        if problems:
            raise ValueError("cannot move: " + "; ".join(problems))

    @workflow.query(name=QUERY_MOVE_PROBLEMS)
    def move_problems(self, move: MoveJourney) -> list[str]:
        """Why `move_journey` would refuse this move now (empty: it would move): a dry run."""
        return self._move_problems(move)

    def _move_problems(self, move: MoveJourney) -> list[str]:
        state, defn = self._state, self._defn
        if state is None or defn is None:
            return ["the trial has not loaded its journey yet"]
        if journey.is_ended(state):
            return ["the trial has ended"]
        if self._move is not None:
            return [f"it is already moving to {self._move.version.name}"]
        if self._version is not None and self._version.content_hash == move.version.content_hash:
            return [f"it already runs {self._version.name}"]
        path = journey.path_persona(defn, state)
        pending = [queued.message for queued in state.queued]
        pending += [moves.message_of(occurrence) for occurrence in state.held]
        return moves.problems(
            move.definition,
            persona=state.persona,
            arm=state.arm,
            current=moves.current_step(list(state.done), defn, path),
            pending=pending,
            old=defn,
        )

    # --- query -------------------------------------------------------------------------------

    @workflow.query(name=QUERY_STATUS)
    def status(self) -> TrialStatus:
        return self._status(self._now())

    def _status(self, now: datetime) -> TrialStatus:
        if self._state is None or self._defn is None:
            return shapes.starting_status(self._profile, self._clock.origin)
        return shapes.trial_status(
            self._defn, self._state, self._clock, self._version, self._next_wakeup, now
        )

"""What a trial tells the outside, built from its state: the requests of its send activities
(and their channel plans), its record in the database, its status.

Pure functions of the journey's state and the workflow's facts, passed in: no Temporal call,
so the workflow's replay stays its own business.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from activities.message_io import (
    CallFacts,
    ChannelPlan,
    Recipient,
    SendMessageInput,
    TrialFacts,
)
from activities.records import TrialSnapshot
from trialpath.core import journey
from trialpath.core.contract import (
    CallStatus,
    JourneyVersionRef,
    SentStatus,
    TrialProfile,
    TrialStatus,
)
from trialpath.core.definition import JourneyDefinition


def send_request(
    defn: JourneyDefinition,
    state: journey.TrialState,
    profile: TrialProfile,
    step: journey.Send,
    channel: str,
    now: datetime,
    workflow_id: str,
    max_attempts: int = 0,
) -> SendMessageInput:
    """What a send of the step on `channel` needs, as of `now`."""
    return SendMessageInput(
        workflow_id=workflow_id,
        user_id=state.user_id,
        occurrence=step.occurrence,
        message=step.message,
        channel=channel,
        category=step.category,
        # Whose copy: in the generic arm, marketing is the same for everyone.
        persona=(
            journey.path_persona(defn, state) if step.category == "marketing" else state.persona
        ),
        recipient=Recipient(
            name=profile.name,
            email=profile.email,
            phone=profile.phone,
            locale=profile.locale,
            timezone=profile.timezone,
            company=profile.company,
        ),
        trial=TrialFacts(
            day=journey.trial_day(state, now),
            days_left=journey.days_left(state, now),
            ends_on=state.ends_on,
            activated=state.activated_at is not None,
            activation_progress=journey.activation_progress(defn, state),
            activated_day=(
                journey.trial_day(state, state.activated_at) if state.activated_at else None
            ),
            extended_days=state.extended_days,
            plan=state.converted.plan if state.converted else None,
        ),
        call=CallFacts(
            at=state.call.at,
            agent=state.call.agent,
            duration_minutes=defn.call.duration_minutes,
            version=state.call.version,
        )
        if state.call.state != "none"
        else None,
        alert=step.extra or None,
        max_attempts=max_attempts,
        # A follow-up of an in-app message: not sent if the user has read that (rules 4).
        unless_read=(
            f"{workflow_id}:{step.unless_read}/in_app" if step.unless_read is not None else None
        ),
    )


def channel_plans(defn: JourneyDefinition, step: journey.Send) -> list[ChannelPlan]:
    """The step's channels for `send_step`: one with a fallback channel the step does not use
    already is settled after `fallback_after_attempts` provider calls, then falls back."""
    fallback = defn.message(step.message).fallback
    return [
        ChannelPlan(channel=channel)
        if fallback is None or fallback == channel or fallback in step.channels
        else ChannelPlan(
            channel=channel, max_attempts=defn.fallback_after_attempts, fallback=fallback
        )
        for channel in step.channels
    ]


def trial_snapshot(
    state: journey.TrialState,
    clock: journey.JourneyClock,
    workflow_id: str,
    version: JourneyVersionRef | None,
    status: TrialStatus,
    ended_at: datetime | None,
) -> TrialSnapshot:
    """The trial's row in the database (`record_progress`)."""
    real = clock.real
    return TrialSnapshot(
        user_id=state.user_id,
        workflow_id=workflow_id,
        signup_at=real(state.signup_at),
        persona=state.persona,
        persona_source=state.persona_source,
        persona_at=real(state.persona_at) if state.persona_at else None,
        stage=state.stage,
        urgency=state.urgency,
        activated=state.activated_at is not None,
        activated_at=real(state.activated_at) if state.activated_at else None,
        trial_ends_at=real(journey.trial_ends_at(state)),
        cs_owner=state.call.agent,
        experiment_arm=state.arm,
        journey_version=version.id if version else None,
        converted_plan=state.converted.plan if state.converted else None,
        mrr=state.converted.mrr if state.converted else None,
        converted_at=real(state.converted.at) if state.converted else None,
        ended_at=ended_at,
        status=status.model_dump(mode="json"),
    )


def starting_status(profile: TrialProfile, signup: datetime) -> TrialStatus:
    """The status of a trial that has not loaded its journey yet."""
    return TrialStatus(
        user_id=profile.user_id,
        persona=None,
        stage="qualifying",
        activated=False,
        activated_at=None,
        trial_ends_at=signup + timedelta(days=profile.trial_days or 14),
        next_wakeup=None,
        call=CallStatus(state="none", at=None, agent=None),
        sent=[],
        events_seen={},
        summary="Starting: loading the journey definition.",
    )


def trial_status(
    defn: JourneyDefinition,
    state: journey.TrialState,
    clock: journey.JourneyClock,
    version: JourneyVersionRef | None,
    next_wakeup: datetime | None,
    now: datetime,
) -> TrialStatus:
    """The whole state in plain words (the `status` query), times on the real clock."""
    real = clock.real
    return TrialStatus(
        user_id=state.user_id,
        persona=state.persona,
        stage=journey.stage_of(defn, state, now),
        activated=state.activated_at is not None,
        activated_at=real(state.activated_at) if state.activated_at else None,
        trial_ends_at=real(journey.trial_ends_at(state)),
        next_wakeup=real(next_wakeup) if next_wakeup else None,
        call=CallStatus(
            state=state.call.state,
            at=real(state.call.at) if state.call.at else None,
            agent=state.call.agent,
        ),
        sent=[
            SentStatus(
                key=s.key,
                channel=s.channel,
                template=s.template,
                at=real(s.at),
                day=s.day,
                message=s.message,
                due=real(s.due) if s.due else None,
            )
            for s in state.sent
        ],
        events_seen=dict(state.events_seen),
        needs_attention=journey.needs_attention(defn, state, now),
        open_tasks=dict(state.tasks),
        urgency=state.urgency,
        unsubscribed=list(state.unsubscribed),
        trial_day=journey.trial_day(state, now),
        ends_on=state.ends_on,
        summary=journey.summary(defn, state, now),
        journey_version=version.name if version else None,
        skipped=[o for o, done in state.done.items() if done == "skipped"],
    )

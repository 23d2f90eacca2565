"""Recording trial progress in the database: the trial row, events and stage changes, and the
support tasks the journey opens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio import activity

from trialpath.core.contract import Acquisition, TrialProfile
from trialpath.operations.logs import bind_activity
from trialpath.operations.metrics import ACTIVATIONS
from trialpath.operations.models import CsTask, StageChange, Trial, TrialEvent, utcnow


class EventRecord(BaseModel):
    id: str
    name: str
    occurred_at: datetime
    counted: bool
    properties: dict[str, Any] = {}


class StageRecord(BaseModel):
    seq: int
    from_stage: str | None
    to_stage: str
    at: datetime


class TrialSnapshot(BaseModel):
    user_id: str
    workflow_id: str
    signup_at: datetime
    persona: str | None
    persona_source: str | None = None
    """signup, qualifier, inferred or defaulted (`journey.PersonaSource`)."""
    persona_at: datetime | None = None
    stage: str
    urgency: str | None
    activated: bool
    activated_at: datetime | None
    trial_ends_at: datetime
    cs_owner: str | None
    experiment_arm: str
    journey_version: int | None = None
    """The stored journey version (`journey_versions.id`); None before versions existed."""
    converted_plan: str | None
    mrr: float | None
    converted_at: datetime | None
    ended_at: datetime | None
    status: dict[str, Any]


class RecordProgressInput(BaseModel):
    trial: TrialSnapshot
    profile: TrialProfile | None = None
    """Sent once, on the first record of a run: personal data is not repeated in history."""
    events: list[EventRecord] = []
    stages: list[StageRecord] = []


class CsTaskInput(BaseModel):
    key: str
    user_id: str
    agent: str | None
    reason: str
    kind: str = "stalled"
    workflow_id: str | None = None


class RecordActivities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn(name="record_progress")
    def record_progress(self, request: RecordProgressInput) -> None:
        """Idempotent: events are keyed by id and stage changes by position."""
        snap = request.trial
        bind_activity(user_id=snap.user_id)
        with Session(self.engine) as session:
            # Locked while this write is made: an erasure waits for it, or it waits for the
            # erasure and then finds the trial erased.
            trial = session.get(Trial, snap.user_id, with_for_update=True)
            if trial is not None and trial.erased_at is not None:
                # Erased while this write was on its way: write nothing back.
                activity.logger.info("trial %s was erased: progress not recorded", snap.user_id)
                return
            if trial is None:
                trial = Trial(
                    user_id=snap.user_id, workflow_id=snap.workflow_id, signup_at=snap.signup_at
                )
            newly_activated = snap.activated and not trial.activated
            for name, value in snap.model_dump(exclude={"user_id", "signup_at"}).items():
                setattr(trial, name, value)
            if request.profile is not None:
                profile = request.profile
                trial.name = profile.name
                trial.email = profile.email
                trial.phone = profile.phone
                trial.locale = profile.locale
                trial.timezone = profile.timezone
                trial.company = profile.company or None
                trial.seconds_per_day = profile.seconds_per_day
                acquired = profile.source or Acquisition()
                trial.source = acquired.channel()
                trial.utm_source = acquired.utm_source
                trial.utm_medium = acquired.utm_medium
                trial.utm_campaign = acquired.utm_campaign
                trial.referrer = acquired.referrer
                trial.landing_page = acquired.landing_page
            trial.updated_at = utcnow()
            session.add(trial)
            ids = [e.id for e in request.events]
            known = {
                row.id: row
                for row in (
                    session.exec(select(TrialEvent).where(col(TrialEvent.id).in_(ids))).all()
                    if ids
                    else []
                )
            }
            for event in request.events:
                row = known.get(event.id)
                if row is None:
                    row = TrialEvent(user_id=snap.user_id, **event.model_dump())
                    known[event.id] = row
                    session.add(row)
                elif (row.counted, row.occurred_at) != (event.counted, event.occurred_at):
                    # Stored first by the API, which cannot tell whether it counts (nor, for an
                    # event sent without a time, when the workflow received it).
                    row.counted = event.counted
                    row.occurred_at = event.occurred_at
                    session.add(row)
            for change in request.stages:
                exists = session.exec(
                    select(StageChange).where(
                        StageChange.user_id == snap.user_id, StageChange.seq == change.seq
                    )
                ).first()
                if exists is None:
                    session.add(StageChange(user_id=snap.user_id, **change.model_dump()))
            session.commit()
        if newly_activated:  # Counted once: a retry finds the row already activated.
            ACTIVATIONS.inc()

    @activity.defn(name="open_cs_task")
    def open_cs_task(self, request: CsTaskInput) -> None:
        with Session(self.engine) as session:
            if session.get(CsTask, request.key) is None:
                session.add(
                    CsTask(
                        key=request.key,
                        user_id=request.user_id,
                        workflow_id=request.workflow_id,
                        kind=request.kind,
                        agent=request.agent,
                        owner=request.agent,
                        reason=request.reason,
                    )
                )
                session.commit()

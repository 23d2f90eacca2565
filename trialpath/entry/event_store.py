"""Product events written to the database, each once by its idempotency key: those of a
running trial with the signal that tells it (sent after the commit), those of an ended trial
alone (kept uncounted for `events_after_end_days`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from trialpath.core.contract import SIGNAL_EVENT
from trialpath.entry.commands import EventResult, EventsAccepted, NewEvent, TrialEnded
from trialpath.operations.models import PendingSignal, Trial, TrialEvent


def _new(
    session: Session, user_id: str, events: Sequence[NewEvent]
) -> list[tuple[NewEvent, str, str, bool]]:
    """Each event with its key (the caller's, or a new one), its row id and whether that row
    exists already (stored by an earlier request, or earlier in this one)."""
    keys = [e.idempotency_key or str(uuid.uuid4()) for e in events]
    ids = [f"{user_id}:{key}" for key in keys]
    known = set(session.exec(select(TrialEvent.id).where(col(TrialEvent.id).in_(ids))).all())
    found = []
    for event, key, event_id in zip(events, keys, ids, strict=True):
        found.append((event, key, event_id, event_id in known))
        known.add(event_id)
    return found


def _row(
    event_id: str, user_id: str, event: NewEvent, occurred_at: datetime, counted: bool = True
) -> TrialEvent:
    return TrialEvent(
        id=event_id,
        user_id=user_id,
        name=event.name,
        occurred_at=occurred_at,
        counted=counted,
        properties=event.properties,
    )


def accepted(results: list[EventResult]) -> EventsAccepted:
    new = sum(not r.duplicate for r in results)
    return EventsAccepted(accepted=new, duplicates=len(results) - new, events=results)


def store_events(
    engine: Engine,
    user_id: str,
    workflow_id: str,
    events: Sequence[NewEvent],
    now: datetime,
    *,
    running: bool = False,
) -> tuple[list[EventResult], list[PendingSignal]] | None:
    """A running trial's events and, in the same transaction, the signal of each new one
    (`PendingSignal`, sent after the commit): the results, and the signals' rows.

    Unless the caller knows the trial runs (`running`), the trial's row must show it: recorded,
    neither ended nor erased. Otherwise nothing is written and the answer is None: the caller
    asks Temporal (a trial not recorded yet, or one that ended). A trial whose row still shows
    it running but whose workflow has just closed gets its events uncounted when their signal
    finds it gone (`SignalQueue`)."""
    results: list[EventResult] = []
    rows: list[PendingSignal] = []
    # Rows keep what was written after the commit: they go to the signal queue as they are.
    with Session(engine, expire_on_commit=False) as session:
        if not running:
            trial = session.get(Trial, user_id)
            if trial is None or trial.ended_at is not None or trial.erased_at is not None:
                return None
        for event, key, event_id, duplicate in _new(session, user_id, events):
            results.append(EventResult(id=key, name=event.name, duplicate=duplicate))
            if duplicate:
                continue
            session.add(_row(event_id, user_id, event, event.occurred_at or now))
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
        return results, rows


def store_after_end(
    engine: Engine,
    user_id: str,
    events: Sequence[NewEvent],
    now: datetime,
    after_end_days: float,
) -> EventsAccepted:
    """Events of a trial whose workflow has ended: stored once each (`counted` false), no
    signal; refused (409) past `after_end_days` on the trial's clock, or once the user's data
    was erased."""
    with Session(engine) as session:
        trial = session.get(Trial, user_id)
        if trial is None:
            raise TrialEnded(f"the trial of user {user_id} has ended")
        if trial.erased_at is not None:
            raise TrialEnded(f"the trial of user {user_id} has ended and its data was erased")
        ended = trial.ended_at or trial.updated_at
        if now > ended + timedelta(seconds=after_end_days * trial.seconds_per_day):
            raise TrialEnded(
                f"the trial of user {user_id} ended on {ended:%Y-%m-%d}, more than "
                f"{after_end_days:g} days ago: its events are no longer kept"
            )
        results: list[EventResult] = []
        for event, key, event_id, duplicate in _new(session, user_id, events):
            results.append(EventResult(id=key, name=event.name, duplicate=duplicate, counted=False))
            if duplicate:
                continue
            session.add(_row(event_id, user_id, event, event.occurred_at or now, counted=False))
        session.commit()
    return accepted(results)


def store_ended_event(engine: Engine, user_id: str, event: NewEvent, now: datetime) -> bool:
    """One event of an ended trial, uncounted (a survey answer); False if it was stored
    already."""
    with Session(engine) as session:
        event_id = f"{user_id}:{event.idempotency_key}"
        if session.get(TrialEvent, event_id) is not None:
            return False
        session.add(_row(event_id, user_id, event, now, counted=False))
        session.commit()
        return True

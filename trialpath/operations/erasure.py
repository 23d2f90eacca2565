"""Erasing a user's personal data from every store of the database (GDPR).

`COVERAGE` says, for every table, what erasure does to it; a table missing from it fails the
tests (tests/test_erasure.py), so a new table that holds user data cannot be forgotten.
Aggregate rows (stages, counts, times) stay, anonymised, for the KPIs. The workflow histories
are deleted by `Trials.cancel(erase=True)`; the outbox files here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from trialpath.delivery.outbox import file_stem
from trialpath.operations.audit import pseudonymise
from trialpath.operations.models import (
    CallSlot,
    CsTask,
    IdempotencyRecord,
    Message,
    MessageEvent,
    PendingSignal,
    Trial,
    TrialEvent,
    utcnow,
)

ERASED = "erased"

COVERAGE: dict[str, str] = {
    "trials": "name, email, phone, company, referrer and landing page wiped; erased_at set "
    "(nothing writes them back); the source and UTM parameters (campaign-level) stay",
    "trial_events": "properties wiped (they can hold anything the product sent)",
    "messages": "recipient, subject, bodies and provider error wiped; outbox files deleted",
    "message_events": "provider payloads wiped (addresses, IP, user agent, SMS text)",
    "pending_signals": "payloads wiped; undelivered ones given up",
    "idempotency_records": "stored answers deleted",
    "audit_entries": "kept, the user id replaced by a keyed pseudonym (who did what stays)",
    "preferences": "kept: the opt-out must outlive the data (user id and channel only)",
    "cs_tasks": "support's closing notes wiped; kept: user id, kind, owner, outcome and times",
    "stage_changes": "kept: stages and times (no personal data)",
    "agent_assignments": "kept: workflow id and agent (no personal data)",
    "agent_cursor": "no user data",
    "agents": "no user data (the success-call agents' settings)",
    "journey_versions": "no user data (the journey definitions trials ran)",
    "call_slots": "kept: workflow id, agent and times (no personal data); calls still to come "
    "are freed (the erased trial's workflow is terminated before it could free them)",
    "alembic_version": "no user data",
}


@dataclass
class ErasedRows:
    """What one erasure changed, per store; all zero when there was nothing left."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, store: str, count: int = 1) -> None:
        self.counts[store] = self.counts.get(store, 0) + count

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def erase_rows(
    engine: Engine,
    user_id: str,
    outbox: Path,
    cancelled: bool,
    now: datetime | None = None,
    pseudonym: str = "",
) -> ErasedRows:
    """Wipes the user's personal data in every table (see `COVERAGE`), in one transaction.
    Idempotent: a second call changes (and reports) nothing."""
    done = ErasedRows()
    now = now or utcnow()
    workflow_id = f"trial-{user_id}"
    with Session(engine) as session:
        trial = session.get(Trial, user_id, with_for_update=True)
        if trial is not None:
            if any((trial.name, trial.email, trial.phone, trial.company, trial.referrer)):
                done.add("trials")
            trial.name = trial.email = trial.phone = trial.company = None
            # A URL can carry anything (a query string with an address): wiped too.
            trial.referrer = trial.landing_page = None
            trial.erased_at = trial.erased_at or now
            if cancelled:
                trial.stage = "cancelled"
                trial.ended_at = trial.ended_at or now
                trial.status = {**trial.status, "stage": "cancelled"}
            session.add(trial)
        for event in session.exec(select(TrialEvent).where(TrialEvent.user_id == user_id)):
            if event.properties:
                event.properties = {}
                session.add(event)
                done.add("trial_events")
        keys = []
        for message in session.exec(select(Message).where(Message.user_id == user_id)):
            keys.append(message.key)
            if message.recipient != ERASED or message.html or message.text or message.error:
                message.recipient = ERASED
                message.subject = message.html = message.text = ""
                message.error = None
                session.add(message)
                done.add("messages")
            for suffix in (".eml", ".txt"):
                path = outbox / (file_stem(message.key) + suffix)
                if path.exists():
                    path.unlink(missing_ok=True)
                    done.add("outbox files")
        if keys:
            events = select(MessageEvent).where(col(MessageEvent.message_key).in_(keys))
            for provider_event in session.exec(events):
                if provider_event.payload:
                    provider_event.payload = {}
                    session.add(provider_event)
                    done.add("message_events")
        pending = select(PendingSignal).where(PendingSignal.workflow_id == workflow_id)
        for signal in session.exec(pending):
            if signal.payload or (signal.delivered_at is None and not signal.failed):
                signal.payload = {}
                if signal.delivered_at is None:
                    signal.failed = True
                    signal.last_error = "the user's data was erased"
                session.add(signal)
                done.add("pending_signals")
        for task in session.exec(select(CsTask).where(CsTask.user_id == user_id)):
            if task.note:
                task.note = None
                session.add(task)
                done.add("cs_tasks")
        to_come = select(CallSlot).where(
            CallSlot.workflow_id == workflow_id, col(CallSlot.start_at) > now
        )
        for slot in session.exec(to_come):
            session.delete(slot)
            done.add("call_slots")
        stored = select(IdempotencyRecord).where(IdempotencyRecord.user_id == user_id)
        for record in session.exec(stored):
            session.delete(record)
            done.add("idempotency_records")
        if pseudonym and (changed := pseudonymise(session, user_id, pseudonym)):
            done.add("audit_entries", changed)
        session.commit()
    return done


def is_erased(engine: Engine, user_id: str) -> bool:
    with Session(engine) as session:
        trial = session.get(Trial, user_id)
        return trial is not None and trial.erased_at is not None


@dataclass
class Purged:
    idempotency_records: int = 0
    pending_signals: int = 0


def purge_expired(
    engine: Engine,
    idempotency_hours: float,
    delivered_signal_days: float,
    now: datetime | None = None,
) -> Purged:
    """Deletes what is kept only for a while: stored answers to retried requests older than
    `idempotency_hours`, and signals delivered (or given up) more than `delivered_signal_days`
    ago. Nothing here grows forever; undelivered signals are kept until delivered."""
    now = now or utcnow()
    purged = Purged()
    with Session(engine) as session:
        old_answers = select(IdempotencyRecord).where(
            col(IdempotencyRecord.created_at) < now - timedelta(hours=idempotency_hours),
            col(IdempotencyRecord.status_code).is_not(None),
        )
        for record in session.exec(old_answers):
            session.delete(record)
            purged.idempotency_records += 1
        cutoff = now - timedelta(days=delivered_signal_days)
        done_signals = select(PendingSignal).where(
            (col(PendingSignal.delivered_at) < cutoff)
            | (col(PendingSignal.failed).is_(True) & (col(PendingSignal.created_at) < cutoff))
        )
        for signal in session.exec(done_signals):
            session.delete(signal)
            purged.pending_signals += 1
        session.commit()
    return purged

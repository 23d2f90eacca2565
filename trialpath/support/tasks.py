"""Support's work queue: the tasks the journey opens for a human (table `cs_tasks`).

The trial's workflow opens a task when a human should step in: a stalled B2B or urgent user
after the nudge (`stalled`), an activated user whose activity dropped (`inactive`). Support
lists the queue, claims a task, snoozes it, and closes it with an outcome. Closing queues the
`task_closed` signal for the trial's workflow in the same transaction (a `PendingSignal`, like
product events), so the outcome reaches the journey even if Temporal is away at that moment,
and it is counted by the KPIs (`kpis.support_task_rate`, `kpis.support_reach_rate`).

A task is in one state at a time, derived from its columns:

- `open`: nobody has claimed it (it may still have an owner: the trial's CS agent);
- `claimed`: someone said they are on it;
- `snoozed`: out of the queue until `snoozed_until` (then open or claimed again);
- `closed`: done, with an outcome. Closing again with the same outcome is a no-op (a retried
  request); with another outcome it is a conflict.

Concurrent claims and closes are decided by the database (a conditional UPDATE), on SQLite and
PostgreSQL alike: two agents claiming the same task at once get one success and one 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field, model_validator
from sqlalchemy import ColumnElement, Engine, and_, func, or_, update
from sqlmodel import Session, col, select

from trialpath.core.contract import SIGNAL_TASK_CLOSED, workflow_id_for
from trialpath.core.journey import TaskOutcome
from trialpath.entry.commands import Command, InvalidRequest, TrialConflict, TrialProblem
from trialpath.operations.models import CsTask, PendingSignal, Trial, utcnow

TaskState = Literal["open", "claimed", "snoozed", "closed"]
StateFilter = Literal["open", "claimed", "snoozed", "closed", "active", "all"]
"""`active`: everything not closed (open, claimed and snoozed)."""
MAX_SNOOZE = timedelta(days=30)
MAX_PAGE = 500

OwnerName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Who takes the task: an agent's name as support knows it.",
    ),
]


class TaskNotFound(TrialProblem):
    status = 404
    title = "Task not found"


class TaskConflict(TrialConflict):
    title = "Task conflict"


# --- Views and commands ------------------------------------------------------------------------


class TaskView(BaseModel):
    key: str
    """`<workflow id>:<occurrence>`; the id in every task URL."""
    user_id: str
    kind: str
    reason: str
    state: TaskState
    owner: str | None
    agent: str | None
    """The trial's CS agent when the task was opened."""
    persona: str | None = None
    stage: str | None = None
    created_at: datetime
    claimed_at: datetime | None = None
    snoozed_until: datetime | None = None
    closed_at: datetime | None = None
    outcome: str | None = None
    note: str | None = None


class TaskPage(BaseModel):
    tasks: list[TaskView]
    total: int
    """Tasks matching the filters (`tasks` holds the first `limit` of them, oldest first)."""


class ClaimTask(Command):
    owner: OwnerName
    force: bool = False
    """Take over a task someone else claimed."""


class SnoozeTask(Command):
    until: AwareDatetime | None = None
    hours: float | None = Field(default=None, gt=0, le=MAX_SNOOZE.total_seconds() / 3600)

    @model_validator(mode="after")
    def _one(self) -> SnoozeTask:
        if (self.until is None) == (self.hours is None):
            raise ValueError("give exactly one of `until` and `hours`")
        return self

    def resolve(self, now: datetime) -> datetime:
        until = self.until if self.until is not None else now + timedelta(hours=self.hours or 0)
        if until <= now:
            raise InvalidRequest(f"`until` is in the past ({until.isoformat()})", field="until")
        if until > now + MAX_SNOOZE:
            raise InvalidRequest(
                f"`until` is in the future ({until.isoformat()}) by more than 30 days: a task "
                "can be snoozed 30 days at most",
                field="until",
            )
        return until


class CloseTask(Command):
    outcome: TaskOutcome
    note: str | None = Field(default=None, max_length=2000)
    owner: OwnerName | None = None
    """Who closed it (default: its owner)."""


@dataclass(frozen=True)
class Closed:
    task: TaskView
    signal_id: int | None
    """The queued `task_closed` signal; None when the task was already closed that way."""


# --- Reading -----------------------------------------------------------------------------------


def user_of(key: str) -> str | None:
    """The user a task key is about (`trial-<user id>:<occurrence>`), or None."""
    prefix = workflow_id_for("")
    if not key.startswith(prefix) or ":" not in key[len(prefix) :]:
        return None
    return key[len(prefix) : key.rindex(":")] or None


def state_of(task: CsTask, now: datetime) -> TaskState:
    if task.done:
        return "closed"
    if task.snoozed_until is not None and task.snoozed_until > now:
        return "snoozed"
    return "claimed" if task.claimed_at is not None else "open"


def _state_clause(state: StateFilter, now: datetime) -> ColumnElement[bool] | None:
    done = col(CsTask.done)
    snoozed = col(CsTask.snoozed_until).is_not(None) & (col(CsTask.snoozed_until) > now)
    awake = or_(col(CsTask.snoozed_until).is_(None), col(CsTask.snoozed_until) <= now)
    claimed = col(CsTask.claimed_at).is_not(None)
    match state:
        case "all":
            return None
        case "active":
            return done.is_(False)
        case "closed":
            return done.is_(True)
        case "snoozed":
            return and_(done.is_(False), snoozed)
        case "claimed":
            return and_(done.is_(False), awake, claimed)
        case "open":
            return and_(done.is_(False), awake, col(CsTask.claimed_at).is_(None))


def list_tasks(
    engine: Engine,
    *,
    state: StateFilter = "active",
    owner: str | None = None,
    unowned: bool = False,
    kind: str | None = None,
    user_id: str | None = None,
    limit: int = 100,
    now: datetime | None = None,
) -> TaskPage:
    """The queue, oldest first, with the trial's persona and stage beside each task."""
    now = now or utcnow()
    filters: list[ColumnElement[bool]] = []
    clause = _state_clause(state, now)
    if clause is not None:
        filters.append(clause)
    if owner is not None:
        filters.append(col(CsTask.owner) == owner)
    if unowned:
        filters.append(col(CsTask.owner).is_(None))
    if kind is not None:
        filters.append(col(CsTask.kind) == kind)
    if user_id is not None:
        filters.append(col(CsTask.user_id) == user_id)
    with Session(engine) as session:
        total = session.exec(select(func.count()).select_from(CsTask).where(*filters)).one()
        rows = session.exec(
            select(CsTask, Trial.persona, Trial.stage)
            .join(Trial, col(Trial.user_id) == col(CsTask.user_id), isouter=True)
            .where(*filters)
            .order_by(col(CsTask.created_at), col(CsTask.key))
            .limit(min(limit, MAX_PAGE))
        ).all()
        return TaskPage(
            tasks=[_view(task, now, persona, stage) for task, persona, stage in rows],
            total=int(total),
        )


def get_task(engine: Engine, key: str, now: datetime | None = None) -> TaskView:
    now = now or utcnow()
    with Session(engine) as session:
        task = session.get(CsTask, key)
        if task is None:
            raise TaskNotFound(f"no task {key!r}")
        trial = session.get(Trial, task.user_id)
        return _view(task, now, trial.persona if trial else None, trial.stage if trial else None)


def _view(task: CsTask, now: datetime, persona: str | None, stage: str | None) -> TaskView:
    return TaskView(
        key=task.key,
        user_id=task.user_id,
        kind=task.kind,
        reason=task.reason,
        state=state_of(task, now),
        owner=task.owner,
        agent=task.agent,
        persona=persona,
        stage=stage,
        created_at=task.created_at,
        claimed_at=task.claimed_at,
        snoozed_until=task.snoozed_until if not task.done else None,
        closed_at=task.closed_at,
        outcome=task.outcome,
        note=task.note,
    )


# --- Changing ----------------------------------------------------------------------------------


def claim_task(
    engine: Engine, key: str, command: ClaimTask, now: datetime | None = None
) -> TaskView:
    """Makes the task `command.owner`'s. A task claimed by someone else is a conflict unless
    `force`; claiming one's own task again changes nothing; a snoozed task wakes up."""
    now = now or utcnow()
    current = get_task(engine, key, now)
    if current.state == "closed":
        raise TaskConflict(f"task {key!r} is closed ({current.outcome})")
    if current.owner == command.owner and current.state == "claimed":
        return current
    taken_by_other = col(CsTask.claimed_at).is_not(None) & (col(CsTask.owner) != command.owner)
    conditions = [col(CsTask.key) == key, col(CsTask.done).is_(False)]
    if not command.force:
        conditions.append(~taken_by_other)
    with Session(engine) as session:
        result = session.execute(
            update(CsTask)
            .where(*conditions)
            .values(owner=command.owner, claimed_at=now, snoozed_until=None, updated_at=now)
        )
        session.commit()
    if result.rowcount == 0:  # type: ignore[attr-defined]
        latest = get_task(engine, key, now)
        if latest.state == "closed":
            raise TaskConflict(f"task {key!r} was closed meanwhile ({latest.outcome})")
        raise TaskConflict(
            f"task {key!r} is claimed by {latest.owner} since "
            f"{latest.claimed_at.isoformat() if latest.claimed_at else '?'}; "
            "claim it with force to take it over"
        )
    return get_task(engine, key, now)


def snooze_task(
    engine: Engine, key: str, command: SnoozeTask, now: datetime | None = None
) -> TaskView:
    """Takes the task out of the queue until a time (30 days at most); it keeps its owner."""
    now = now or utcnow()
    until = command.resolve(now)
    get_task(engine, key, now)  # 404 first
    with Session(engine) as session:
        result = session.execute(
            update(CsTask)
            .where(col(CsTask.key) == key, col(CsTask.done).is_(False))
            .values(snoozed_until=until, updated_at=now)
        )
        session.commit()
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise TaskConflict(f"task {key!r} is closed: it cannot be snoozed")
    return get_task(engine, key, now)


def close_task(engine: Engine, key: str, command: CloseTask, now: datetime | None = None) -> Closed:
    """Closes the task with an outcome and queues `task_closed` for the trial's workflow, in
    one transaction. The same close sent again (a retry) returns the task unchanged."""
    now = now or utcnow()
    with Session(engine) as session:
        task = session.get(CsTask, key)
        if task is None:
            raise TaskNotFound(f"no task {key!r}")
        owner = command.owner or task.owner
        result = session.execute(
            update(CsTask)
            .where(col(CsTask.key) == key, col(CsTask.done).is_(False))
            .values(
                done=True,
                closed_at=now,
                outcome=command.outcome,
                note=command.note,
                owner=owner,
                snoozed_until=None,
                updated_at=now,
            )
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            session.rollback()
            session.expire_all()
            latest = session.get(CsTask, key)
            assert latest is not None
            if latest.outcome == command.outcome and (command.note in (None, latest.note)):
                return Closed(task=get_task(engine, key, now), signal_id=None)
            raise TaskConflict(
                f"task {key!r} was already closed as {latest.outcome} "
                f"on {(latest.closed_at or now).isoformat()}"
            )
        signal = PendingSignal(
            workflow_id=task.workflow_id or workflow_id_for(task.user_id),
            signal=SIGNAL_TASK_CLOSED,
            payload={
                "task": key,
                "kind": task.kind,
                "outcome": command.outcome,
                "accepted_at": now.isoformat(),
            },
        )
        session.add(signal)
        session.commit()
        signal_id = signal.id
    return Closed(task=get_task(engine, key, now), signal_id=signal_id)

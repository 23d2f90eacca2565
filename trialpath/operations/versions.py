"""Journey versions: every definition a trial has run, stored once per content (the
`journey_versions` table), and what the CLI reads of them.

A version is identified by the SHA-256 of the definition's canonical JSON (`content_hash`):
re-formatting the file or editing its comments is the same version; changing one drip day is
a new one. Its number (`id`, shown `v3`) is the order it was first used in. The worker stores a
definition when a trial loads it (`register`), the trial's row and its `JourneyVersion` search
attribute carry the number, and the KPIs can be split by it (`--by journey`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, case, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from trialpath.core import moves
from trialpath.core.contract import (
    QUERY_MOVE_PROBLEMS,
    UPDATE_MOVE_JOURNEY,
    WORKFLOW_ID_PREFIX,
    WORKFLOW_TYPE,
    JourneyVersionRef as VersionRef,
    MoveJourney,
    MoveResult,
)
from trialpath.core.definition import JourneyDefinition
from trialpath.operations.models import JourneyVersion, Message, Trial


class VersionError(ValueError):
    """A version asked for does not exist, or a file is not a journey."""


def content_hash(defn: JourneyDefinition) -> str:
    canonical = json.dumps(
        defn.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _ref(row: JourneyVersion) -> VersionRef:
    assert row.id is not None
    return VersionRef(id=row.id, content_hash=row.content_hash, label=row.label)


def register(engine: Engine, defn: JourneyDefinition, source: str | None = None) -> VersionRef:
    """The stored version of `defn`, stored now if it is new. Concurrent workers storing the
    same new definition get the same row (the hash is unique: the loser reads the winner's).
    Numbers are given here, the next after the highest, not by a database sequence: a lost
    race must not leave a gap (PostgreSQL spends a sequence value on a failed insert)."""
    digest = content_hash(defn)
    for _ in range(20):
        with Session(engine) as session:
            row = session.exec(
                select(JourneyVersion).where(JourneyVersion.content_hash == digest)
            ).first()
            if row is not None:
                return _ref(row)
            highest = session.exec(select(func.max(JourneyVersion.id))).one()
            row = JourneyVersion(
                id=(highest or 0) + 1,
                content_hash=digest,
                label=defn.version[:100],
                definition=defn.model_dump(mode="json"),
                source=source[:500] if source else None,
            )
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()  # another version took the number, or this one was stored
                continue
            session.refresh(row)
            return _ref(row)
    raise RuntimeError(f"journey version {digest} neither stored nor found")  # pragma: no cover


def parse_version(text: str) -> int:
    """`3` or `v3`."""
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit() or int(digits) < 1:
        raise VersionError(f"a version is a number like v3, got {text!r}")
    return int(digits)


def load(engine: Engine, version: int) -> tuple[VersionRef, JourneyDefinition]:
    with Session(engine) as session:
        row = session.get(JourneyVersion, version)
        if row is None:
            raise VersionError(f"no journey version v{version} (see `trialpath journey versions`)")
        return _ref(row), JourneyDefinition.model_validate(row.definition)


@dataclass(frozen=True)
class VersionRow:
    ref: VersionRef
    created_at: datetime
    source: str | None
    trials: int
    running: int


def list_versions(engine: Engine) -> list[VersionRow]:
    with Session(engine) as session:
        counts = {
            version: (total, int(running or 0))
            for version, total, running in session.exec(
                select(
                    Trial.journey_version,
                    func.count(),
                    func.sum(case((col(Trial.ended_at).is_(None), 1), else_=0)),
                ).group_by(col(Trial.journey_version))
            ).all()
        }
        rows = session.exec(select(JourneyVersion).order_by(col(JourneyVersion.id))).all()
        return [
            VersionRow(
                _ref(row),
                row.created_at,
                row.source,
                counts.get(row.id, (0, 0))[0],
                counts.get(row.id, (0, 0))[1],
            )
            for row in rows
        ]


# --- diff ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    path: str
    before: Any
    after: Any


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else str(key), out)
    elif (
        isinstance(value, list)
        and value
        and all(isinstance(item, dict) and ("message" in item or "name" in item) for item in value)
    ):
        # Drip steps and agents: matched by their message or name, not their position, so
        # inserting a step reads as one step added.
        for item in value:
            key = item.get("message") or item.get("name")
            _flatten(item, f"{path}[{key}]", out)
    else:
        out[path] = value


def diff(before: JourneyDefinition, after: JourneyDefinition) -> list[Change]:
    """Every setting that differs, by path (`personas.business.drip[drip_automate].day`);
    `before`/`after` None where it is absent on one side."""
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(before.model_dump(mode="json"), "", a)
    _flatten(after.model_dump(mode="json"), "", b)
    changes = []
    for path in [*a, *(p for p in b if p not in a)]:
        if a.get(path) != b.get(path) or (path in a) != (path in b):
            changes.append(Change(path, a.get(path), b.get(path)))
    return changes


# --- plan --------------------------------------------------------------------------------------


@dataclass
class PlanGroup:
    """Running trials on one version and path, at one current step."""

    version: int | None
    path: str | None
    current: str | None
    trials: int = 0
    movable: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    differences: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(message, change) → trials it concerns."""


@dataclass
class Plan:
    target: str
    groups: list[PlanGroup]

    @property
    def trials(self) -> int:
        return sum(g.trials for g in self.groups)

    @property
    def movable(self) -> int:
        return sum(g.movable for g in self.groups)


def plan(engine: Engine, new: JourneyDefinition, target: str, now: datetime | None = None) -> Plan:
    """What moving every running trial to `new` would do, from what the database knows: each
    trial's version, path, the drip steps it was sent, and its trial day. The workflow decides
    for itself when asked to move (the same rules on its exact state): this is the preview."""
    now = now or datetime.now(UTC)
    digest = content_hash(new)
    with Session(engine) as session:
        trials = session.exec(select(Trial).where(col(Trial.ended_at).is_(None))).all()
        sent: dict[str, set[str]] = {}
        for user_id, step in session.exec(
            select(Message.user_id, Message.step)
            .where(col(Message.step).startswith(moves.DRIP))
            .distinct()
        ).all():
            # `drip.<message>/<channel>`: the occurrence, whatever the channel.
            sent.setdefault(user_id, set()).add(step.split("/", 1)[0])
        definitions: dict[int, JourneyDefinition] = {}
        hashes: dict[int, str] = {}
        for row in session.exec(select(JourneyVersion)).all():
            assert row.id is not None
            definitions[row.id] = JourneyDefinition.model_validate(row.definition)
            hashes[row.id] = row.content_hash
    groups: dict[tuple[int | None, str | None, str | None], PlanGroup] = {}
    for trial in trials:
        version = trial.journey_version
        old = definitions.get(version) if version is not None else None
        if version is not None and hashes.get(version) == digest:
            continue  # already there
        done = sorted(sent.get(trial.user_id, set()))
        path = moves.path_of(old or new, trial.persona, trial.experiment_arm)
        current = moves.current_step(done, old or new, path)
        key = (version, path, current)
        group = groups.setdefault(key, PlanGroup(version, path, current))
        group.trials += 1
        found = (
            ["its version is not known (started before versions were recorded)"]
            if old is None
            else moves.problems(
                new,
                persona=trial.persona,
                arm=trial.experiment_arm,
                current=current,
                pending=[],
                old=old,
            )
        )
        if found or old is None:
            group.problems.update(found)
            continue
        group.movable += 1
        day = _trial_day(trial, now)
        finished = {d[len(moves.DRIP) :] for d in done}
        new_path = moves.path_of(new, trial.persona, trial.experiment_arm)
        for difference in moves.compare(
            moves.upcoming(old, path, day, finished), moves.upcoming(new, new_path, day, finished)
        ):
            if difference.change != "same":
                group.differences[(difference.message, difference.change)] += 1
    ordered = sorted(groups.values(), key=lambda g: (g.version or 0, g.path or "", g.current or ""))
    return Plan(target, ordered)


def _trial_day(trial: Trial, now: datetime) -> int:
    """Whole journey days since signup (the plan's estimate; the workflow uses local dates)."""
    seconds = (now - trial.signup_at).total_seconds()
    return max(0, int(seconds // (trial.seconds_per_day or 86400.0)))


# --- moving running trials ---------------------------------------------------------------------


@dataclass(frozen=True)
class MoveOutcome:
    user_id: str
    workflow_id: str
    moved: bool
    detail: str
    """`v1 → v2`, or why it did not move."""


def running_query(where: str | None) -> str:
    """The visibility query of the running trials, narrowed by `where` (e.g. `Persona =
    'business' AND JourneyVersion = 'v1'`, as in the Web UI's saved views)."""
    query = f"WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'"
    return f"{query} AND ({where})" if where else query


async def running_trials(client: Client, where: str | None) -> list[str]:
    """Workflow ids of the running trials `where` selects."""
    try:
        return [execution.id async for execution in client.list_workflows(running_query(where))]
    except RPCError as err:
        raise VersionError(f"Temporal refused the query {where!r}: {err.message}") from err


async def move_trial(
    client: Client, workflow_id: str, move: MoveJourney, *, dry_run: bool
) -> MoveOutcome:
    """Asks one trial to move (or, dry, whether it would): its workflow decides, by the same
    rules as the plan on its exact state, and refuses what is not safe."""
    user_id = workflow_id.removeprefix(WORKFLOW_ID_PREFIX)
    handle = client.get_workflow_handle(workflow_id)
    try:
        if dry_run:
            problems = await handle.query(QUERY_MOVE_PROBLEMS, move, result_type=list[str])
            if problems:
                return MoveOutcome(user_id, workflow_id, False, "; ".join(problems))
            return MoveOutcome(user_id, workflow_id, True, f"would move to {move.version.name}")
        result = await handle.execute_update(UPDATE_MOVE_JOURNEY, move, result_type=MoveResult)
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        return MoveOutcome(user_id, workflow_id, False, message.removeprefix("cannot move: "))
    except (RPCError, WorkflowQueryFailedError) as err:
        # Ended meanwhile (not found or completed), or not reachable: it keeps its version.
        return MoveOutcome(user_id, workflow_id, False, f"not reachable: {err}")
    return MoveOutcome(
        user_id, workflow_id, True, f"{result.moved_from or 'unrecorded'} → {result.moved_to}"
    )

"""The audit log: every write to Trialpath, who made it, about which user, when, and how it
ended. The API records each request an API key makes to change something (`AuditLog`, the
routes name the action); the CLI records its commands as `cli:<login>`. Support and admins
read it with `GET /v1/audit` or `trialpath audit` (the API's side: trialpath/entry/api/audit.py).

No personal data: an entry names the user by their opaque id, and erasing the user replaces
that id by a keyed pseudonym in every entry (`pseudonymise`); the erasure's own entries are
written with the pseudonym.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
from datetime import datetime
from http import HTTPStatus

from pydantic import BaseModel, Field
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from trialpath.operations.models import AuditEntry

ERASED_PREFIX = "erased-"
ERASE_ACTION = "trial.erase"


class AuditItem(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="The API key's name, or `cli:<login>`.")
    role: str
    action: str = Field(description="e.g. `trial.start`, `trial.extend`, `trial.erase`.")
    user_id: str | None = Field(
        description="The user concerned; `erased-…` once their data was erased."
    )
    status: int = Field(description="The HTTP status answered (200 for a CLI command done).")
    detail: str | None


class AuditPage(BaseModel):
    items: list[AuditItem]
    next_before: int | None = Field(
        description="Pass as `before` for the next (older) page; null on the last one."
    )


def record(
    engine: Engine,
    actor: str,
    role: str,
    action: str,
    user_id: str | None,
    status: int,
    detail: str | None = None,
) -> None:
    with Session(engine) as session:
        session.add(
            AuditEntry(
                actor=actor[:100],
                role=role[:20],
                action=action[:40],
                user_id=user_id[:128] if user_id else None,
                status=status,
                detail=(detail or _phrase(status))[:200],
            )
        )
        session.commit()


def entries(
    engine: Engine,
    user_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    before: int | None = None,
    limit: int = 50,
) -> AuditPage:
    """Newest first, `limit` at a time; `before` continues from a page's `next_before`."""
    query = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit + 1)
    if user_id is not None:
        query = query.where(AuditEntry.user_id == user_id)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if since is not None:
        query = query.where(col(AuditEntry.at) >= since)
    if before is not None:
        query = query.where(col(AuditEntry.id) < before)
    with Session(engine) as session:
        rows = list(session.exec(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(
        items=[AuditItem.model_validate(row, from_attributes=True) for row in rows],
        next_before=rows[-1].id if more and rows else None,
    )


def pseudonym(secret: str, user_id: str) -> str:
    """The name an erased user keeps in the audit log: the same for every entry and every
    erasure of that user (the trail stays linked), and not reversible without the secret."""
    digest = hmac.new(secret.encode(), b"audit\0" + user_id.encode(), hashlib.sha256)
    return ERASED_PREFIX + digest.hexdigest()[:20]


def pseudonymise(session: Session, user_id: str, pseudonym: str) -> int:
    """Replaces the user's id by their pseudonym in all their entries (in the caller's
    transaction); returns how many changed."""
    result = session.exec(
        update(AuditEntry).where(col(AuditEntry.user_id) == user_id).values(user_id=pseudonym)
    )
    return int(result.rowcount or 0)


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container's anonymous uid)
        return "cli:unknown"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return str(status)

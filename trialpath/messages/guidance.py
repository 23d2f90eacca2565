"""In-app guidance: each user's onboarding checklist, and the short-lived user tokens of the
embeddable widget (`GET /widget.js`).

The checklist's steps are the persona's activation requirements (event → count) and its
milestone, labelled by the journey's `[checklist]` table; what is done is counted from the
stored product events that happened inside the trial (those the journey counts, like the
KPIs). A widget token lets a browser read and mark read one user's guidance, and nothing
else, for a few minutes: the product's backend mints it with its API key, which never reaches
the browser.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime, timedelta
from pathlib import Path

from itsdangerous import BadSignature, URLSafeSerializer
from pydantic import BaseModel, Field
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from trialpath.core.definition import JourneyDefinition, load_definition
from trialpath.entry.commands import TrialNotFound
from trialpath.messages.templating import make_link
from trialpath.operations.models import Trial, TrialEvent


@functools.lru_cache(maxsize=4)
def _load(path: Path, mtime: float) -> JourneyDefinition:
    return load_definition(path)


def journey_in_force(path: Path) -> JourneyDefinition:
    """The journey file as it is now (reloaded when it changes): the checklist shows today's
    labels and rules, whichever version of the file the trial started with."""
    return _load(path, path.stat().st_mtime if path.exists() else 0.0)


class ChecklistStep(BaseModel):
    event: str = Field(description="The product event that completes the step.")
    label: str
    required: int = Field(ge=1, description="How many such events the step needs.")
    done_count: int = Field(ge=0, description="How many happened inside the trial.")
    done: bool
    link: str = Field(description="Where in the product the step is done (with UTM parameters).")


class Checklist(BaseModel):
    user_id: str
    persona: str = Field(description="Whose activation rule the steps come from.")
    activated: bool = Field(description="Whether the trial activated (as the journey decided).")
    progress: int = Field(
        ge=0, le=100, description="Percent of the required events done (each capped at its need)."
    )
    steps: list[ChecklistStep]


def fallback_label(event: str) -> str:
    """`integration_connected` → `Integration connected`."""
    words = event.replace("_", " ").replace("-", " ").replace(".", " ").strip()
    return words[:1].upper() + words[1:] if words else event


def known_trial(session: Session, user_id: str) -> Trial:
    """The user's trial; 404 without one, or once it was erased (nothing is kept to guide)."""
    trial = session.get(Trial, user_id)
    if trial is None or trial.erased_at is not None:
        raise TrialNotFound(f"no trial for user {user_id}")
    return trial


def checklist(engine: Engine, defn: JourneyDefinition, app_url: str, user_id: str) -> Checklist:
    """The user's checklist (404 when there is no such trial). A trial still being qualified
    shows the default persona's steps."""
    with Session(engine) as session:
        trial = known_trial(session, user_id)
        persona = trial.persona if trial.persona in defn.personas else defn.default_persona
        path = defn.personas[persona]
        required = path.steps()
        counts = dict(
            session.exec(
                select(TrialEvent.name, func.count())
                .where(
                    col(TrialEvent.user_id) == user_id,
                    col(TrialEvent.counted).is_(True),
                    col(TrialEvent.name).in_(list(required)),
                )
                .group_by(col(TrialEvent.name))
            ).all()
        )
        activated = trial.activated
    steps = []
    for event, need in required.items():
        item = defn.checklist.get(event)
        done = int(counts.get(event, 0))
        link = make_link(app_url, "checklist", event)(item.path if item else "/")
        steps.append(
            ChecklistStep(
                event=event,
                label=item.label if item else fallback_label(event),
                required=need,
                done_count=done,
                done=done >= need,
                link=link,
            )
        )
    reached = sum(min(s.done_count, s.required) for s in steps)
    progress = math.floor(100 * reached / sum(s.required for s in steps))
    return Checklist(
        user_id=user_id, persona=persona, activated=activated, progress=progress, steps=steps
    )


# --- widget tokens ---------------------------------------------------------------------------


class BadWidgetToken(ValueError):
    """A widget token that was not made here, was altered, or has expired."""


class WidgetToken(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>` to /v1/widget/*.")
    user_id: str
    expires_at: datetime


class WidgetTokens:
    """Signed `{user_id, expiry}` tokens: only the `/v1/widget/*` routes accept them, for
    that user, until they expire. Signed with the installation's signing secret under a salt of
    their own, so an unsubscribe or survey link is never a widget token (nor the reverse)."""

    def __init__(self, secret: str, lifetime: timedelta) -> None:
        self.lifetime = lifetime
        self._serializer = URLSafeSerializer(secret, salt="trialpath-widget")

    def make(self, user_id: str, now: datetime) -> WidgetToken:
        expires = (now + self.lifetime).replace(microsecond=0)
        token = str(self._serializer.dumps({"u": user_id, "e": int(expires.timestamp())}))
        return WidgetToken(token=token, user_id=user_id, expires_at=expires)

    def read(self, token: str, now: datetime) -> str:
        """The user the token is for; BadWidgetToken if it is forged or expired."""
        try:
            data = self._serializer.loads(token)
        except BadSignature as err:
            raise BadWidgetToken("this widget token is not valid") from err
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("u"), str)
            or not isinstance(data.get("e"), int)
        ):
            raise BadWidgetToken("this widget token is not valid")
        if now.timestamp() >= data["e"]:
            raise BadWidgetToken("this widget token has expired: ask the product for a new one")
        user_id: str = data["u"]
        return user_id

"""What each user agreed to receive, and the signed one-click unsubscribe links.

A user with no preference row accepts every channel. Unsubscribing stops marketing messages on
that channel; transactional ones (call invitations, receipts) still go out. The journey keeps
its own list (the `unsubscribe` signal); this table is the durable record the send activity
checks at the last moment, so a message already queued when the user opted out is skipped.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlencode

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from trialpath.operations.config import Settings
from trialpath.operations.models import Preference, utcnow

CHANNELS = ("email", "sms", "in_app")


class BadToken(ValueError):
    """An unsubscribe link that was not made by us, or was altered."""


def signing_secret(settings: Settings) -> str:
    """The configured secret, else one made once and kept in the data folder, so links made by
    the worker are read by the API of the same installation."""
    configured = settings.signing_secret.get_secret_value()
    if configured:
        return configured
    path: Path = settings.data_dir / "signing-secret"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


class UnsubscribeTokens:
    """Signed `{user_id, channel}` tokens for one-click unsubscribe links (RFC 8058).

    They do not expire: a link in an old email must keep working.
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self._serializer = URLSafeSerializer(secret, salt="trialpath-unsubscribe")

    def make(self, user_id: str, channel: str) -> str:
        return str(self._serializer.dumps({"u": user_id, "c": channel}))

    def read(self, token: str) -> tuple[str, str]:
        try:
            data = self._serializer.loads(token)
        except BadSignature as err:
            raise BadToken("this unsubscribe link is not valid") from err
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("u"), str)
            or data.get("c") not in (*CHANNELS, "all")
        ):
            raise BadToken("this unsubscribe link is not valid")
        return data["u"], data["c"]


SURVEY_SCALES = {"csat": 5, "ces": 7, "onboarding": 5}


class BookingTokens:
    """Signed user ids for the self-serve booking links of success calls: the booking page
    knows whose call it books, and nobody books one for somebody else."""

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeSerializer(secret, salt="trialpath-booking")

    def make(self, user_id: str) -> str:
        return str(self._serializer.dumps({"u": user_id}))

    def read(self, token: str) -> str:
        try:
            data = self._serializer.loads(token)
        except BadSignature as err:
            raise BadToken("this booking link is not valid") from err
        if not isinstance(data, dict) or not isinstance(data.get("u"), str):
            raise BadToken("this booking link is not valid")
        return str(data["u"])


def booking_link(base: str, secret: str, user_id: str) -> str:
    """The user's self-serve booking link on the page at `base` (TRIALPATH_BOOKING_URL)."""
    query = urlencode({"user_id": user_id, "token": BookingTokens(secret).make(user_id)})
    return f"{base}{'&' if '?' in base else '?'}{query}"


class SurveyTokens:
    """Signed `{user_id, survey}` tokens for the answer links of a survey message."""

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeSerializer(secret, salt="trialpath-survey")

    def make(self, user_id: str, survey: str) -> str:
        return str(self._serializer.dumps({"u": user_id, "s": survey}))

    def read(self, token: str) -> tuple[str, str]:
        try:
            data = self._serializer.loads(token)
        except BadSignature as err:
            raise BadToken("this survey link is not valid") from err
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("u"), str)
            or data.get("s") not in SURVEY_SCALES
        ):
            raise BadToken("this survey link is not valid")
        return data["u"], data["s"]


def expand(channel: str) -> tuple[str, ...]:
    return CHANNELS if channel == "all" else (channel,)


def set_subscribed(
    engine: Engine, user_id: str, channels: Iterable[str], *, subscribed: bool, source: str
) -> list[str]:
    """Records the choice for each channel; returns the channels whose value changed."""
    changed: list[str] = []
    with Session(engine) as session:
        for channel in dict.fromkeys(c for name in channels for c in expand(name)):
            row = session.get(Preference, (user_id, channel))
            if row is None:
                if subscribed:
                    continue
                row = Preference(user_id=user_id, channel=channel, subscribed=False, source=source)
                changed.append(channel)
            elif row.subscribed != subscribed:
                row.subscribed, row.source, row.updated_at = subscribed, source, utcnow()
                changed.append(channel)
            else:
                continue
            session.add(row)
        session.commit()
    return changed


def unsubscribed(engine: Engine, user_id: str) -> dict[str, str]:
    """Channels the user opted out of, with where the choice came from."""
    with Session(engine) as session:
        rows = session.exec(
            select(Preference).where(
                col(Preference.user_id) == user_id, col(Preference.subscribed).is_(False)
            )
        ).all()
        return {row.channel: row.source for row in rows}


def preferences_of(engine: Engine, user_id: str) -> dict[str, dict[str, object]]:
    """Every channel with its state: `{"email": {"subscribed": True, "source": None, ...}}`."""
    with Session(engine) as session:
        rows = {
            row.channel: row
            for row in session.exec(
                select(Preference).where(col(Preference.user_id) == user_id)
            ).all()
        }
    answer: dict[str, dict[str, object]] = {}
    for channel in CHANNELS:
        row = rows.get(channel)
        answer[channel] = {
            "subscribed": row.subscribed if row else True,
            "source": row.source if row else None,
            "updated_at": row.updated_at if row else None,
        }
    return answer

"""Personal data encrypted at rest (TRIALPATH_ENCRYPT_AT_REST, trialpath/operations/sealing.py):
what the database holds has no name, address, number or message in the clear; Trialpath reads it
back as before; keys rotate and encryption is turned on or off with `trialpath db seal`. On SQLite,
and on PostgreSQL in the PostgreSQL pass."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlmodel import Session, SQLModel, select
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from trialpath.delivery.deliveries import _user_by_phone
from trialpath.entry.cli.main import app as cli_app
from trialpath.operations.codec import new_key, parse_keys
from trialpath.operations.config import Settings, SettingsError, get_settings
from trialpath.operations.db import engine_for, make_engine
from trialpath.operations.models import Message, MessageEvent, PendingSignal, Trial
from trialpath.operations.sealing import PREFIX, SealedDataError, Sealer, sealed_columns

NAME, EMAIL, PHONE = "Grace Hopper", "grace.hopper@navy.example", "+33 6 12 34 56 78"
PERSONAL = (NAME, EMAIL, PHONE, "Grace", "navy.example", "12 34 56 78", "1.2.3.4")
K1, K2 = f"k1:{new_key()}", f"k2:{new_key()}"


def sealing(settings: Settings, keys: str, on: bool = True) -> Settings:
    settings.codec_keys = SecretStr(keys)
    settings.encrypt_at_rest = on
    return settings


def raw_dump(settings: Settings) -> str:
    """Every row of every table as the database returns it (no type of ours decodes it)."""
    engine = make_engine(settings.effective_database_url)
    dumped = []
    with engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            for row in connection.execute(sa.text(f'SELECT * FROM "{table.name}"')):
                dumped.append(f"{table.name}: {tuple(row)}")
    engine.dispose()
    return "\n".join(dumped)


def clear_text(dump: str) -> list[str]:
    return [value for value in PERSONAL if value in dump]


@pytest.fixture
def sealed(settings: Settings) -> Settings:
    """The test's settings, encrypting at rest with key k1 (before the worker and API start)."""
    return sealing(settings, K1)


async def test_the_database_holds_no_personal_data_in_the_clear(
    sealed: Settings, api: httpx.AsyncClient, env: WorkflowEnvironment
) -> None:
    user = "sealed-1"
    signup = {"user_id": user, "email": EMAIL, "name": NAME, "phone": PHONE, "company": "Navy"}
    started = await api.post("/v1/trials", json=signup, headers={"Idempotency-Key": "s-1"})
    assert started.status_code == 201, started.text
    # Event properties stay in the clear (the KPIs read survey scores from them in SQL).
    event = {"name": "login", "properties": {"source": "web"}}
    assert (await api.post(f"/v1/trials/{user}/events", json=event)).status_code == 202
    await env.sleep(timedelta(hours=2))  # past the qualifier's hour: the welcome is out
    engine = engine_for(sealed)
    with Session(engine) as session:
        message = session.exec(
            select(Message).where(Message.user_id == user, Message.channel == "email")
        ).first()
        assert message is not None
        message.error = f"550 5.1.1 <{EMAIL}>: mailbox unavailable"
        key = message.key
        session.add(message)
        session.add(
            MessageEvent(
                id=f"sg-{uuid.uuid4()}",
                provider="sendgrid",
                message_key=message.key,
                type="open",
                at=datetime.now(UTC),
                payload={"email": EMAIL, "ip": "1.2.3.4"},
            )
        )
        session.add(
            PendingSignal(workflow_id=f"trial-{user}", signal="event", payload={"email": EMAIL})
        )
        session.commit()

    dump = raw_dump(sealed)
    assert clear_text(dump) == []
    assert f"{PREFIX}k1:" in dump

    # Trialpath reads it all back.
    with Session(engine) as session:
        trial = session.get(Trial, user)
        assert trial is not None and (trial.name, trial.email, trial.phone) == (NAME, EMAIL, PHONE)
        message = session.exec(select(Message).where(Message.key == key)).one()
        assert message.recipient == EMAIL and "Grace" in message.html + message.text
        assert message.subject and not message.subject.startswith(PREFIX)
        assert EMAIL in (message.error or "")
        (event_row,) = session.exec(select(MessageEvent)).all()
        assert event_row.payload == {"email": EMAIL, "ip": "1.2.3.4"}
        # An SMS reply finds its trial by number, though no query can compare sealed values.
        assert _user_by_phone(session, "+33612345678") == user
    replayed = await api.post("/v1/trials", json=signup, headers={"Idempotency-Key": "s-1"})
    assert (replayed.status_code, replayed.json()) == (201, started.json())
    conflicting = await api.post("/v1/trials", json={**signup, "email": "other@example.org"})
    assert conflicting.status_code == 409 and "email" in conflicting.text

    # Without the keys, sealed data is an error naming what is missing, never shown as data.
    plain = make_engine(sealed.effective_database_url)
    with Session(plain) as session, pytest.raises(SealedDataError, match="ENCRYPT_AT_REST"):
        session.get(Trial, user)
    plain.dispose()
    engine.dispose()


def test_a_sealed_value_opens_only_in_its_column_with_a_configured_key() -> None:
    k1, k2 = parse_keys(K1), parse_keys(K2)
    old = Sealer(k1)
    sealed = old.seal(EMAIL, "trials.email")
    assert sealed.startswith(f"{PREFIX}k1:") and EMAIL not in sealed
    assert old.seal(EMAIL, "trials.email") != sealed  # a nonce per value
    assert old.open(sealed, "trials.email") == EMAIL
    with pytest.raises(SealedDataError, match="not this column's"):
        old.open(sealed, "trials.name")  # copied into another column
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(SealedDataError, match="does not decrypt"):
        old.open(tampered, "trials.email")

    rotated = Sealer(k2 + k1)  # a new key first: it seals, both open
    assert rotated.open(sealed, "trials.email") == EMAIL
    assert rotated.seal(EMAIL, "trials.email").startswith(f"{PREFIX}k2:")
    with pytest.raises(SealedDataError, match="key 'k1', which is not in"):
        Sealer(k2).open(sealed, "trials.email")


def test_encryption_at_rest_without_keys_is_refused_at_start(settings: Settings) -> None:
    settings.encrypt_at_rest = True
    with pytest.raises(SettingsError, match="TRIALPATH_ENCRYPT_AT_REST needs TRIALPATH_CODEC_KEYS"):
        engine_for(settings)


def db_seal(settings: Settings, keys: str, on: bool) -> tuple[int, str]:
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            cli_app,
            ["db", "seal"],
            env={
                "TRIALPATH_DATA_DIR": str(settings.data_dir),
                "TRIALPATH_DATABASE_URL": settings.database_url,
                "TRIALPATH_CODEC_KEYS": keys,
                "TRIALPATH_CODEC_KEYS_FILE": "",
                "TRIALPATH_ENCRYPT_AT_REST": "true" if on else "false",
                "COLUMNS": "200",
            },
        )
    finally:
        get_settings.cache_clear()
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, " ".join((result.stdout + result.stderr).split())


def add_trial(settings: Settings, user: str) -> None:
    engine = engine_for(settings)
    with Session(engine) as session:
        session.add(
            Trial(
                user_id=user,
                workflow_id=f"trial-{user}",
                name=NAME,
                email=EMAIL,
                phone=PHONE,
                signup_at=datetime.now(UTC),
            )
        )
        session.add(
            Message(
                key=f"trial-{user}:welcome/email",
                workflow_id=f"trial-{user}",
                user_id=user,
                step="welcome",
                message="welcome",
                channel="email",
                category="transactional",
                recipient=EMAIL,
                subject=f"Welcome, {NAME}",
                text=f"Hello {NAME}",
                template="welcome",
                content_hash="x",
            )
        )
        session.commit()
    engine.dispose()


def stored_keys(settings: Settings) -> set[str]:
    dump = raw_dump(settings)
    return {k for k in ("k1", "k2") if f"{PREFIX}{k}:" in dump}


def test_db_seal_turns_encryption_on_rotates_keys_and_turns_it_off(settings: Settings) -> None:
    add_trial(settings, "before")  # written in the clear, before encryption was on
    assert clear_text(raw_dump(settings)) != []
    assert db_seal(settings, "", on=False) == (
        1,
        "error: nothing to do: TRIALPATH_ENCRYPT_AT_REST is off and there are no codec keys "
        "(nothing can have been encrypted)",
    )

    # On: new rows are sealed; rows from before are read as they are until `db seal`.
    add_trial(sealing(settings, K1), "after")
    dump = raw_dump(settings)
    assert NAME in dump and dump.count(EMAIL) == 2  # "before": row and message
    code, out = db_seal(settings, K1, on=True)
    assert code == 0, out
    assert "rows of" in out and "personal data encrypted with key 'k1'" in out
    assert clear_text(raw_dump(settings)) == [] and stored_keys(settings) == {"k1"}

    # Rotation: a new key first, `db seal`, then the old key can go.
    code, out = db_seal(settings, f"{K2},{K1}", on=True)
    assert code == 0, out
    assert stored_keys(settings) == {"k2"}
    engine = engine_for(sealing(settings, K2))
    with Session(engine) as session:
        assert {t.email for t in session.exec(select(Trial))} == {EMAIL}
    engine.dispose()
    assert db_seal(settings, K2, on=True)[0] == 0  # again: nothing changes but the nonces
    assert stored_keys(settings) == {"k2"}

    # Off: back in the clear (the keys are needed once more, to read what was sealed).
    code, out = db_seal(settings, K2, on=False)
    assert code == 0 and "personal data in the clear" in out, out
    assert stored_keys(settings) == set() and NAME in raw_dump(settings)


def test_the_sealed_columns_are_the_personal_ones() -> None:
    found = {f"{t.name}.{c.name}" for t, columns in sealed_columns().items() for c in columns}
    assert found == {
        "trials.name",
        "trials.email",
        "trials.phone",
        "messages.recipient",
        "messages.subject",
        "messages.html",
        "messages.text",
        "messages.error",
        "message_events.payload",
        "pending_signals.payload",
        "idempotency_records.body",
        "cs_tasks.note",
    }

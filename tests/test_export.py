"""Warehouse exports: CSV and Parquet read back equal to the rows, typed; incremental runs take
exactly the rows changed since the last; no personal data unless asked (then decrypted, even
when encrypted at rest, and audited); bad arguments refused with a message."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session, select

from tests.conftest import run_cli
from trialpath.growth.export import STATE_FILE, ExportError, export
from trialpath.operations.codec import new_key
from trialpath.operations.config import Settings
from trialpath.operations.db import engine_for
from trialpath.operations.models import AuditEntry, Message, Trial, TrialEvent

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
EMAIL = "grace.hopper@navy.example"


def add_trial(engine: Engine, user: str, at: datetime) -> None:
    with Session(engine) as session:
        session.add(
            Trial(
                user_id=user,
                workflow_id=f"trial-{user}",
                name="Grace Hopper",
                email=EMAIL if user == "u1" else f"{user}@example.com",
                phone="+33612345678",
                persona="technical",
                stage="onboarding",
                signup_at=at,
                updated_at=at,
                mrr=49.5,
                journey_version=1,
            )
        )
        session.add(
            TrialEvent(
                id=f"{user}:e1",
                user_id=user,
                name="api_call",
                occurred_at=at,
                recorded_at=at,
                properties={"ip": "1.2.3.4"},
            )
        )
        session.add(
            Message(
                key=f"trial-{user}:welcome/email",
                workflow_id=f"trial-{user}",
                user_id=user,
                step="welcome/email",
                message="welcome",
                channel="email",
                category="marketing",
                recipient=EMAIL,
                subject="Welcome, Grace",
                text="Hello Grace",
                template="welcome.email.en",
                content_hash="h",
                status="sent",
                created_at=at,
                sent_at=at,
                updated_at=at,
            )
        )
        session.commit()


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return engine_for(settings)


def test_parquet_reads_back_typed_and_without_personal_data(engine: Engine, tmp_path: Path) -> None:
    add_trial(engine, "u1", T0)
    add_trial(engine, "u2", T0 + timedelta(hours=1))
    out = tmp_path / "warehouse"
    result = export(engine, out, now=T0 + timedelta(days=1))
    assert [(t.table, t.rows) for t in result.tables] == [
        ("trials", 2),
        ("events", 2),
        ("messages", 2),
    ]
    trials = pq.read_table(next(out.glob("trials_*.parquet")))
    assert trials.column("user_id").to_pylist() == ["u1", "u2"]
    assert trials.schema.field("signup_at").type == pa.timestamp("us", tz="UTC")
    assert trials.schema.field("mrr").type == pa.float64()
    assert trials.schema.field("activated").type == pa.bool_()
    assert trials.schema.field("journey_version").type == pa.int64()
    assert trials.column("signup_at").to_pylist()[1] == T0 + timedelta(hours=1)
    assert "email" not in trials.column_names and "name" not in trials.column_names
    messages = pq.read_table(next(out.glob("messages_*.parquet")))
    assert "recipient" not in messages.column_names and "subject" not in messages.column_names
    events = pq.read_table(next(out.glob("events_*.parquet")))
    assert "properties" not in events.column_names
    everything = b"".join(path.read_bytes() for path in out.iterdir())
    for personal in (EMAIL.encode(), b"Grace", b"1.2.3.4", b"+336"):
        assert personal not in everything


def test_runs_are_incremental_and_take_changed_rows_again(engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "w"
    add_trial(engine, "u1", T0)
    first = export(engine, out, fmt="csv", now=T0 + timedelta(hours=2))
    assert [t.rows for t in first.tables] == [1, 1, 1]
    state = json.loads((out / STATE_FILE).read_text())
    assert state["until"]["trials"] == (T0 + timedelta(hours=2) - timedelta(minutes=1)).isoformat()
    # Nothing changed: empty files are not written, the state moves on.
    again = export(engine, out, fmt="csv", now=T0 + timedelta(hours=3))
    assert [t.rows for t in again.tables] == [0, 0, 0]
    # A new trial, and u1 converted (its row changes): both in the next run, once.
    add_trial(engine, "u2", T0 + timedelta(hours=4))
    with Session(engine) as session:
        row = session.get(Trial, "u1")
        assert row is not None
        row.stage, row.updated_at = "converted", T0 + timedelta(hours=4, minutes=30)
        session.add(row)
        session.commit()
    third = export(engine, out, fmt="csv", now=T0 + timedelta(hours=6))
    assert [t.rows for t in third.tables] == [2, 1, 1]
    with third.tables[0].file.open() as handle:  # type: ignore[union-attr]
        rows = list(csv.DictReader(handle))
    assert [(r["user_id"], r["stage"]) for r in rows] == [("u2", "onboarding"), ("u1", "converted")]
    assert rows[1]["updated_at"] == (T0 + timedelta(hours=4, minutes=30)).isoformat()
    # Every row of every run, keyed: the warehouse's latest copy per key is the database.
    files = sorted(out.glob("trials_*.csv"))
    assert len(files) == 2  # the empty run wrote none


def test_a_message_changed_after_export_comes_again(engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "w"
    add_trial(engine, "u1", T0)
    export(engine, out, tables=("messages",), now=T0 + timedelta(hours=1))
    with Session(engine) as session:
        message = session.exec(select(Message)).one()
        message.delivery_status = "delivered"  # updated_at moves by itself
        session.add(message)
        session.commit()
        assert message.updated_at > T0 + timedelta(hours=1)
    later = export(engine, out, tables=("messages",), now=datetime.now(UTC) + timedelta(minutes=5))
    assert later.tables[0].rows == 1
    table = pq.read_table(later.tables[0].file)  # type: ignore[arg-type]
    assert table.column("delivery_status").to_pylist() == ["delivered"]


def test_personal_data_on_request_decrypted_when_sealed(settings: Settings, tmp_path: Path) -> None:
    settings.codec_keys = SecretStr(f"k1:{new_key()}")
    settings.encrypt_at_rest = True
    engine = engine_for(settings)
    add_trial(engine, "u1", T0)
    out = tmp_path / "w"
    export(engine, out, include_personal_data=True, now=T0 + timedelta(hours=1))
    trials = pq.read_table(next(out.glob("trials_*.parquet")))
    assert trials.column("email").to_pylist() == [EMAIL]
    assert pq.read_table(next(out.glob("messages_*.parquet"))).column("recipient").to_pylist() == [
        EMAIL
    ]
    events = pq.read_table(next(out.glob("events_*.parquet")))
    assert json.loads(events.column("properties").to_pylist()[0]) == {"ip": "1.2.3.4"}
    assert b"Hello Grace" not in b"".join(p.read_bytes() for p in out.iterdir())  # bodies never


def test_bad_arguments(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="tables are among trials, events, messages"):
        export(engine, tmp_path, tables=("users",))
    with pytest.raises(ExportError, match="csv or parquet"):
        export(engine, tmp_path, fmt="xlsx")  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="must be before until"):
        export(engine, tmp_path, since=T0, until=T0)
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(ExportError, match="not an export state file"):
        export(engine, tmp_path)


def test_the_command_line(settings: Settings, tmp_path: Path) -> None:
    engine = engine_for(settings)
    add_trial(engine, "u1", T0)
    out = tmp_path / "w"

    def run(*args: str) -> Any:
        return run_cli(settings, "export", "--out", str(out), *args)

    done = run("--format", "csv", "--include-personal-data")
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    assert "trials: 1 row(s)" in done.output  # type: ignore[attr-defined]
    with Session(engine) as session:
        (entry,) = session.exec(select(AuditEntry).where(AuditEntry.action == "export")).all()
        assert "with personal data" in (entry.detail or "")
    assert "nothing new" in run().output  # type: ignore[attr-defined]
    for args, message in (
        (("--format", "xlsx"), "csv or parquet"),
        (("--since", "yesterday"), "--since must be an ISO 8601"),
        (("--tables", "users"), "tables are among"),
    ):
        refused = run(*args)
        assert refused.exit_code == 2, refused.output  # type: ignore[attr-defined]
        assert message in refused.output and "Traceback" not in refused.output  # type: ignore[attr-defined]

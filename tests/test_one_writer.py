"""On SQLite, the API's writing transactions take turns in the process (`one_writer_at_a_time`):
a second writer waits for the first to end instead of finding the database locked. The
database's own wait is switched off here (`busy_timeout` 0), so a writer that was not made to
wait in the process fails at once with "database is locked"."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, exc, select
from sqlmodel import Session

from trialpath.operations import audit
from trialpath.operations.db import make_engine
from trialpath.operations.models import AuditEntry

PATIENCE = 30.0
"""How long a step may take on a busy machine before the test fails (it never waits for it
when all goes well)."""


def engine(tmp_path: Path, one_writer: bool) -> Engine:
    built = make_engine(f"sqlite:///{tmp_path / 'one-writer.db'}", one_writer=one_writer)

    @event.listens_for(built, "connect")
    def _no_sqlite_wait(conn: sqlite3.Connection, _record: Any) -> None:
        conn.execute("PRAGMA busy_timeout=0")

    built.dispose()  # connections opened from now on have the listener
    return built


def entries(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.execute(select(AuditEntry.actor).order_by(AuditEntry.id)).scalars())


def holding_a_write(engine: Engine, end: Callable[[Session], None]) -> tuple[Any, Any]:
    """A thread that writes, then waits for `release` before ending its transaction with
    `end`; `written` is set once its write is in."""
    written, release = threading.Event(), threading.Event()

    def first() -> None:
        with Session(engine) as session:
            audit_row = AuditEntry(actor="first", role="admin", action="x", status=201)
            session.add(audit_row)
            session.flush()  # the INSERT: this transaction now writes
            written.set()
            assert release.wait(PATIENCE)
            end(session)

    thread = threading.Thread(target=first)
    thread.start()
    assert written.wait(PATIENCE)
    return thread, release


def waits_for_its_turn(thread: threading.Thread, done: threading.Event) -> bool:
    """Whether `thread` is held by the turn-taking (`_first_write`) rather than done."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline and not done.is_set():
        frame = sys._current_frames().get(thread.ident or 0)
        while frame is not None:
            if frame.f_code.co_name == "_first_write":
                return True
            frame = frame.f_back
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_a_second_writer_waits_for_the_first(tmp_path: Path, end: str) -> None:
    db = engine(tmp_path, one_writer=True)
    first, release = holding_a_write(db, lambda s: getattr(s, end)())
    second_done = threading.Event()
    failures: list[BaseException] = []

    def second() -> None:
        try:
            audit.record(db, "second", "admin", "x", None, 201)
        except BaseException as err:  # reported by the assertion below
            failures.append(err)
        second_done.set()

    waiting = threading.Thread(target=second, name="second")
    waiting.start()
    try:
        # The second writer tries while the first transaction is open, and is held in the
        # process (without the turns, SQLite refuses it at once)...
        assert waits_for_its_turn(waiting, second_done), failures
    finally:
        release.set()
        first.join(PATIENCE)
        waiting.join(PATIENCE)
    # ...and writes once it ends, without meeting SQLite's lock.
    assert failures == []
    assert entries(db) == (["first", "second"] if end == "commit" else ["second"])


def test_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    db = engine(tmp_path, one_writer=True)
    audit.record(db, "earlier", "admin", "x", None, 201)
    first, release = holding_a_write(db, lambda s: s.commit())
    try:
        assert entries(db) == ["earlier"]  # read while the first transaction writes
    finally:
        release.set()
        first.join(PATIENCE)
    assert entries(db) == ["earlier", "first"]


def test_without_it_a_second_writer_finds_the_database_locked(tmp_path: Path) -> None:
    """What the API's threads met before (here without SQLite's retries, which only hide it)."""
    db = engine(tmp_path, one_writer=False)
    first, release = holding_a_write(db, lambda s: s.commit())
    try:
        with pytest.raises(exc.OperationalError, match="locked"):
            audit.record(db, "second", "admin", "x", None, 201)
    finally:
        release.set()
        first.join(PATIENCE)

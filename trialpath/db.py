"""Database engine and sessions (SQLite by default, any SQLAlchemy URL)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, event
from sqlmodel import Session, create_engine

from trialpath import models  # noqa: F401  (registers the tables)
from trialpath.migrate import upgrade_to_head

SQLITE_BUSY_SECONDS = 30.0
"""How long a SQLite connection waits for another one's lock before giving up."""


def _use_wal(cursor: sqlite3.Cursor) -> None:
    """Put the database in WAL mode (the CLI reads while the worker writes); the mode is kept in
    the file, so this is a read once a first connection has set it. Switching needs every other
    connection out of the file, and SQLite answers "database is locked" at once rather than
    through the busy timeout: processes opening a new database together retry here."""
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def make_engine(url: str, *, upgrade: bool = True) -> Engine:
    """An engine on `url`, its database first brought to the latest migration (`upgrade=False`:
    as it is, for the migration commands themselves)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record):  # type: ignore[no-untyped-def]
            cursor = conn.cursor()
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
            _use_wal(cursor)
            cursor.close()

    else:
        engine = create_engine(url, pool_pre_ping=True)
    if upgrade:
        upgrade_to_head(engine)
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session

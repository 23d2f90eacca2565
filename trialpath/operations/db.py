"""Database engine and sessions (SQLite by default, any SQLAlchemy URL)."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, event, inspect, text
from sqlmodel import Session, create_engine

from trialpath.operations import models  # noqa: F401  (registers the tables)
from trialpath.operations.config import Settings
from trialpath.operations.sealing import attach, sealer_for

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


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def one_writer_at_a_time(engine: Engine) -> None:
    """Lets one transaction of this process write to the SQLite database at a time; the others
    wait for it in the process and start the moment it ends.

    SQLite lets one connection write and makes the others retry, sleeping between tries for up
    to 100 ms each. Under the API's load (its requests write from several threads: events,
    their signals, audit entries) those sleeps made the slowest answers several times the
    median (bench/README, "Events stored without asking Temporal; one writer at a time in the
    API"). A transaction takes the lock at its first write, as SQLite does, and gives it back
    once committed or rolled back; reads never wait for it. Waiting is bounded like SQLite's
    own (`SQLITE_BUSY_SECONDS`)."""
    lock = threading.Lock()  # released by whichever thread ends the transaction
    holders: set[int] = set()  # the DBAPI connections inside a writing transaction

    @event.listens_for(engine, "before_cursor_execute")
    def _first_write(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        key = id(conn.connection.dbapi_connection)
        if key in holders or not statement.lstrip()[:7].upper().startswith(_WRITES):
            return
        if not lock.acquire(timeout=SQLITE_BUSY_SECONDS):
            raise sqlite3.OperationalError("database is locked (by another writer of this process)")
        holders.add(key)

    def _ended(dbapi_connection: object) -> None:
        # The dialect is handed the pool's proxy of the connection, the pool's events the
        # connection itself.
        key = id(getattr(dbapi_connection, "dbapi_connection", dbapi_connection))
        if key in holders:
            holders.discard(key)
            lock.release()

    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection):  # type: ignore[no-untyped-def]
        try:
            commit(dbapi_connection)
        finally:
            _ended(dbapi_connection)

    def do_rollback(dbapi_connection):  # type: ignore[no-untyped-def]
        try:
            rollback(dbapi_connection)
        finally:
            _ended(dbapi_connection)

    # After the commit itself, not at SQLAlchemy's `commit` event (before it): the next writer
    # would find SQLite's lock still held. The pool rolls back through the same dialect.
    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]
    # A connection dropped inside a transaction (invalidated, closed) gives the lock back too.
    event.listen(engine.pool, "invalidate", lambda dbapi, *_: _ended(dbapi))
    event.listen(engine.pool, "close", lambda dbapi, *_: _ended(dbapi))


def make_engine(url: str, *, upgrade: bool = True, one_writer: bool = False) -> Engine:
    """An engine on `url`, its database first brought to the latest migration (`upgrade=False`:
    as it is, for the migration commands themselves). `one_writer`: on SQLite, this process's
    writing transactions take turns (`one_writer_at_a_time`)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record):  # type: ignore[no-untyped-def]
            cursor = conn.cursor()
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
            _use_wal(cursor)
            cursor.close()

        if one_writer:
            one_writer_at_a_time(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    if upgrade and not _at_head(engine):
        # Alembic (a quarter of a second to import) only when there is something to do.
        from trialpath.operations.migrate import upgrade_to_head

        upgrade_to_head(engine)
    return engine


def engine_for(settings: Settings, *, upgrade: bool = True, one_writer: bool = False) -> Engine:
    """The settings' database, sealing personal data when TRIALPATH_ENCRYPT_AT_REST is set
    (refused at once when it is set without codec keys)."""
    sealer = sealer_for(settings)
    engine = make_engine(settings.effective_database_url, upgrade=upgrade, one_writer=one_writer)
    attach(engine, sealer)
    return engine


class SchemaError(RuntimeError):
    """The database cannot be brought to the latest schema without someone deciding how."""


VERSIONS_DIR = Path(__file__).resolve().parent / "migrations" / "versions"
_REVISION = re.compile(r'^(down_revision|revision)\b[^=]*=\s*"(\w+)"', re.MULTILINE)


@lru_cache
def schema_heads() -> tuple[str, ...]:
    """The latest revisions, read from the migration files' `revision` and `down_revision`
    lines (the same as Alembic's heads: tests/test_migrations.py checks)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in VERSIONS_DIR.glob("[0-9]*.py"):
        for kind, value in _REVISION.findall(path.read_text()):
            (revisions if kind == "revision" else parents).add(value)
    return tuple(sorted(revisions - parents))


def _at_head(engine: Engine) -> bool:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        found = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
        return tuple(sorted(found)) == schema_heads()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session

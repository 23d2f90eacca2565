"""Versions of Trialpath's own database schema (Alembic migrations in `migrations/`).

Every process that opens the database (worker, API, CLI) brings it to the latest revision
through `make_engine` -> `upgrade_to_head`. Several may start at once (the worker replicas and
the API of docker-compose.yml), so the upgrade runs under a lock held in the database itself
(`schema_lock`), and the version is read again once the lock is held: the first process
migrates, the others find the database at head.

A database made before migrations existed (by `SQLModel.metadata.create_all`: Trialpath's
tables, no `alembic_version`) is adopted: stamped at the initial revision when its tables are
that revision's, refused with `SchemaError` otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect, text

from trialpath.operations import db

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

LOCK_KEY = 7_351_905_114_802_415_634
"""The PostgreSQL advisory lock (per database) held while the schema changes."""

VERSION_TABLE = "alembic_version"

_alembic_running = threading.RLock()
"""Alembic keeps the running migration in module globals (`alembic.context`, `alembic.op`):
one Alembic command at a time in a process, whatever the database."""


SchemaError = db.SchemaError  # defined beside make_engine, which migrates with this module


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration in code: the running service never reads alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache
def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revisions() -> tuple[str, ...]:
    return tuple(sorted(script_directory().get_heads()))


def initial_revision() -> str:
    base = script_directory().get_base()
    if base is None:
        raise SchemaError(f"no migration found in {MIGRATIONS_DIR / 'versions'}")
    return base


def current_revisions(connection: Connection) -> tuple[str, ...]:
    """The revisions the database is at; () for a database never migrated.

    Read directly rather than through Alembic's MigrationContext, which logs two INFO lines
    each time: every process start would."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return ()
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
    return tuple(sorted(rows))


def run_alembic(
    action: Callable[..., Any], connection: Connection, *args: Any, **kwargs: Any
) -> Any:
    """An `alembic.command` function on an open connection (env.py uses it as is)."""
    with _alembic_running:
        return action(alembic_config(connection), *args, **kwargs)


@contextmanager
def schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection, inside a transaction committed on exit, that holds the database's schema
    lock: another process asking for it waits until then."""
    with engine.connect() as connection:
        dialect = connection.dialect.name
        if dialect == "postgresql":
            # A session lock, taken outside the migration's transaction, and released
            # explicitly (or by PostgreSQL when this connection ends, a crash included).
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
            connection.commit()
            try:
                with connection.begin():
                    yield connection
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
                connection.commit()
        elif dialect == "sqlite":
            # The Python driver sends no BEGIN before DDL, so each CREATE would commit on its
            # own. BEGIN IMMEDIATE takes SQLite's one write lock now (waiting up to the busy
            # timeout while another process holds it) and makes the migration one transaction.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()
        else:
            # No lock on other databases: start one process first.
            with connection.begin():
                yield connection


def upgrade_to_head(engine: Engine) -> None:
    """Bring the database to the latest revision, unless it is there already (the usual case,
    one cheap read, no lock)."""
    with engine.connect() as connection:
        if current_revisions(connection) == head_revisions():
            return
    with schema_lock(engine) as connection:
        upgrade(connection)


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Upgrade on a connection that holds `schema_lock`, adopting a `create_all` database."""
    if not current_revisions(connection):
        adopt(connection)
    run_alembic(command.upgrade, connection, revision)


def downgrade(connection: Connection, revision: str) -> None:
    """Downgrade on a connection that holds `schema_lock` (`base`: drop every table)."""
    run_alembic(command.downgrade, connection, revision)


def adopt(connection: Connection) -> None:
    """Stamp a database made by `create_all` at the initial revision, if its tables are that
    revision's (it then upgrades like any other). An empty database is left alone."""
    if not set(inspect(connection).get_table_names()) - {VERSION_TABLE}:
        return
    expected = schema_at(initial_revision())
    found = _schema(connection, only=set(expected))
    if not found:
        return
    problems = _differences(expected, found)
    if problems:
        url = connection.engine.url.render_as_string(hide_password=True)
        raise SchemaError(
            f"the database {url} has Trialpath tables but no {VERSION_TABLE} table, and they "
            f"are not those of the initial migration ({'; '.join(problems)}): bring them in "
            f"line and run `alembic stamp {initial_revision()}`, or, for a development "
            "database, delete it"
        )
    run_alembic(command.stamp, connection, initial_revision())


@dataclass(frozen=True)
class _Table:
    columns: frozenset[str]
    indexes: frozenset[tuple[str, tuple[str, ...], bool]]
    unique: frozenset[tuple[str, ...]]


@lru_cache
def schema_at(revision: str) -> dict[str, _Table]:
    """The tables that migrating an empty database to `revision` makes (names only, which
    every database spells the same: found on a scratch in-memory SQLite database)."""
    scratch = create_engine("sqlite://")
    try:
        with scratch.begin() as connection:
            run_alembic(command.upgrade, connection, revision)
            return _schema(connection, only=None)
    finally:
        scratch.dispose()


def _schema(connection: Connection, only: set[str] | None) -> dict[str, _Table]:
    inspector = inspect(connection)
    names = set(inspector.get_table_names()) - {VERSION_TABLE}
    tables = {}
    for name in sorted(names if only is None else names & only):
        indexes = frozenset(
            (str(ix["name"]), tuple(str(c) for c in ix["column_names"]), bool(ix["unique"]))
            for ix in inspector.get_indexes(name)
            # PostgreSQL also lists the index behind each unique constraint.
            if not ix.get("duplicates_constraint")
        )
        unique = frozenset(
            tuple(sorted(uc["column_names"])) for uc in inspector.get_unique_constraints(name)
        )
        columns = frozenset(c["name"] for c in inspector.get_columns(name))
        tables[name] = _Table(columns, indexes, unique)
    return tables


def _differences(expected: dict[str, _Table], found: dict[str, _Table]) -> list[str]:
    problems = []
    for name, want in expected.items():
        have = found.get(name)
        if have is None:
            problems.append(f"table {name} missing")
            continue
        for column in sorted(want.columns - have.columns):
            problems.append(f"column {name}.{column} missing")
        for column in sorted(have.columns - want.columns):
            problems.append(f"column {name}.{column} unexpected")
        if want.indexes != have.indexes:
            problems.append(f"indexes of {name} differ")
        if want.unique != have.unique:
            problems.append(f"unique constraints of {name} differ")
    return problems

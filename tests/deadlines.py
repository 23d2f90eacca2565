"""Per-test deadlines: a test that hangs fails by itself, in seconds, naming what it waited for.

pytest-timeout gives every test a timeout (`timeout` in pyproject.toml, more for `slow` tests,
or `@pytest.mark.timeout(s)`). Its alarm interrupts whatever runs, but in an async test that is
the event loop's `select()`: the report would not say which await never returned, and the
test's task would be left pending. So an async test is cancelled earlier, from its own event
loop, at `DEADLINE_SHARE` of its timeout: its `finally` blocks and fixtures then stop workers
and servers, and the failure lists the awaits the test was suspended in, with the waits named
by `waiting_for`. pytest-timeout's alarm stays, for sync tests and for an event loop that a
blocking call keeps from running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import linecache
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

DEADLINE_SHARE = 0.8
"""The rest of the timeout is left to the fixtures' teardown."""

SLOW_TIMEOUT = 600
"""Seconds for tests marked `slow` (real dev servers, whole journeys) with no timeout marker."""

_STARTED = pytest.StashKey[tuple[float, float]]()
"""When the test's timeout started (`time.monotonic()`) and its length in seconds."""

_ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def waiting_for(what: str) -> Iterator[None]:
    """Names a wait in the failure if the test's deadline cancels it."""
    try:
        yield
    except asyncio.CancelledError as stop:
        stop.add_note(f"while waiting for {what}")
        raise


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    # Only noted: returning None lets pytest-timeout set its own alarm as well.
    item.stash[_STARTED] = (time.monotonic(), float(settings.timeout))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    started = item.stash.get(_STARTED, None)
    test = getattr(item, "obj", None)
    if started is None or not inspect.iscoroutinefunction(test):
        return (yield)
    began, timeout = started
    within = timeout * DEADLINE_SHARE
    item.obj = _with_deadline(test, item.nodeid, began + within, within, timeout)
    try:
        return (yield)
    finally:
        item.obj = test


def _with_deadline(
    test: Callable[..., Awaitable[Any]], nodeid: str, at: float, within: float, timeout: float
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        waited: list[str] = []

        def expire() -> None:
            waited.extend(_awaits(getattr(task.get_coro(), "cr_await", None)))
            task.cancel(f"{nodeid} reached its deadline")

        timer = asyncio.get_running_loop().call_later(max(at - time.monotonic(), 0), expire)
        notes: list[str] = []
        try:
            return await test(*args, **kwargs)
        except asyncio.CancelledError as stop:
            if not waited:
                raise
            task.uncancel()
            notes = getattr(stop, "__notes__", [])
        finally:
            timer.cancel()
        if waited:
            pytest.fail(_report(nodeid, within, timeout, waited, notes), pytrace=False)

    return run


def _awaits(coro: Any) -> list[str]:
    """`file:line in function: source` for each await the coroutine is suspended in, outermost
    first, down to the first thing that is not a coroutine (a future, a task's result)."""
    found: list[str] = []
    while coro is not None and len(found) < 20:
        frame: FrameType | None = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        found.append(_where(frame))
        inner = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if isinstance(inner, asyncio.Task):
            inner = inner.get_coro()
        coro = inner
    return found


def _where(frame: FrameType) -> str:
    path = Path(frame.f_code.co_filename)
    with contextlib.suppress(ValueError):
        path = path.relative_to(_ROOT)
    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{path}:{frame.f_lineno} in {frame.f_code.co_name}: {line}"


def _report(nodeid: str, within: float, timeout: float, waited: list[str], notes: list[str]) -> str:
    lines = [
        f"{nodeid} did not finish within {within:.0f} s ({DEADLINE_SHARE:.0%} of its"
        f" {timeout:.0f} s timeout); it was waiting at:",
        *(f"  {where}" for where in waited),
        *notes,
    ]
    return "\n".join(lines)

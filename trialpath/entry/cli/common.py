"""What every `trialpath` command shares: its consoles, one way to fail (a plain sentence
and an exit code, never a traceback), the Temporal connection, typed commands from options."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from temporalio.client import Client

from trialpath.operations.config import Settings
from trialpath.operations.temporal import connect

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def fail(message: str, code: int = 1) -> typer.Exit:
    # One line, however narrow the terminal: easy to read in logs and to grep.
    err_console.print(f"[red]error:[/] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


async def _client(settings: Settings, patience: float = 0.0) -> Client:
    try:
        return await connect(settings, patience)
    except RuntimeError as err:
        raise fail(
            f"cannot reach Temporal at {settings.temporal_address} ({err}); "
            "start everything with `trialpath up` or `make run`"
        ) from err


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _command(model: type[M], drop_none: bool = False, **fields: Any) -> M:
    """The options as a typed command (`drop_none`: options not given are left to the model's
    defaults); invalid ones are a clear error, exit code 2."""
    if drop_none:
        fields = {k: v for k, v in fields.items() if v is not None}
    try:
        return model.model_validate(fields)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()
        )
        raise fail(problems, 2) from err


def moment(text: str, option: str) -> datetime:
    """An option's ISO 8601 date or time, UTC when it names no zone; else a clear error."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise fail(f"{option} must be an ISO 8601 date or time, got {text!r}", 2) from err
    return value if value.tzinfo else value.replace(tzinfo=UTC)

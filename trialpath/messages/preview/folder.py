"""The templates folder as the preview watches it: its fingerprint, the locales its file names
are written in, and the Server-Sent Events stream that says when a file changes."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from trialpath.messages.templating import FALLBACK_LOCALE

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0


@dataclass(frozen=True)
class Fingerprint:
    digest: str
    files: int
    newest_mtime_ns: int


def fingerprint(templates_dir: Path) -> Fingerprint:
    """Names, sizes and modification times of the template files: changes on any edit, any file
    added or removed. Only `*.j2` files count, so editors' swap files do not reload the page."""
    entries = []
    newest = 0
    for path in sorted(templates_dir.rglob("*.j2")):
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed while we listed the folder
            continue
        entries.append(f"{path.relative_to(templates_dir)}\0{stat.st_mtime_ns}\0{stat.st_size}")
        newest = max(newest, stat.st_mtime_ns)
    digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]
    return Fingerprint(digest=digest, files=len(entries), newest_mtime_ns=newest)


def template_locales(templates_dir: Path) -> list[str]:
    """Every locale some template file is written in, the fallback locale first."""
    found = {FALLBACK_LOCALE}
    for path in templates_dir.rglob("*.j2"):
        parts = path.name.split(".")
        if len(parts) == 5 and not path.name.startswith("_"):
            found.add(parts[2])
    return [FALLBACK_LOCALE, *sorted(found - {FALLBACK_LOCALE})]


async def template_changes(
    templates_dir: Path,
    since: str | None = None,
    interval: float = POLL_SECONDS,
    stop: threading.Event | None = None,
) -> AsyncIterator[str]:
    """Server-Sent Events: a `change` event each time the folder's fingerprint changes.

    `since` is the fingerprint the page was rendered with, so an edit made between the page
    load and the subscription still reloads the page. The stream ends when `stop` is set."""
    yield "retry: 1000\n\n"
    current = (await asyncio.to_thread(fingerprint, templates_dir)).digest
    seen = since or current
    quiet = 0.0
    while not (stop and stop.is_set()):
        if current != seen:
            seen = current
            quiet = 0.0
            yield f"event: change\ndata: {current}\n\n"
        elif quiet >= HEARTBEAT_SECONDS:
            # A comment line: lets the server notice a closed tab when the write fails.
            quiet = 0.0
            yield ": still watching\n\n"
        await asyncio.sleep(interval)
        quiet += interval
        current = (await asyncio.to_thread(fingerprint, templates_dir)).digest

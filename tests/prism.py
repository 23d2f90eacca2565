"""Contract mocks: Stoplight Prism serving the providers' official OpenAPI descriptions.

`make test` installs Prism from `package.json` into `node_modules/`; the specs are found in
`../shared/specs` next to the repository (or `TRIALPATH_SPECS_DIR`). Without either, the tests
that use a mock are skipped with the reason.

Prism runs with `--errors`: a request that breaks the spec gets an error response instead of
a mock one. What that response looks like depends on the spec (see `violations`):

- the operation documents a 400 (SendGrid Mail Send): 400 with the spec's example body and
  the violations as JSON in the `sl-violations` header;
- it does not (Twilio Messages): 422 `application/problem+json`, violations in `validation`
  of the body, no `sl-violations` header;
- security not satisfied (no or wrong kind of credentials): 401.

Fixtures for conftest.py: `sendgrid_mock`, `twilio_mock` (session scope, base URLs).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PRISM = REPO_ROOT / "node_modules" / ".bin" / "prism"
SPECS_DIR = Path(
    os.environ.get("TRIALPATH_SPECS_DIR") or REPO_ROOT.parent / "shared" / "specs"
).resolve()
SENDGRID_SPEC = "sendgrid_mail_v3.json"
TWILIO_SPEC = "twilio_api_v2010.json"

STARTUP_TIMEOUT = 60.0
"""Prism parses the whole document before listening (about 2 s for Twilio's 1.8 MB)."""
STOP_TIMEOUT = 10.0


class PrismError(RuntimeError):
    """Prism did not start; the message carries its own output."""


def require_prism(spec: str | None = None) -> None:
    """Skips the calling test (or fixture) when Prism or the specs are not available."""
    reason = _missing(spec)
    if reason:
        print(f"skipping contract mock: {reason}", file=sys.stderr)
        pytest.skip(reason)


def _missing(spec: str | None) -> str | None:
    if not PRISM.exists():
        return f"{PRISM.relative_to(REPO_ROOT)} is not installed (run `make test`, needs npm)"
    if shutil.which("node") is None:
        return "node is not on PATH (Prism needs Node.js >= 18.20)"
    if not SPECS_DIR.is_dir():
        return f"no provider specs at {SPECS_DIR} (set TRIALPATH_SPECS_DIR)"
    if spec is not None and not (SPECS_DIR / spec).is_file():
        return f"{spec} is not in {SPECS_DIR}"
    return None


@contextlib.contextmanager
def prism_mock(spec: Path, *, port: int | None = None) -> Iterator[str]:
    """Serves `spec` with `prism mock --errors` and yields its base URL.

    Prism runs in a process group of its own, which is terminated on exit (SIGTERM, then
    SIGKILL), whatever happens in the block. With no `port`, a free one is picked (and another
    one if it was taken meanwhile).
    """
    attempts = 1 if port is not None else 3
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else _free_port()
        if port is not None and not _is_free(port):
            # Polling would find whatever listens there and take it for Prism.
            raise PrismError(f"port {port} is already in use: cannot start prism for {spec}")
        with tempfile.TemporaryFile() as log:
            # A file, not a pipe: Prism logs every request, and a full pipe would block it.
            process = subprocess.Popen(
                [
                    str(PRISM),
                    "mock",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(chosen),
                    "--errors",
                    "--dynamic",
                    "false",
                    str(spec),
                ],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                started = _wait_until_listening(process, chosen, log)
                if not started:
                    if attempt < attempts and "EADDRINUSE" in _output(log):
                        continue
                    raise PrismError(
                        f"prism exited with status {process.returncode} before listening on "
                        f"port {chosen} for {spec}:\n{_output(log)}"
                    )
                yield f"http://127.0.0.1:{chosen}"
                return
            finally:
                _stop(process)
    raise AssertionError("unreachable")  # pragma: no cover


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As Node does: a port whose old connections linger in TIME_WAIT is free to listen on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> bool:
    """True once the port accepts connections, False if Prism exited first."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.1)
    raise PrismError(
        f"prism did not listen on port {port} within {STARTUP_TIMEOUT:.0f} s:\n{_output(log)}"
    )


def _output(log: IO[bytes], limit: int = 8000) -> str:
    log.flush()
    log.seek(0)
    text = log.read().decode("utf-8", "replace")
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _stop(process: subprocess.Popen[bytes]) -> None:
    # start_new_session made Prism's PID its process group id: signal the whole group, so
    # nothing it forked outlives the test.
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def violations(response: Any) -> list[dict[str, Any]]:
    """The spec violations Prism reported for a request (empty when there were none).

    From the `sl-violations` header when the spec documents an error response Prism used,
    otherwise from the `validation` list of Prism's own 422 problem document. `response` is
    an `httpx.Response` (anything with `headers`, `status_code` and `json()`).
    """
    header = response.headers.get("sl-violations")
    if header:
        found: list[dict[str, Any]] = json.loads(header)
        return found
    if response.status_code == 422 and "problem+json" in response.headers.get("content-type", ""):
        body = response.json()
        return list(body.get("validation", []))
    return []


def _serve(spec: str) -> Iterator[str]:
    require_prism(spec)
    with prism_mock(SPECS_DIR / spec) as url:
        yield url


@pytest.fixture(scope="session")
def sendgrid_mock() -> Iterator[str]:
    """Base URL of a Prism mock of SendGrid Mail Send v3 (`POST /v3/mail/send`)."""
    yield from _serve(SENDGRID_SPEC)


@pytest.fixture(scope="session")
def twilio_mock() -> Iterator[str]:
    """Base URL of a Prism mock of Twilio's REST API 2010-04-01 (`.../Messages.json`)."""
    yield from _serve(TWILIO_SPEC)

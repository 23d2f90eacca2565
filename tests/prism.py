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

Fixtures for conftest.py: `sendgrid_mock`, `twilio_mock` (session scope, base URLs; one
Prism per spec for all the test processes of a run).
"""

from __future__ import annotations

import contextlib
import fcntl
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

from trialpath.operations.ports import free_port, is_free

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
    process, url = _start(spec, port)
    try:
        yield url
    finally:
        _stop(process)


def _start(spec: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    attempts = 1 if port is not None else 3
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else free_port()
        if port is not None and not is_free(port):
            # Polling would find whatever listens there and take it for Prism.
            raise PrismError(f"port {port} is already in use: cannot start prism for {spec}")
        # A file, not a pipe: Prism logs every request, and a full pipe would block it. Its
        # name is gone at once, and this process closes it once Prism listens; Prism keeps
        # writing to it until it stops.
        with tempfile.TemporaryFile() as log:
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
            except BaseException:
                _stop(process)
                raise
            if started:
                return process, f"http://127.0.0.1:{chosen}"
            output = _output(log)
        if attempt < attempts and "EADDRINUSE" in output:
            continue
        raise PrismError(
            f"prism exited with status {process.returncode} before listening on "
            f"port {chosen} for {spec}:\n{output}"
        )
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def shared_prism_mock(spec: Path, folder: Path) -> Iterator[str]:
    """Like `prism_mock`, but one Prism per spec for every test process of the run
    (pytest-xdist): the first process that needs it starts it, the last one done with it
    stops it. Each start parses the spec again (seconds of CPU for Twilio's).

    `folder` is shared by the processes; it holds, per spec, a lock file and the server's PID,
    URL and users (the PIDs of the processes using it; a process that died no longer counts).
    `stop_shared_prisms` stops whatever is left there."""
    lock, state_file = folder / f"prism-{spec.stem}.lock", folder / f"prism-{spec.stem}.json"
    me = os.getpid()
    with _locked(lock):
        state = _read_state(state_file)
        if state is None or not _alive(state["pid"]) or not _listening(state["url"]):
            if state is not None:
                _stop_pid(state["pid"])
            process, url = _start(spec)
            _CHILDREN[process.pid] = process
            state = {"pid": process.pid, "url": url, "users": []}
        state["users"] = [pid for pid in state["users"] if _alive(pid)] + [me]
        state_file.write_text(json.dumps(state))
    try:
        yield str(state["url"])
    finally:
        with _locked(lock):
            state = _read_state(state_file)
            if state is not None:
                state["users"] = [p for p in state["users"] if p != me and _alive(p)]
                if state["users"]:
                    state_file.write_text(json.dumps(state))
                else:
                    _stop_pid(state["pid"])
                    state_file.unlink()


def stop_shared_prisms(folder: Path) -> None:
    """Stops the shared Prisms a test process left running (it died, or was killed)."""
    for state_file in folder.glob("prism-*.json"):
        with _locked(state_file.with_suffix(".lock")):
            state = _read_state(state_file)
            if state is not None:
                _stop_pid(state["pid"])
                state_file.unlink()


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Shared Prisms this process started: stopped with `wait`, so they leave no zombie."""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # A zombie (exited, not reaped yet by its parent) is dead too.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _listening(url: str) -> bool:
    host, _, port = url.removeprefix("http://").partition(":")
    try:
        socket.create_connection((host, int(port)), 1).close()
    except OSError:
        return False
    return True


def _stop_pid(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        _stop(child)
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.05)


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


def _serve(spec: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_prism(spec)
    # The folder above this process's temporary folder: the same for every test process of
    # the run (pytest-xdist's workers have theirs in it).
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with shared_prism_mock(SPECS_DIR / spec, shared) as url:
        yield url


@pytest.fixture(scope="session")
def sendgrid_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a Prism mock of SendGrid Mail Send v3 (`POST /v3/mail/send`)."""
    yield from _serve(SENDGRID_SPEC, tmp_path_factory)


@pytest.fixture(scope="session")
def twilio_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a Prism mock of Twilio's REST API 2010-04-01 (`.../Messages.json`)."""
    yield from _serve(TWILIO_SPEC, tmp_path_factory)

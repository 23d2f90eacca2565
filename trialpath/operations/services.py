"""Starting and stopping the embedded services: Temporal dev server and the worker.

Every process started here is remembered by PID and stopped (SIGTERM, then SIGKILL after a
grace period) when the `Services` context exits, on Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from trialpath.operations.config import PROJECT_ROOT, Settings
from trialpath.operations.temporal import SEARCH_ATTRIBUTE_TYPES, bundled_binary

_SA_CLI_TYPES = {
    1: "Text",
    2: "Keyword",
    3: "Int",
    4: "Double",
    5: "Bool",
    6: "Datetime",
    7: "KeywordList",
}


class ServiceError(RuntimeError):
    """A service could not be started; the message says why and where its log is."""


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, grace: float = 15.0) -> None:
        if self.popen.poll() is not None:
            return
        # Each service runs in its own process group: signal the group, so helpers die too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)


@dataclass
class Services:
    settings: Settings
    started: list[Process] = field(default_factory=list)

    def start_temporal(self) -> bool:
        """Starts the Temporal dev server unless one already answers; True if started here."""
        host, port = split_address(self.settings.temporal_address)
        if port_open(host, port):
            return False
        data = self.settings.data_dir.resolve()
        data.mkdir(parents=True, exist_ok=True)
        command = [
            str(bundled_binary("temporal")),
            "server",
            "start-dev",
            "--db-filename",
            str(data / "temporal.db"),
            "--ip",
            host,
            "--port",
            str(port),
            "--ui-port",
            str(self.settings.temporal_ui_port),
            "--namespace",
            self.settings.temporal_namespace,
            "--log-level",
            "warn",
        ]
        for name, kind in SEARCH_ATTRIBUTE_TYPES.items():
            command += ["--search-attribute", f"{name}={_SA_CLI_TYPES[int(kind)]}"]
        process = self._spawn("temporal", command, data / "temporal.log")
        self._wait_for_port(process, host, port, timeout=60)
        return True

    def start_worker(self) -> Process:
        data = self.settings.data_dir.resolve()
        return self._spawn("worker", [sys.executable, "-m", "worker"], data / "worker.log")

    def start_api(self, extra_env: dict[str, str]) -> Process:
        """Serves the HTTP API with uvicorn; `extra_env` adds settings for that process only."""
        host, port = self.settings.api_host, self.settings.api_port
        if port_open(host, port):
            raise ServiceError(
                f"{host}:{port} is already in use; set TRIALPATH_API_PORT to another port"
            )
        data = self.settings.data_dir.resolve()
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "trialpath.entry.api.app:create_app",
            "--host",
            host,
            "--port",
            str(port),
            "--no-access-log",
            "--proxy-headers",
            "--forwarded-allow-ips",
            self.settings.forwarded_allow_ips,
        ]
        process = self._spawn("api", command, data / "api.log", extra_env)
        self._wait_for_port(process, host, port, timeout=60)
        return process

    def _spawn(
        self, name: str, command: list[str], log: Path, extra_env: dict[str, str] | None = None
    ) -> Process:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=PROJECT_ROOT,
                env={**os.environ, **(extra_env or {})},
                start_new_session=True,
            )
        process = Process(name, popen, log)
        self.started.append(process)
        return process

    def _wait_for_port(self, process: Process, host: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise ServiceError(
                    f"{process.name} exited with code {process.popen.returncode}; see {process.log}"
                )
            if port_open(host, port):
                return
            time.sleep(0.2)
        raise ServiceError(
            f"{process.name} did not listen on {host}:{port} in {timeout:.0f}s; see {process.log}"
        )

    def check_alive(self) -> None:
        for process in self.started:
            code = process.popen.poll()
            if code is not None:
                raise ServiceError(f"{process.name} stopped (exit code {code}); see {process.log}")

    def stop_all(self) -> None:
        for process in reversed(self.started):
            # The worker lets running activities finish (its graceful shutdown) before it exits.
            worker = process.name == "worker"
            process.stop(self.settings.worker_shutdown_seconds + 5 if worker else 15.0)
        self.started.clear()


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[Services]:
    services = Services(settings)
    try:
        yield services
    finally:
        services.stop_all()

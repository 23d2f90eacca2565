"""Stopping the embedded services: each process by its PID, the worker given its graceful
shutdown time."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from trialpath.operations.config import Settings
from trialpath.operations.services import Process, Services

# Exits 0 some seconds after SIGTERM, as a worker finishing its running activities does.
SLOW_TO_STOP = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(float(sys.argv[1])), sys.exit(0)))\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def spawn(services: Services, name: str, seconds: float, log: Path) -> subprocess.Popen[bytes]:
    process = services._spawn(name, [sys.executable, "-c", SLOW_TO_STOP, str(seconds)], log)
    deadline = time.monotonic() + 30
    while b"ready" not in log.read_bytes():
        assert time.monotonic() < deadline and process.popen.poll() is None
        time.sleep(0.05)
    return process.popen


@pytest.mark.takes(seconds=8)
def test_the_worker_gets_its_shutdown_time_then_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graces: dict[str, float] = {}
    real_stop = Process.stop

    def stop(self: Process, grace: float = 15.0) -> None:
        graces[self.name] = grace
        real_stop(self, grace)

    monkeypatch.setattr(Process, "stop", stop)
    services = Services(Settings(data_dir=tmp_path, worker_shutdown_seconds=1))
    patient = spawn(services, "worker", 3, tmp_path / "worker.log")
    api = spawn(services, "api", 0, tmp_path / "api.log")
    services.stop_all()
    assert graces == {"worker": 6.0, "api": 15.0}  # the worker's graceful shutdown + 5 s
    assert (patient.returncode, api.returncode) == (0, 0)

    services = Services(Settings(data_dir=tmp_path, worker_shutdown_seconds=0))
    stuck = spawn(services, "worker", 60, tmp_path / "stuck.log")
    services.stop_all()
    assert stuck.returncode == -9  # SIGKILL once the grace is over
    assert services.started == []

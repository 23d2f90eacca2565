"""The chaos proof, small: 20 trials on the real dev server, the worker killed with SIGKILL three
times and the dev server killed and restarted once; every trial still ends where its user's
actions say, and every message goes out exactly once. The full run is `bench/chaos.py`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.chaos import Options, make_runs, run_chaos

pytestmark = pytest.mark.slow


@pytest.mark.takes(seconds=110)
async def test_trials_survive_worker_kills_and_a_server_restart(tmp_path: Path) -> None:
    options = Options(
        trials=20,
        kills=3,
        seed=23,
        seconds_per_day=0.5,
        timeout=240,
        progress_seconds=15,
        root=tmp_path,
    )
    # This seed's users end in every way a trial can end.
    assert Counter(r.expected for r in make_runs(options)) == {
        "expired": 13,
        "converted": 4,
        "cancelled": 3,
    }
    report = await run_chaos(options)
    print(report.render())
    assert [c for c in report.checks if not c.ok] == []
    assert {c.name for c in report.checks} >= {
        "every trial reached its expected stage",
        "0 lost sends: rows settled",
        "0 lost sends: rows = workflow's sent",
        "0 duplicates: one row per key",
        "0 duplicates: one file per outbox row",
        "chaos as planned",
    }

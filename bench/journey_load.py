"""The journey load at each trial's start (`load_journey_version`), read anew or kept by the worker.

    .venv/bin/python bench/journey_load.py [--starts 300] [--rounds 3]

Runs the activity `--starts` times on a SQLite database in a temporary folder, two ways side by
side, alternated over `--rounds` rounds: as a worker that reads the file anew at each start
(a new `JourneyActivities` each time: parse the TOML, validate, hash, look the version up),
and as the worker does (one `JourneyActivities`: an unchanged file is recognised by its bytes).
Prints the median CPU time per start of each way and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from temporalio.testing import ActivityEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from activities.journey import JourneyActivities, LoadJourneyInput
from trialpath.operations.config import PACKAGE_DIR
from trialpath.operations.db import make_engine


def per_start(starts: int, make: JourneyActivities | None, path: Path, url: str) -> float:
    """CPU milliseconds per start: `make` reused, or a new one per start when None."""
    engine = make_engine(url)
    env = ActivityEnvironment()
    began = time.process_time()
    for _ in range(starts):
        acts = make or JourneyActivities(path, engine)
        env.run(acts.load_journey_version, LoadJourneyInput())
    return (time.process_time() - began) * 1000 / starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.starts < 1 or args.rounds < 1:
        parser.error("--starts and --rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="journey-load-") as tmp:
        path = Path(tmp) / "journey.toml"
        path.write_bytes((PACKAGE_DIR / "journey.toml").read_bytes())
        url = f"sqlite:///{tmp}/trialpath.db"
        kept = JourneyActivities(path, make_engine(url))
        anew: list[float] = []
        cached: list[float] = []
        for _ in range(args.rounds):
            anew.append(per_start(args.starts, None, path, url))
            cached.append(per_start(args.starts, kept, path, url))
    a, c = statistics.median(anew), statistics.median(cached)
    print(f"load_journey_version, {args.starts} starts x {args.rounds} rounds, CPU per start:")
    print(f"  read anew each start   {a:7.2f} ms")
    print(f"  kept by the worker     {c:7.2f} ms")
    print(f"  ratio kept / anew      {c / a:7.2f}")


if __name__ == "__main__":
    main()

"""Trials simulated per second by `trialpath simulate`, side by side for several numbers of
parts played at once, against the 1,000 trials in a minute asked of it.

    .venv/bin/python bench/simulate.py [--population 200] [--parallel 1,2,3] [--seed 7]

Each run plays the same synthetic population through the shipped journey (the real workflow and
activities, every channel to the outbox, time-skipping servers started and stopped by the
simulation itself, on 127.0.0.1). It prints, per setting: wall seconds, trials/s, CPU seconds
per trial (this process and its children: the parts and their servers), parts played again,
messages per user (the same population should give the same figure), and the ratio of
trials/s to the target (16.7 trials/s).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from pathlib import Path

from trialpath.growth.simulate import simulate
from trialpath.operations.config import PACKAGE_DIR, PROJECT_ROOT

TARGET = 1000 / 60


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--population", type=int, default=200)
    parser.add_argument("--parallel", default="1,2,3")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--journey", type=Path, default=PACKAGE_DIR / "journey.toml")
    args = parser.parse_args()
    rows = []
    for parallel in [int(p) for p in args.parallel.split(",")]:
        began, cpu = time.monotonic(), cpu_seconds()
        sim = await simulate(
            args.journey,
            population=args.population,
            seed=args.seed,
            templates=PROJECT_ROOT / "templates",
            parallel=parallel,
        )
        wall, used = time.monotonic() - began, cpu_seconds() - cpu
        rows.append((parallel, wall, sim.population / wall, used / sim.population, sim))
        print(f"parallel {parallel}: {wall:.1f} s", flush=True)
    print(
        f"\n{args.population} trials of {args.journey.name}, seed {args.seed}\n"
        f"{'parts at once':>13} {'wall s':>7} {'trials/s':>9} {'CPU s/trial':>12} "
        f"{'replayed':>9} {'msgs/user':>10} {'vs first':>9} {'vs target':>10}"
    )
    first = rows[0][2]
    for parallel, wall, rate, cpu, sim in rows:
        print(
            f"{parallel:>13} {wall:>7.1f} {rate:>9.2f} {cpu:>12.2f} {sim.replayed:>9} "
            f"{sim.messages_per_user():>10.2f} {rate / first:>9.2f} {rate / TARGET:>10.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())

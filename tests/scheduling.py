"""How pytest-xdist hands tests to the test processes (`--dist load --maxschedchunk 1`).

The collection comes sorted longest first (`tests/conftest.py`). With at least two tests per
process, xdist's `load` scheduling gives each free process the next test, which is what we want.
With fewer (the slow suite: five tests of one to two minutes on three processes), xdist deals
every test out at once, round-robin: the first process gets the longest test *and* the fourth,
and the run lasts as long as those two together. Here they are dealt in snake order instead
(1, 2, 3, 3, 2, 1, ...): the longest test runs alone, the next ones are paired long with short.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadScheduling


def snake(count: int, processes: int) -> list[int]:
    """The process (0-based) each of `count` tests sorted longest first goes to."""
    order = []
    for i in range(count):
        row, column = divmod(i, processes)
        order.append(column if row % 2 == 0 else processes - 1 - column)
    return order


class LongestFirstScheduling(LoadScheduling):
    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None or not self._check_nodes_have_same_collection():
            super().schedule()
            return
        collection = next(iter(self.node2collection.values()))
        nodes = self.nodes
        if not collection or len(collection) >= 2 * len(nodes):
            super().schedule()
            return
        self.collection = collection
        self.pending[:] = range(len(collection))
        for process in snake(len(collection), len(nodes)):
            self._send_tests(nodes[process], 1)  # the next pending test, in collection order
        for node in nodes:
            node.shutdown()


def make_scheduler(config: Any, log: Any) -> LongestFirstScheduling:
    return LongestFirstScheduling(config, log)

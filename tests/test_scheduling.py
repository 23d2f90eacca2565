"""The test processes' scheduling (tests/scheduling.py): the slow suite's five tests on three
processes are dealt so that the longest runs alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.scheduling import LongestFirstScheduling, snake


def test_snake_order() -> None:
    assert snake(5, 3) == [0, 1, 2, 2, 1]
    assert snake(7, 3) == [0, 1, 2, 2, 1, 0, 0]
    assert snake(2, 3) == [0, 1]
    assert snake(3, 1) == [0, 0, 0]


@dataclass(frozen=True)
class Gateway:
    id: str


@dataclass(eq=False)
class Node:
    gateway: Gateway
    received: list[int] = field(default_factory=list)
    shut_down: bool = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.received.extend(indices)

    def shutdown(self) -> None:
        self.shut_down = True


class Config:
    def __init__(self, processes: int) -> None:
        self.processes = processes

    def getvalue(self, name: str) -> Any:
        assert name == "tx"
        return [f"{self.processes}*popen"]

    def getoption(self, name: str) -> Any:
        assert name == "maxschedchunk"
        return 1


def schedule(tests: int, processes: int) -> tuple[LongestFirstScheduling, list[Node]]:
    scheduler = LongestFirstScheduling(Config(processes))  # type: ignore[arg-type]
    nodes = [Node(Gateway(f"gw{i}")) for i in range(processes)]
    collection = [f"tests/test_x.py::test_{i}" for i in range(tests)]
    for node in nodes:
        scheduler.add_node(node)  # type: ignore[arg-type]
        scheduler.add_node_collection(node, collection)  # type: ignore[arg-type]
    scheduler.schedule()
    return scheduler, nodes


def test_fewer_tests_than_two_per_process_are_dealt_in_snake_order() -> None:
    # Sorted longest first: 150, 110, 90, 80 and 75 s. Round-robin would give the first process
    # 150 + 80 s; here it runs the longest alone, the others 110 + 75 and 90 + 80.
    scheduler, nodes = schedule(5, 3)
    assert [node.received for node in nodes] == [[0], [1, 4], [2, 3]]
    assert all(node.shut_down for node in nodes)
    assert scheduler.pending == []


def test_more_tests_are_scheduled_as_xdist_does() -> None:
    scheduler, nodes = schedule(20, 3)
    # Two each to start with (a process runs a test once it knows the next one), the rest on
    # demand: nothing is dealt out ahead, nobody is shut down yet.
    assert [node.received for node in nodes] == [[0, 1], [2, 3], [4, 5]]
    assert not any(node.shut_down for node in nodes)
    assert len(scheduler.pending) == 14

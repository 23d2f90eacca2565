"""Free loopback ports for the servers the tests and the benchmarks start.

A port the kernel hands out for `bind(("127.0.0.1", 0))` lies in its ephemeral range, the
same range it takes the source port of every outgoing connection from: between choosing such
a port and the server binding it, any connection on the machine may take it ("address
already in use", seen with the Temporal dev server's UI port). These come from below that
range, where only servers that ask for a port by number go, and are checked free.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10_000


def _ephemeral_start() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768  # Linux's default (macOS starts at 49152)
    return max(low, LOWEST + 1_000)


def is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(pair: bool = False) -> int:
    """A port no one listens on, outside the ephemeral range (with `pair`, the next one is free
    too: a worker's metrics take the port after the one they are given)."""
    draw = random.SystemRandom()
    high = _ephemeral_start()
    for _ in range(500):
        port = draw.randrange(LOWEST, high - 1)
        if is_free(port) and (not pair or is_free(port + 1)):
            return port
    raise RuntimeError(f"no free port between {LOWEST} and {high}")

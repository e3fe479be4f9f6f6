"""Free TCP ports on loopback, for the processes `synod bench` and `synod check` start
(and the test harnesses).

A port found free is not reserved: the server that is to listen on it binds it a
second or so later, in another process. Two things can take it in between (the
first failed a CI run here):

- an outgoing connection: the kernel gives those a port of its ephemeral range
  (`net.ipv4.ip_local_port_range`, 32768-60999 by default), so the ports handed
  out here come from below it, where only listeners land;
- another test process (pytest-xdist's workers) handing out the same port: each
  worker draws from its own share of the range, and walks it in order, so one
  process never hands a port out twice until it has walked its whole share.
"""

from __future__ import annotations

import os
import random
import socket

_LOWEST = 20000
"""Start of the range handed out; below it sit many well-known services' ports."""

_DEFAULT_EPHEMERAL_START = 32768


def _ephemeral_start() -> int:
    """First port of the kernel's range for outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_START


def share(worker: str | None, workers: int, lowest: int, end: int) -> tuple[int, int]:
    """The [start, end) part of [lowest, end) that test worker `worker` ("gw3") draws from.

    Outside pytest-xdist (`worker` None) a process draws from the whole range.
    """
    if not worker or not worker.startswith("gw") or workers < 2:
        return lowest, end
    index = int(worker[2:])
    width = (end - lowest) // workers
    return lowest + index * width, lowest + (index + 1) * width


class PortSource:
    """Hands out ports of [start, end) in order, skipping ones in use.

    It starts at `first`, or at a random point so that processes started one
    after another (`synod bench` runs, say) do not all try the same ports first.
    """

    def __init__(self, start: int, end: int, first: int | None = None) -> None:
        if end - start < 64:
            raise ValueError(f"port range {start}-{end} is too small")
        self.start = start
        self.end = end
        self._next = random.randrange(start, end) if first is None else first

    def take(self, n: int, contiguous: bool = False) -> list[int]:
        """`n` free ports; `contiguous` asks for n consecutive ones."""
        if n <= 0:
            return []
        found: list[int] = []
        for _ in range(self.end - self.start):
            port = self._next
            self._next = port + 1 if port + 1 < self.end else self.start
            if contiguous and found and port != found[-1] + 1:
                found = []  # wrapped around the end of the range
            if port_free(port):
                found.append(port)
                if len(found) == n:
                    return found
            elif contiguous:
                found = []
        raise RuntimeError(f"no {n} free ports in {self.start}-{self.end}")


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now."""
    # SO_REUSEADDR as gRPC's and Go's listeners set it: a port whose last
    # connections linger in TIME_WAIT is free for them, one with a listener is not.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_source: PortSource | None = None


def _process_source() -> PortSource:
    global _source
    if _source is None:
        start, end = share(
            os.environ.get("PYTEST_XDIST_WORKER"),
            int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")),
            _LOWEST,
            # A kernel set to hand out nearly every port leaves nothing safe; take
            # the risk rather than fail.
            max(_ephemeral_start(), _LOWEST + 4096),
        )
        _source = PortSource(start, end)
    return _source


def free_loopback_ports(n: int) -> list[int]:
    """`n` distinct free ports on 127.0.0.1, below the ephemeral range."""
    return _process_source().take(n)


def free_loopback_base(span: int) -> int:
    """The first of `span` consecutive free ports on 127.0.0.1."""
    return _process_source().take(span, contiguous=True)[0]

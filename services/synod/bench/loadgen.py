"""The load generator every scenario shares: closed-loop workers on a few gRPC channels.

`inflight` workers each keep one call outstanding: as soon as an answer comes
back the next request goes out. Workers are spread over the channels round
robin (one or more channels per endpoint), the way a pool of clients would
spread over a cluster. The generator is Python on the same 2-core machine as
the servers, so each window also records the CPU the generator itself used
(`gen_cpu`, in cores): near 1.0 means the generator, not the server, set the
pace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc


@dataclass
class Window:
    """What one measured window saw."""

    ops: int
    seconds: float
    errors: int
    gen_cpu: float  # cores the generator process used on average
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


class CpuClock:
    """CPU the generator process spends between start() and cores()."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    def cores(self) -> float:
        wall = time.perf_counter() - self._wall
        return (time.process_time() - self._cpu) / wall if wall > 0 else 0.0


def channels(endpoints: Sequence[str], per_endpoint: int = 1) -> list[grpc.aio.Channel]:
    """Channels round robin over endpoints; each its own connection (own subchannel pool)."""
    out = []
    for i in range(per_endpoint):
        for ep in endpoints:
            out.append(
                grpc.aio.insecure_channel(
                    ep,
                    options=[
                        ("grpc.use_local_subchannel_pool", 1),
                        ("grpc.channel_id", i),  # distinct args: never the same connection
                    ],
                )
            )
    return out


async def close_all(chans: Sequence[grpc.aio.Channel]) -> None:
    await asyncio.gather(*(c.close(None) for c in chans), return_exceptions=True)


Op = Callable[[int, int], Awaitable[object]]  # (worker index, this worker's op number)


async def closed_loop(
    op: Op, inflight: int, seconds: float, *, latencies: bool = True, max_ops: int = 0
) -> Window:
    """Run `op` from `inflight` workers for `seconds` (or until `max_ops` in total)."""
    count = 0
    errors = 0
    lat: list[float] = []
    clock = CpuClock()
    start = time.perf_counter()
    stop = start + seconds

    async def worker(w: int) -> None:
        nonlocal count, errors
        k = 0
        while True:
            now = time.perf_counter()
            if now >= stop or (max_ops and count >= max_ops):
                return
            try:
                await op(w, k)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            finally:
                k += 1
            done = time.perf_counter()
            count += 1
            if latencies:
                lat.append((done - now) * 1000.0)

    await asyncio.gather(*(worker(w) for w in range(inflight)))
    elapsed = time.perf_counter() - start
    return Window(count, elapsed, errors, clock.cores(), lat)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    i = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return float(s[i])

"""Watch: events/s delivered to 10 watchers on one prefix under write load, and the delay.

Each put carries the time it was sent (the generator's perf_counter, the same
clock the watchers read), so a watcher's receive time minus that is the
end-to-end delay: commit, apply, fan-out and delivery.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable

import grpc

from synod.bench.clusters import Stack
from synod.bench.loadgen import CpuClock, channels, close_all, closed_loop, percentile
from synod.bench.scenario import Result, Scale, Scenario
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

WATCHERS = 10
WRITERS = 64
PREFIX = b"w/"
PREFIX_END = b"w0"  # the key just past every "w/..." key
_STAMP = struct.Struct("<d")


async def _watcher(
    stub: rpc_pb2_grpc.WatchStub, ready: asyncio.Event, delays: list[float], counts: list[int],
    i: int,
) -> None:  # fmt: skip
    call = stub.Watch()
    await call.write(
        rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(key=PREFIX, range_end=PREFIX_END)
        )
    )
    try:
        async for resp in call:
            if resp.created:
                ready.set()
                continue
            now = time.perf_counter()
            for ev in resp.events:
                counts[i] += 1
                sent = _STAMP.unpack_from(ev.kv.value)[0]
                delays.append((now - sent) * 1000.0)
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            raise
    finally:
        call.cancel()


async def watch_fanout(stack: Stack, scale: Scale, warm: bool) -> Result:
    wchans = channels(stack.endpoints)
    pchans = channels(stack.endpoints, 2)
    tasks: list[asyncio.Task[None]] = []
    try:
        await asyncio.gather(*(c.channel_ready() for c in [*wchans, *pchans]))
        delays: list[float] = []
        counts = [0] * WATCHERS
        readies = [asyncio.Event() for _ in range(WATCHERS)]
        for i in range(WATCHERS):
            stub = rpc_pb2_grpc.WatchStub(wchans[i % len(wchans)])
            tasks.append(asyncio.create_task(_watcher(stub, readies[i], delays, counts, i)))
        async with asyncio.timeout(30):
            await asyncio.gather(*(r.wait() for r in readies))
        stubs = [rpc_pb2_grpc.KVStub(c) for c in pchans]
        pad = b"v" * (100 - _STAMP.size)

        def op(w: int, k: int) -> Awaitable[object]:
            value = _STAMP.pack(time.perf_counter()) + pad
            req = rpc_pb2.PutRequest(key=PREFIX + b"%d/%d" % (w, k % 100), value=value)
            call: Awaitable[object] = stubs[w % len(stubs)].Put(req, timeout=10)
            return call

        clock = CpuClock()
        seconds = scale.warmup_window if warm else scale.window
        start = time.perf_counter()
        win = await closed_loop(op, WRITERS, seconds, latencies=False)
        delivered = sum(counts)
        elapsed = time.perf_counter() - start
        gen_cpu = clock.cores()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_all([*wchans, *pchans])
    return Result(
        {"watch_events": delivered / elapsed, "watch_delay_p99": percentile(delays, 0.99)},
        gen_cpu, win.errors,
        samples={"watch_delay": delays},
        extra={"puts_per_s": win.rate, "events_per_watcher": counts},
    )  # fmt: skip


SCENARIOS = [Scenario("watch fan-out", ("watch_events", "watch_delay_p99"), watch_fanout)]

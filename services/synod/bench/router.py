"""Router (Synod only: etcd has no counterpart): Lookup RPCs, LookupBatch, and local lookups
in the Python client's cached ring (`Client.router(ring)`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import grpc

from synod.bench.clusters import Stack
from synod.bench.loadgen import CpuClock, channels, close_all, closed_loop
from synod.bench.scenario import Result, Scale, Scenario
from synod.client.public import Client
from synod.router.v1 import router_pb2, router_pb2_grpc

RING = "bench"
BACKENDS = 10
BATCH = 1000
KEYS = [b"user/%d" % i for i in range(10_000)]


async def _register(stubs: list[router_pb2_grpc.RouterStub]) -> None:
    # A long TTL instead of keepalives: the members must outlive the scenario, no more.
    async def one(i: int) -> None:
        req = router_pb2.RegisterRequest(
            ring=RING, id=f"be-{i}", address=f"127.0.0.1:{40000 + i}", ttl_seconds=3600
        )
        for attempt in range(5):
            try:
                await stubs[attempt % len(stubs)].Register(req, timeout=10)
                return
            except grpc.aio.AioRpcError as e:
                # Registering the same id again is harmless here; the router answers
                # UNAVAILABLE when its own consensus call failed (seen: GOAWAY "too many pings").
                if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))

    await asyncio.gather(*(one(i) for i in range(BACKENDS)))


async def lookup_rpc(stack: Stack, scale: Scale, warm: bool) -> Result:
    chans = channels(stack.router_endpoints, 2)
    try:
        await asyncio.gather(*(c.channel_ready() for c in chans))
        stubs = [router_pb2_grpc.RouterStub(c) for c in chans]
        await _register(stubs)

        def op(w: int, k: int) -> Awaitable[object]:
            req = router_pb2.LookupRequest(ring=RING, key=KEYS[(w * 7919 + k) % len(KEYS)])
            call: Awaitable[object] = stubs[w % len(stubs)].Lookup(req, timeout=10)
            return call

        win = await closed_loop(op, 64, scale.warmup_window if warm else scale.window)
    finally:
        await close_all(chans)
    return Result({"router_lookup_64": win.rate}, win.gen_cpu, win.errors)


async def lookup_batch(stack: Stack, scale: Scale, warm: bool) -> Result:
    chans = channels(stack.router_endpoints)
    try:
        await asyncio.gather(*(c.channel_ready() for c in chans))
        stubs = [router_pb2_grpc.RouterStub(c) for c in chans]
        await _register(stubs)
        batches = [KEYS[i : i + BATCH] for i in range(0, len(KEYS), BATCH)]

        def op(w: int, k: int) -> Awaitable[object]:
            req = router_pb2.LookupBatchRequest(ring=RING, keys=batches[(w + k) % len(batches)])
            call: Awaitable[object] = stubs[w % len(stubs)].LookupBatch(req, timeout=10)
            return call

        win = await closed_loop(op, 4, scale.warmup_window if warm else scale.window)
    finally:
        await close_all(chans)
    return Result({"router_lookup_batch": win.rate * BATCH}, win.gen_cpu, win.errors)


async def local_lookup(stack: Stack, scale: Scale, warm: bool) -> Result:
    chans = channels(stack.router_endpoints)
    try:
        await _register([router_pb2_grpc.RouterStub(c) for c in chans])
    finally:
        await close_all(chans)
    seconds = scale.warmup_window if warm else scale.window
    async with Client(stack.endpoints, router_endpoints=stack.router_endpoints) as client:
        async with client.router(RING) as view:
            clock = CpuClock()
            n = 0
            start = time.perf_counter()
            stop = start + seconds
            # A tight synchronous loop: this is the cost of a lookup, no event loop in it.
            while time.perf_counter() < stop:
                for key in KEYS[:1000]:
                    view.lookup(key)
                n += 1000
            elapsed = time.perf_counter() - start
            gen_cpu = clock.cores()
    return Result({"router_local_lookup": n / elapsed}, gen_cpu)


SCENARIOS = [
    Scenario("router Lookup @64", ("router_lookup_64",), lookup_rpc, synod_only=True),
    Scenario("router LookupBatch", ("router_lookup_batch",), lookup_batch, synod_only=True),
    Scenario("router local lookups", ("router_local_lookup",), local_lookup, synod_only=True),
]

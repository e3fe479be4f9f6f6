"""Put, Range and Txn through the etcd v3 KV API, the same requests for both systems."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from synod.bench.clusters import Stack
from synod.bench.figures import INFLIGHTS
from synod.bench.loadgen import channels, close_all, closed_loop, percentile
from synod.bench.scenario import Result, Scale, Scenario
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

VALUE = b"v" * 100
TIMEOUT = 10.0


def _per_endpoint(inflight: int) -> int:
    # More than one HTTP/2 connection per member once many calls are in flight,
    # so one connection's framing is not the limit.
    return 2 if inflight >= 64 else 1


async def put_sequential(stack: Stack, scale: Scale, warm: bool) -> Result:
    chans = channels(stack.endpoints)
    try:
        await asyncio.gather(*(c.channel_ready() for c in chans))
        stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]

        def op(w: int, k: int) -> Awaitable[object]:
            # One client, its requests spread over the members like the others'.
            req = rpc_pb2.PutRequest(key=b"seq/%d" % (k % 1000), value=VALUE)
            call: Awaitable[object] = stubs[k % len(stubs)].Put(req, timeout=TIMEOUT)
            return call

        win = await closed_loop(op, 1, scale.warmup_window if warm else scale.window)
    finally:
        await close_all(chans)
    return Result(
        {
            "put_seq_p50": percentile(win.latencies_ms, 0.5),
            "put_seq_p99": percentile(win.latencies_ms, 0.99),
        },
        win.gen_cpu, win.errors, samples={"put_seq": win.latencies_ms},
    )  # fmt: skip


def put_throughput(inflight: int) -> Scenario:
    async def run(stack: Stack, scale: Scale, warm: bool) -> Result:
        chans = channels(stack.endpoints, _per_endpoint(inflight))
        try:
            await asyncio.gather(*(c.channel_ready() for c in chans))
            stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]

            def op(w: int, k: int) -> Awaitable[object]:
                req = rpc_pb2.PutRequest(key=b"put/%d/%d" % (w, k % 100), value=VALUE)
                call: Awaitable[object] = stubs[w % len(stubs)].Put(req, timeout=TIMEOUT)
                return call

            win = await closed_loop(op, inflight, scale.warmup_window if warm else scale.window)
        finally:
            await close_all(chans)
        return Result(
            {f"put_{inflight}": win.rate}, win.gen_cpu, win.errors,
            samples={f"put_{inflight}": win.latencies_ms},
        )  # fmt: skip

    return Scenario(f"put @{inflight}", (f"put_{inflight}",), run)


def range_throughput(serializable: bool) -> Scenario:
    key = "range_serializable_64" if serializable else "range_linearizable_64"

    async def run(stack: Stack, scale: Scale, warm: bool) -> Result:
        chans = channels(stack.endpoints, 2)
        try:
            await asyncio.gather(*(c.channel_ready() for c in chans))
            stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]
            await asyncio.gather(
                *(
                    stubs[0].Put(rpc_pb2.PutRequest(key=b"r/%d" % i, value=VALUE), timeout=TIMEOUT)
                    for i in range(100)
                )
            )

            def op(w: int, k: int) -> Awaitable[object]:
                req = rpc_pb2.RangeRequest(key=b"r/%d" % ((w + k) % 100), serializable=serializable)
                call: Awaitable[object] = stubs[w % len(stubs)].Range(req, timeout=TIMEOUT)
                return call

            win = await closed_loop(op, 64, scale.warmup_window if warm else scale.window)
        finally:
            await close_all(chans)
        return Result({key: win.rate}, win.gen_cpu, win.errors)

    kind = "serializable" if serializable else "linearizable"
    return Scenario(f"range {kind} @64", (key,), run)


async def txn_cas(stack: Stack, scale: Scale, warm: bool) -> Result:
    """Each worker swaps its own key: compare mod_revision, put on success, read on failure."""
    inflight = 64
    chans = channels(stack.endpoints, 2)
    try:
        await asyncio.gather(*(c.channel_ready() for c in chans))
        stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]
        revs = [0] * inflight  # 0: the key does not exist yet (mod_revision 0)

        async def op(w: int, k: int) -> None:
            key = b"cas/%d" % w
            req = rpc_pb2.TxnRequest(
                compare=[
                    rpc_pb2.Compare(
                        result=rpc_pb2.Compare.EQUAL,
                        target=rpc_pb2.Compare.MOD,
                        key=key,
                        mod_revision=revs[w],
                    )
                ],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=VALUE))],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
            )
            r = await stubs[w % len(stubs)].Txn(req, timeout=TIMEOUT)
            if r.succeeded:
                revs[w] = r.header.revision
            else:
                kvs = r.responses[0].response_range.kvs
                revs[w] = kvs[0].mod_revision if kvs else 0

        win = await closed_loop(op, inflight, scale.warmup_window if warm else scale.window)
    finally:
        await close_all(chans)
    return Result({"txn_cas_64": win.rate}, win.gen_cpu, win.errors)


SCENARIOS = [
    Scenario("put sequential", ("put_seq_p50", "put_seq_p99"), put_sequential),
    *[put_throughput(n) for n in INFLIGHTS],
    range_throughput(serializable=False),
    range_throughput(serializable=True),
    Scenario("txn CAS @64", ("txn_cas_64",), txn_cas),
]

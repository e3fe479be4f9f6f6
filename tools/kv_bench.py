"""A quick KV load generator (a stopgap until `make bench`, issue 10).

    .venv/bin/python tools/kv_bench.py 127.0.0.1:2379,127.0.0.1:2381,127.0.0.1:2383

Runs Put and linearizable Range at 1 and 64 requests in
flight for 4 s each against any etcd v3 endpoints (Synod or etcd), and prints
ops/s and latency p50/p99. The load generator is Python too and shares the
machine, so quote ratios measured in one run, not absolute numbers.
"""

from __future__ import annotations

import asyncio
import sys
import time

import grpc

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc


async def run(endpoints: list[str], inflight: int, seconds: float, kind: str) -> None:
    chans = [grpc.aio.insecure_channel(e) for e in endpoints]
    stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]
    n = 0
    stop = time.monotonic() + seconds
    lat: list[float] = []

    async def worker(i: int) -> None:
        nonlocal n
        s = stubs[i % len(stubs)]
        k = 0
        while time.monotonic() < stop:
            t = time.perf_counter()
            if kind == "put":
                await s.Put(rpc_pb2.PutRequest(key=b"b/%d/%d" % (i, k % 100), value=b"x" * 100))
            else:
                await s.Range(rpc_pb2.RangeRequest(key=b"b/%d/0" % i))
            lat.append(time.perf_counter() - t)
            n += 1
            k += 1

    await asyncio.gather(*[worker(i) for i in range(inflight)])
    lat.sort()
    p50, p99 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000
    print(f"{kind} inflight={inflight} ops/s={n / seconds:.0f} p50={p50:.2f}ms p99={p99:.2f}ms")
    for c in chans:
        await c.close(None)


def main() -> None:
    eps = sys.argv[1].split(",")
    for kind in ("put", "range"):
        for inflight in (1, 64):
            asyncio.run(run(eps if inflight > 1 else eps[:1], inflight, 4, kind))


if __name__ == "__main__":
    main()

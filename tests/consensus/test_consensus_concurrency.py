"""Many requests in flight at once: the batching paths of the node (group commit,
one ReadIndex in flight per member, applying while the next batch is written)
must keep every answer linearizable and answer every request."""

from __future__ import annotations

import asyncio

import grpc
from cluster_harness import LocalCluster

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

WRITERS = 4
READERS = 48
WRITES_EACH = 60


async def _run(endpoints: list[str]) -> tuple[int, int, list[str]]:
    chans = [grpc.aio.insecure_channel(e) for e in endpoints]
    kvs = [rpc_pb2_grpc.KVStub(c) for c in chans]
    #: per key, the highest value whose Put was acknowledged
    acked = [0] * WRITERS
    done = asyncio.Event()
    problems: list[str] = []
    reads = 0

    async def writer(w: int) -> None:
        key = b"conc/%d" % w
        for v in range(1, WRITES_EACH + 1):
            kv = kvs[(w + v) % len(kvs)]  # through the leader and through followers
            await kv.Put(rpc_pb2.PutRequest(key=key, value=b"%d" % v), timeout=20)
            acked[w] = v

    async def reader(r: int) -> None:
        nonlocal reads
        kv = kvs[r % len(kvs)]
        i = 0
        while not done.is_set():
            w = (r + i) % WRITERS
            floor = acked[w]  # acknowledged before this read began
            resp = await kv.Range(rpc_pb2.RangeRequest(key=b"conc/%d" % w), timeout=20)
            seen = int(resp.kvs[0].value) if resp.kvs else 0
            if seen < floor:
                problems.append(
                    f"reader {r} on {endpoints[r % len(kvs)]} saw conc/{w}={seen} after "
                    f"{floor} was acknowledged"
                )
            reads += 1
            i += 1

    readers = [asyncio.create_task(reader(r)) for r in range(READERS)]
    try:
        await asyncio.gather(*[writer(w) for w in range(WRITERS)])
    finally:
        done.set()
        await asyncio.gather(*readers)
        for c in chans:
            await c.close(None)
    return sum(acked), reads, problems


def test_concurrent_reads_and_writes_on_every_member_stay_linearizable(
    cluster: LocalCluster,
) -> None:
    writes, reads, problems = asyncio.run(_run([m.endpoint for m in cluster.members]))
    assert problems == []
    assert writes == WRITERS * WRITES_EACH
    assert reads >= READERS  # every reader was answered at least once
    # Every member applied every write: a linearizable read anywhere sees the last.
    for m in cluster.members:
        for w in range(WRITERS):
            r = m.kv().Range(rpc_pb2.RangeRequest(key=b"conc/%d" % w), timeout=10)
            assert r.kvs[0].value == b"%d" % WRITES_EACH

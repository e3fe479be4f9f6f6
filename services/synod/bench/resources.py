"""Resources: peak RSS of each member (VmHWM from /proc), and bytes on disk per 100k keys.

Disk: the members' data directories are measured (allocated blocks, as `du`)
before and after writing `Scale.disk_keys` new keys of 100-byte values, in
transactions of 100 puts; the growth per member is scaled to 100k keys. Files
that are preallocated (etcd's 64 MB WAL segments) count in full once they
exist, so a run that opens a new segment shows a step: read it with the
per-member numbers in the JSON.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from synod.bench import procstat
from synod.bench.clusters import Stack
from synod.bench.loadgen import channels, close_all, closed_loop
from synod.bench.scenario import Result, Scale, Scenario
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

MIB = 1024 * 1024
PER_TXN = 100  # etcd's default --max-txn-ops is 128


async def peak_rss(stack: Stack, scale: Scale, warm: bool) -> Result:
    per_proc = {p.name: procstat.peak_rss_bytes(p.pid) for p in stack.procs}
    members = [per_proc[m.name] for m in stack.members]
    return Result({"peak_rss": max(members) / MIB}, extra={"peak_rss_bytes": per_proc})


async def disk_per_keys(stack: Stack, scale: Scale, warm: bool) -> Result:
    dirs = {m.name: m.data_dir for m in stack.members if m.data_dir is not None}
    before = {n: procstat.dir_bytes(d) for n, d in dirs.items()}
    chans = channels(stack.endpoints)
    txns = max(1, scale.disk_keys // PER_TXN)
    try:
        await asyncio.gather(*(c.channel_ready() for c in chans))
        stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]
        value = b"d" * 100

        def op(w: int, k: int) -> Awaitable[object]:
            base = (k * 16 + w) * PER_TXN
            ops = [
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(key=b"disk/%09d" % (base + j), value=value)
                )
                for j in range(PER_TXN)
            ]
            req = rpc_pb2.TxnRequest(success=ops)
            call: Awaitable[object] = stubs[w % len(stubs)].Txn(req, timeout=30)
            return call

        win = await closed_loop(op, 16, 3600.0, latencies=False, max_ops=txns)
        # Every member has applied (and written) everything: a linearizable read on each.
        for s in stubs:
            await s.Range(rpc_pb2.RangeRequest(key=b"disk/"), timeout=30)
    finally:
        await close_all(chans)
    after = {n: procstat.dir_bytes(d) for n, d in dirs.items()}
    keys = win.ops * PER_TXN
    growth = {n: after[n] - before[n] for n in dirs}
    per_member = sum(growth.values()) / len(growth)
    return Result(
        {"disk_per_100k": per_member / keys * 100_000 / MIB if keys else 0.0},
        win.gen_cpu, win.errors,
        extra={"keys": keys, "growth_bytes_per_member": growth, "after_bytes": after},
    )  # fmt: skip


SCENARIOS = [
    Scenario("peak RSS", ("peak_rss",), peak_rss, warmup=False, repeat=lambda s, r: 1),
    Scenario("disk per 100k keys", ("disk_per_100k",), disk_per_keys, warmup=False,
             repeat=lambda s, r: 1),  # fmt: skip
]

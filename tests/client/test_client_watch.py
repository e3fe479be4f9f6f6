"""Watches over one shared stream: order, prev_kv, replay, compaction, cancel, fragments."""

from __future__ import annotations

import asyncio

import pytest
from etcd_harness import EtcdCluster, wait_for

from synod.client.errors import Compacted
from synod.client.etcd import EtcdClient, Watcher
from synod.etcd.etcdserverpb import rpc_pb2
from synod.etcd.mvccpb import kv_pb2

PUT, DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE


async def collect(w: Watcher, n: int, timeout: float = 10.0) -> list[kv_pb2.Event]:
    """The next `n` events of `w` (fails at the deadline)."""
    events: list[kv_pb2.Event] = []
    async with asyncio.timeout(timeout):
        while len(events) < n:
            resp = await w.get()
            events.extend(resp.events)
    return events


async def test_watch_puts_and_deletes_in_order_with_prev_kv(cluster1: EtcdCluster) -> None:
    async with EtcdClient(cluster1.endpoints) as c:
        async with c.watch("w/", prefix=True, prev_kv=True) as w:
            await c.put("w/a", "1")
            await c.put("w/a", "2")
            await c.put("w/b", "3")
            await c.put("outside", "x")
            await c.delete("w/a")
            evs = await collect(w, 4)
        assert [(e.type, e.kv.key, e.kv.value) for e in evs] == [
            (PUT, b"w/a", b"1"),
            (PUT, b"w/a", b"2"),
            (PUT, b"w/b", b"3"),
            (DELETE, b"w/a", b""),
        ]
        assert [e.prev_kv.value for e in evs] == [b"", b"1", b"", b"2"]
        revs = [e.kv.mod_revision for e in evs]
        assert revs == sorted(revs) and len(set(revs)) == 4
        # Closed: iteration ends.
        with pytest.raises(StopAsyncIteration):
            await w.__anext__()


async def test_watch_from_past_revision_replays(cluster1: EtcdCluster) -> None:
    async with EtcdClient(cluster1.endpoints) as c:
        first = (await c.put("r/k", "0")).header.revision
        for i in range(1, 5):
            await c.put("r/k", str(i))
        async with c.watch("r/k", start_revision=first + 2) as w:
            evs = await collect(w, 3)
            assert [e.kv.value for e in evs] == [b"2", b"3", b"4"]
            await c.put("r/k", "5")
            assert [e.kv.value for e in await collect(w, 1)] == [b"5"]


async def test_watch_filters_and_single_key(cluster1: EtcdCluster) -> None:
    async with EtcdClient(cluster1.endpoints) as c:
        async with c.watch("f", filters=["NOPUT"]) as w:
            await c.put("f", "1")
            await c.put("f2", "x")  # not the watched key
            await c.delete("f")
            evs = await collect(w, 1)
            assert [(e.type, e.kv.key) for e in evs] == [(DELETE, b"f")]


async def test_watch_from_compacted_revision_raises(cluster1: EtcdCluster) -> None:
    async with EtcdClient(cluster1.endpoints) as c:
        first = (await c.put("cw", "0")).header.revision
        last = 0
        for i in range(5):
            last = (await c.put("cw", str(i))).header.revision
        await c.compact(last)
        w = c.watch("cw", start_revision=first)
        with pytest.raises(Compacted) as ei:
            async with w:
                await w.get(timeout=10)
        assert ei.value.compact_revision == last
        assert c.watch_streams_opened == 1
        # The shared stream is still usable for other watches.
        async with c.watch("cw") as w2:
            await c.put("cw", "after")
            assert [e.kv.value for e in await collect(w2, 1)] == [b"after"]


async def test_many_watches_share_one_stream_and_cancel(cluster1: EtcdCluster) -> None:
    m = cluster1.members[0]
    started = m.metric("grpc_server_started_total", grpc_method="Watch")
    async with EtcdClient(cluster1.endpoints) as c:
        watchers = [c.watch(f"m/{i}") for i in range(20)]
        for w in watchers:
            await w.created(timeout=10)
        await wait_for(
            lambda: m.metric("etcd_debugging_mvcc_watcher_total") == 20, 10, "20 server watchers"
        )
        for i in range(20):
            await c.put(f"m/{i}", str(i))
        for i, w in enumerate(watchers):
            evs = await collect(w, 1)
            assert [(e.kv.key, e.kv.value) for e in evs] == [(f"m/{i}".encode(), str(i).encode())]
        assert c.watch_streams_opened == 1
        assert m.metric("grpc_server_started_total", grpc_method="Watch") == started + 1

        # Closing half the watchers sends WatchCancelRequests on the live stream.
        for w in watchers[:10]:
            await w.aclose()
        await wait_for(
            lambda: m.metric("etcd_debugging_mvcc_watcher_total") == 10, 10, "10 cancelled"
        )
        # Cancelling the task consuming a watcher cancels that watch too.
        consumer = asyncio.create_task(watchers[10].__anext__())
        await asyncio.sleep(0)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await wait_for(
            lambda: m.metric("etcd_debugging_mvcc_watcher_total") == 9, 10, "task cancel"
        )
        await c.put("m/15", "again")
        assert [e.kv.value for e in await collect(watchers[15], 1)] == [b"again"]
        assert c.watch_streams_opened == 1


async def test_fragmented_watch_responses_are_reassembled(
    cluster1_small_requests: EtcdCluster,
) -> None:
    async with EtcdClient(cluster1_small_requests.endpoints) as c:
        value = "v" * 60_000
        n = 12
        first = (await c.put("frag/00", value)).header.revision
        for i in range(1, n):
            await c.put(f"frag/{i:02d}", value)
        async with c.watch("frag/", prefix=True, start_revision=first, fragment=True) as w:
            resp = await w.get(timeout=10)
        # 12 x 60 KB events exceed 64 KiB + 512 KiB: the server sent them in
        # fragments; the client hands them over as one response.
        assert isinstance(resp, rpc_pb2.WatchResponse) and not resp.fragment
        assert w.reassembled == 1
        assert [e.kv.key for e in resp.events] == [f"frag/{i:02d}".encode() for i in range(n)]

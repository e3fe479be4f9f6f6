"""WatchHub / WatchStream in process: ordering, catch-up, backpressure, fragments, restore."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from synod.consensus.mvcc import MvccStore
from synod.consensus.watch import (
    COMPACTED_REASON,
    FELL_BEHIND_REASON,
    WatchHub,
    WatchStream,
    decode,
)
from synod.etcd.etcdserverpb import rpc_pb2
from synod.etcd.mvccpb import kv_pb2

T = TypeVar("T")
PUT, DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE


class Fixture:
    """A store the test writes to, with every write's events fed to the hub (as state does)."""

    def __init__(self, **hub_kw: Any) -> None:
        self.state = SimpleNamespace(store=MvccStore())
        self.hub = WatchHub(self.state, self.header, **hub_kw)  # type: ignore[arg-type]

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        rev = self.state.store.revision if revision is None else revision
        return rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=rev, raft_term=3)

    def put(self, key: bytes, value: bytes) -> int:
        _, events = self.state.store.apply_put(rpc_pb2.PutRequest(key=key, value=value))
        self.hub.notify(events)
        return int(self.state.store.revision)

    def delete(self, key: bytes, range_end: bytes = b"") -> int:
        req = rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end)
        _, events = self.state.store.apply_delete_range(req)
        self.hub.notify(events)
        return int(self.state.store.revision)

    def txn_puts(self, pairs: list[tuple[bytes, bytes]]) -> int:
        txn = rpc_pb2.TxnRequest(
            success=[
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=v)) for k, v in pairs
            ]
        )
        _, events = self.state.store.apply_txn(txn)
        self.hub.notify(events)
        return int(self.state.store.revision)


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(fn(), 20))


class Reader:
    """Consumes a stream's responses in the background."""

    def __init__(self, stream: WatchStream) -> None:
        self.stream = stream
        self.got: list[rpc_pb2.WatchResponse] = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for r in self.stream.responses():
            self.got.append(decode(r))

    async def until(self, pred: Callable[[list[rpc_pb2.WatchResponse]], bool]) -> None:
        for _ in range(2000):
            if pred(self.got):
                return
            await asyncio.sleep(0.001)
        raise AssertionError(f"condition never held; got {self.got}")

    def events(self, wid: int) -> list[kv_pb2.Event]:
        return [e for r in self.got if r.watch_id == wid for e in r.events]

    async def stop(self) -> None:
        self.stream.close()
        await asyncio.wait_for(self.task, 5)


def create(**kw: Any) -> rpc_pb2.WatchCreateRequest:
    return rpc_pb2.WatchCreateRequest(**kw)


def summary(evs: list[kv_pb2.Event]) -> list[tuple[int, int, bytes, bytes]]:
    return [(e.kv.mod_revision, e.type, e.kv.key, e.kv.value) for e in evs]


def test_exact_prefix_all_keys_prev_kv_and_filters() -> None:
    async def go() -> None:
        f = Fixture()
        s = f.hub.open_stream()
        rd = Reader(s)
        w_exact = s.create(create(key=b"a", prev_kv=True))
        w_prefix = s.create(create(key=b"p/", range_end=b"p0"))
        w_all = s.create(create(key=b"", range_end=b"\x00"))
        w_noput = s.create(create(key=b"a", filters=[rpc_pb2.WatchCreateRequest.NOPUT]))
        w_nodel = s.create(create(key=b"p/", range_end=b"p0", filters=[1]))
        assert [w_exact, w_prefix, w_all, w_noput, w_nodel] == [0, 1, 2, 3, 4]
        f.put(b"a", b"1")
        f.put(b"a", b"2")
        f.put(b"p/x", b"3")
        f.put(b"q", b"4")
        f.delete(b"a")
        f.delete(b"p/x")
        await rd.until(lambda g: len(rd.events(w_all)) == 6)
        created = [r for r in rd.got if r.created]
        assert [r.watch_id for r in created] == [0, 1, 2, 3, 4]
        ex = rd.events(w_exact)
        assert summary(ex) == [(2, PUT, b"a", b"1"), (3, PUT, b"a", b"2"), (6, DELETE, b"a", b"")]
        assert not ex[0].HasField("prev_kv") and ex[1].prev_kv.value == b"1"
        assert ex[2].prev_kv.value == b"2"
        assert [e.kv.key for e in rd.events(w_prefix)] == [b"p/x", b"p/x"]
        assert all(not e.HasField("prev_kv") for e in rd.events(w_all))
        assert summary(rd.events(w_noput)) == [(6, DELETE, b"a", b"")]
        assert [e.type for e in rd.events(w_nodel)] == [PUT]
        # header revision is the event's revision
        for r in rd.got:
            if r.events:
                assert r.header.revision == r.events[-1].kv.mod_revision
        await rd.stop()
        assert not f.hub._exact and not f.hub._ranges

    run(go)


def test_one_revision_is_one_response_and_ids_duplicates_and_empty_range() -> None:
    async def go() -> None:
        f = Fixture()
        s = f.hub.open_stream()
        rd = Reader(s)
        w = s.create(create(key=b"t", range_end=b"u", watch_id=7))
        assert w == 7
        assert s.create(create(key=b"x", watch_id=7)) == -1
        assert s.create(create(key=b"b", range_end=b"a")) == -1
        auto = s.create(create(key=b"x"))
        assert auto == 0
        rev = f.txn_puts([(b"t1", b"a"), (b"t2", b"b"), (b"zz", b"c")])
        await rd.until(lambda g: any(r.events for r in g))
        ev_resps = [r for r in rd.got if r.events]
        assert len(ev_resps) == 1 and ev_resps[0].header.revision == rev
        assert [e.kv.key for e in ev_resps[0].events] == [b"t1", b"t2"]
        dup, empty = [r for r in rd.got if r.canceled]
        assert dup.created and dup.watch_id == -1 and "duplicate" in dup.cancel_reason
        assert empty.created and "range is empty" in empty.cancel_reason
        assert s.cancel(7) and not s.cancel(7)
        f.put(b"t3", b"x")
        await rd.until(lambda g: g[-1].canceled and g[-1].watch_id == 7)
        await asyncio.sleep(0.01)
        assert not rd.got[-1].events
        await rd.stop()

    run(go)


def test_past_start_replays_then_continues_without_gap_or_duplicate() -> None:
    async def go() -> None:
        f = Fixture()
        for i in range(50):
            f.put(b"k%d" % (i % 5), b"v%d" % i)
        s = f.hub.open_stream()
        rd = Reader(s)
        wid = s.create(create(key=b"k", range_end=b"l", start_revision=10))
        for i in range(50, 80):
            f.put(b"k%d" % (i % 5), b"v%d" % i)
            if i % 7 == 0:
                await asyncio.sleep(0)
        await rd.until(lambda g: len(rd.events(wid)) == 80 - 8)
        revs = [e.kv.mod_revision for e in rd.events(wid)]
        assert revs == list(range(10, 82))
        # start 0 = from now; a future start revision waits for it
        w_now = s.create(create(key=b"k0"))
        w_future = s.create(create(key=b"k0", start_revision=f.state.store.revision + 3))
        for i in range(5):
            f.put(b"k0", b"n%d" % i)
        await rd.until(lambda g: len(rd.events(w_now)) == 5 and len(rd.events(w_future)) == 3)
        await rd.stop()

    run(go)


def test_compacted_start_is_created_then_canceled_with_compact_revision() -> None:
    async def go() -> None:
        f = Fixture()
        for i in range(10):
            f.put(b"c", b"%d" % i)
        f.state.store.compact(8)
        s = f.hub.open_stream()
        rd = Reader(s)
        wid = s.create(create(key=b"c", start_revision=3))
        await rd.until(lambda g: len(g) == 2)
        assert rd.got[0].created and rd.got[0].watch_id == wid and not rd.got[0].canceled
        assert rd.got[1].canceled and rd.got[1].compact_revision == 8
        assert rd.got[1].cancel_reason == COMPACTED_REASON
        assert not s.watchers
        # from the compacted revision itself: fine
        w2 = s.create(create(key=b"c", start_revision=8))
        await rd.until(lambda g: len(rd.events(w2)) == 4)
        await rd.stop()

    run(go)


def test_slow_stream_goes_unsynced_and_catches_up_without_blocking_others() -> None:
    async def go() -> None:
        f = Fixture(max_pending=16)
        slow = f.hub.open_stream()
        fast = f.hub.open_stream()
        rd_fast = Reader(fast)
        w_slow = slow.create(create(key=b"s/", range_end=b"s0", prev_kv=True))
        w_fast = fast.create(create(key=b"s/", range_end=b"s0"))
        for i in range(500):
            f.put(b"s/%d" % (i % 13), b"%d" % i)
        # notify never blocked: both streams stopped queueing at the bound and went
        # unsynced (neither reader ran during these synchronous writes)
        assert slow.pending <= 17 and fast.pending <= 17
        assert slow.watchers[w_slow] in slow.unsynced
        await rd_fast.until(lambda g: len(rd_fast.events(w_fast)) == 500)
        rd_slow = Reader(slow)
        for i in range(500, 600):
            f.put(b"s/%d" % (i % 13), b"%d" % i)
            if i % 10 == 0:
                await asyncio.sleep(0)
        await rd_slow.until(lambda g: len(rd_slow.events(w_slow)) == 600)
        evs = rd_slow.events(w_slow)
        assert [e.kv.mod_revision for e in evs] == list(range(2, 602))
        assert [e.kv.value for e in evs] == [b"%d" % i for i in range(600)]
        assert all(e.prev_kv.value == b"%d" % (i - 13) for i, e in enumerate(evs) if i >= 13)
        assert slow.watchers[w_slow].synced
        await rd_fast.stop()
        await rd_slow.stop()

    run(go)


def test_slow_watcher_whose_revisions_were_compacted_is_canceled() -> None:
    async def go() -> None:
        f = Fixture(max_pending=8)
        s = f.hub.open_stream()
        wid = s.create(create(key=b"k"))
        for i in range(40):
            f.put(b"k", b"%d" % i)
        f.state.store.compact(30)
        rd = Reader(s)
        await rd.until(lambda g: bool(g) and g[-1].canceled)
        last = rd.got[-1]
        assert last.watch_id == wid and last.compact_revision == 30
        assert last.cancel_reason == FELL_BEHIND_REASON
        revs = [e.kv.mod_revision for e in rd.events(wid)]
        assert revs == list(range(2, 2 + len(revs)))  # a prefix without gaps
        await rd.stop()

    run(go)


def test_fragments_split_large_revisions() -> None:
    async def go() -> None:
        f = Fixture(max_response_bytes=1000)
        s = f.hub.open_stream()
        rd = Reader(s)
        w_frag = s.create(create(key=b"f", range_end=b"g", fragment=True))
        w_whole = s.create(create(key=b"f", range_end=b"g"))
        f.txn_puts([(b"f%02d" % i, b"x" * 100) for i in range(30)])
        await rd.until(lambda g: len(rd.events(w_frag)) == 30 and len(rd.events(w_whole)) == 30)
        frags = [r for r in rd.got if r.watch_id == w_frag and r.events]
        assert len(frags) > 3
        assert all(r.fragment for r in frags[:-1]) and not frags[-1].fragment
        assert all(r.ByteSize() < 1000 for r in frags)
        assert [e.kv.key for e in rd.events(w_frag)] == [b"f%02d" % i for i in range(30)]
        assert len([r for r in rd.got if r.watch_id == w_whole and r.events]) == 1
        await rd.stop()

    run(go)


def test_progress_request_waits_for_sync_and_progress_notify_ticks() -> None:
    async def go() -> None:
        f = Fixture(max_pending=4, progress_interval=0.05)
        for i in range(30):
            f.put(b"p", b"%d" % i)
        s = f.hub.open_stream()
        wid = s.create(create(key=b"p", start_revision=1, progress_notify=True))
        s.request_progress()  # unsynced: deferred
        rd = Reader(s)
        await rd.until(lambda g: any(r.watch_id == -1 for r in g))
        prog = next(i for i, r in enumerate(rd.got) if r.watch_id == -1)
        assert len([e for r in rd.got[:prog] for e in r.events]) == 30
        assert rd.got[prog].header.revision == 31 and not rd.got[prog].events
        # idle and synced: periodic empty responses for the watcher
        await rd.until(lambda g: len([r for r in g if r.watch_id == wid and not r.events]) >= 3)
        s.request_progress()
        await rd.until(lambda g: len([r for r in g if r.watch_id == -1]) == 2)
        await rd.stop()

    run(go)


def test_restore_continues_from_the_new_store_and_cancels_compacted() -> None:
    async def go() -> None:
        f = Fixture()
        f.put(b"r", b"0")
        s = f.hub.open_stream()
        rd = Reader(s)
        w_ok = s.create(create(key=b"r"))
        w_gone = s.create(create(key=b"g"))
        # The leader's store went further (and compacted) while we were away.
        ahead = MvccStore.from_bytes(f.state.store.to_bytes())
        for i in range(1, 6):
            ahead.apply_put(rpc_pb2.PutRequest(key=b"r", value=b"%d" % i))
        f.state.store = ahead
        f.hub.on_restore()
        await rd.until(lambda g: len(rd.events(w_ok)) == 5)
        assert [e.kv.mod_revision for e in rd.events(w_ok)] == [3, 4, 5, 6, 7]
        f.put(b"r", b"6")
        await rd.until(lambda g: len(rd.events(w_ok)) == 6)
        # a snapshot compacted past a watcher's next revision
        ahead2 = MvccStore.from_bytes(f.state.store.to_bytes())
        for i in range(5):
            ahead2.apply_put(rpc_pb2.PutRequest(key=b"g", value=b"%d" % i))
        ahead2.compact(ahead2.revision - 1)
        f.state.store = ahead2
        f.hub.on_restore()
        await rd.until(lambda g: any(r.canceled for r in g))
        canceled = [r for r in rd.got if r.canceled]
        assert {r.watch_id for r in canceled} == {w_ok, w_gone}
        assert all(r.compact_revision == ahead2.revision - 1 for r in canceled)
        await rd.stop()

    run(go)


def test_stream_close_cleans_every_watcher_and_notify_is_cheap() -> None:
    f = Fixture()

    async def go() -> None:
        streams = [f.hub.open_stream() for _ in range(5)]
        for s in streams:
            for i in range(20):
                s.create(create(key=b"k%d" % i))
            s.create(create(key=b"a", range_end=b"z"))
        assert f.hub.watcher_count() == 105
        for s in streams:
            s.close()
        assert f.hub.watcher_count() == 0 and not f.hub._exact and not f.hub._ranges
        f.put(b"k1", b"x")

    run(go)


@pytest.mark.parametrize("env", ["0.25"])
def test_progress_interval_from_environment(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv("SYNOD_WATCH_PROGRESS_INTERVAL", env)
    assert Fixture().hub.progress_interval == 0.25
    monkeypatch.delenv("SYNOD_WATCH_PROGRESS_INTERVAL")
    assert Fixture().hub.progress_interval == 600.0
    assert Fixture(progress_interval=2.0).hub.progress_interval == 2.0


def test_preencoded_live_responses_decode_to_the_expected_messages() -> None:
    async def go() -> None:
        f = Fixture()
        s = f.hub.open_stream()
        ids = [
            s.create(create(key=b"e", range_end=b"f", prev_kv=prev, watch_id=wid))
            for prev, wid in ((False, 0), (True, 300), (False, 2**40))
        ]
        got: list[Any] = []

        async def read() -> None:
            async for r in s.responses():
                got.append(r)

        task = asyncio.ensure_future(read())
        big = b"v" * 70000  # lengths that need multi-byte varints
        f.put(b"e1", b"a")
        f.put(b"e1", big)
        f.txn_puts([(b"e1", b"c"), (b"e2", big)])
        f.delete(b"e", b"f")
        while len([r for r in got if isinstance(r, bytes)]) < 12:
            await asyncio.sleep(0.001)
        live = [decode(r) for r in got if isinstance(r, bytes)]
        # the same history, built as messages from the store
        hist = f.state.store.events_since(2, b"e", b"f")
        for wid, prev in zip(ids, (False, True, False), strict=True):
            mine = [r for r in live if r.watch_id == wid]
            assert len(mine) == 4
            flat = [e for r in mine for e in r.events]
            want = []
            for e in hist:
                c = kv_pb2.Event()
                c.CopyFrom(e)
                if not prev:
                    c.ClearField("prev_kv")
                want.append(c)
            assert flat == want
            for r in mine:
                assert r.header == f.header(r.events[0].kv.mod_revision)
        s.close()
        await task

    run(go)

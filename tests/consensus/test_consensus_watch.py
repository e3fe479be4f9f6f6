"""etcdserverpb.Watch against real member processes (raw gRPC stubs, and the real etcdctl)."""

from __future__ import annotations

import os
import queue
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cluster_harness import LocalCluster, MemberProc
from waits import wait_until

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.etcd.mvccpb import kv_pb2

PUT, DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE
PREFIX, PREFIX_END = b"/load/", b"/load0"


class WatchClient:
    """One Watch stream on one member, driven from the test thread."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self._requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        self._responses: queue.Queue[rpc_pb2.WatchResponse | grpc.RpcError] = queue.Queue()
        self.call = rpc_pb2_grpc.WatchStub(self.channel).Watch(self._gen())
        threading.Thread(target=self._read, daemon=True).start()

    def _gen(self) -> Iterator[rpc_pb2.WatchRequest]:
        while True:
            r = self._requests.get()
            if r is None:
                return
            yield r

    def _read(self) -> None:
        try:
            for resp in self.call:
                self._responses.put(resp)
        except grpc.RpcError as e:
            self._responses.put(e)

    def send(self, req: rpc_pb2.WatchRequest) -> None:
        self._requests.put(req)

    def next(self, timeout: float = 10.0) -> rpc_pb2.WatchResponse:
        r = self._responses.get(timeout=timeout)
        if isinstance(r, grpc.RpcError):
            raise r
        return r

    def create(self, key: bytes, **kw: Any) -> rpc_pb2.WatchResponse:
        self.send(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, **kw)))
        r = self.next()
        assert r.created, r
        return r

    def events(self, n: int, timeout: float = 10.0) -> list[kv_pb2.Event]:
        """The next `n` events (of any watch on the stream)."""
        out: list[kv_pb2.Event] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            r = self.next(max(0.01, deadline - time.monotonic()))
            assert not r.canceled, r
            out.extend(r.events)
        return out

    def quiet(self, seconds: float = 0.3) -> None:
        """Nothing more arrives for a while."""
        with pytest.raises(queue.Empty):
            self._responses.get(timeout=seconds)

    def close(self) -> None:
        self.call.cancel()
        self._requests.put(None)
        self.channel.close()


def kv(m: MemberProc) -> rpc_pb2_grpc.KVStub:
    return rpc_pb2_grpc.KVStub(m.channel())


def revision_of(m: MemberProc) -> int:
    """The store revision `m` has applied (a serializable read: no ReadIndex)."""
    with m.channel() as ch:
        r = rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=b"\0", serializable=True), timeout=5
        )
    return int(r.header.revision)


def put(m: MemberProc, key: bytes, value: bytes) -> int:
    with m.channel() as ch:
        r = rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=value), timeout=5)
    return int(r.header.revision)


def delete(m: MemberProc, key: bytes, range_end: bytes = b"") -> int:
    with m.channel() as ch:
        r = rpc_pb2_grpc.KVStub(ch).DeleteRange(
            rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end), timeout=5
        )
    return int(r.header.revision)


def summary(evs: list[kv_pb2.Event]) -> list[tuple[int, bytes, bytes]]:
    return [(e.type, e.kv.key, e.kv.value) for e in evs]


@pytest.fixture
def w(cluster: LocalCluster) -> Iterator[WatchClient]:
    c = WatchClient(cluster.members[0].endpoint)
    yield c
    c.close()


def test_puts_and_deletes_in_order_with_prev_kv(cluster: LocalCluster, w: WatchClient) -> None:
    m = cluster.members[1]
    created = w.create(b"foo", prev_kv=True)
    assert created.watch_id == 0 and created.header.cluster_id and created.header.member_id
    r1 = put(m, b"foo", b"1")
    r2 = put(m, b"foo", b"2")
    put(m, b"other", b"x")
    r3 = delete(m, b"foo")
    evs = w.events(3)
    assert summary(evs) == [(PUT, b"foo", b"1"), (PUT, b"foo", b"2"), (DELETE, b"foo", b"")]
    assert [e.kv.mod_revision for e in evs] == [r1, r2, r3]
    assert not evs[0].HasField("prev_kv")
    assert evs[1].prev_kv.value == b"1" and evs[2].prev_kv.value == b"2"
    assert evs[2].prev_kv.mod_revision == r2
    w.quiet()


def test_prefix_watch_and_filters(cluster: LocalCluster, w: WatchClient) -> None:
    m = cluster.members[2]
    all_id = w.create(b"p/", range_end=b"p0").watch_id
    noput = w.create(b"p/", range_end=b"p0", filters=[rpc_pb2.WatchCreateRequest.NOPUT]).watch_id
    nodel = w.create(b"p/", range_end=b"p0", filters=[rpc_pb2.WatchCreateRequest.NODELETE])
    from_key = w.create(b"p/b", range_end=b"\x00").watch_id
    put(m, b"p/a", b"1")
    put(m, b"p/b", b"2")
    put(m, b"q", b"3")  # outside the prefix but >= p/b
    delete(m, b"p/", b"p0")
    got: dict[int, list[tuple[int, bytes, bytes]]] = {}
    deadline = time.monotonic() + 10
    while sum(len(v) for v in got.values()) < 4 + 2 + 2 + 3:
        r = w.next(max(0.01, deadline - time.monotonic()))
        got.setdefault(r.watch_id, []).extend(summary(list(r.events)))
    assert got[all_id] == [
        (PUT, b"p/a", b"1"),
        (PUT, b"p/b", b"2"),
        (DELETE, b"p/a", b""),
        (DELETE, b"p/b", b""),
    ]
    assert got[noput] == [(DELETE, b"p/a", b""), (DELETE, b"p/b", b"")]
    assert got[nodel.watch_id] == [(PUT, b"p/a", b"1"), (PUT, b"p/b", b"2")]
    assert got[from_key] == [(PUT, b"p/b", b"2"), (PUT, b"q", b"3"), (DELETE, b"p/b", b"")]
    w.quiet()


def test_many_watches_on_one_stream_and_one_revision_in_one_response(
    cluster: LocalCluster, w: WatchClient
) -> None:
    m = cluster.members[1]
    ids = [w.create(b"many/%02d" % i).watch_id for i in range(40)]
    assert ids == list(range(40))
    chosen = w.create(b"many/x", watch_id=1000)
    assert chosen.watch_id == 1000 and not chosen.canceled
    dup = w.create(b"many/y", watch_id=1000)
    assert dup.canceled and dup.cancel_reason
    for i in reversed(range(40)):
        put(m, b"many/%02d" % i, b"v%d" % i)
    seen = {}
    for _ in range(40):
        r = w.next()
        assert len(r.events) == 1 and r.header.revision == r.events[0].kv.mod_revision
        seen[r.watch_id] = r.events[0].kv.key
    assert seen == {i: b"many/%02d" % i for i in range(40)}
    # a transaction touching several watched keys: one response per watch, all its events
    ops = [
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"many/x%d" % i, value=b"t"))
        for i in range(3)
    ]
    with m.channel() as ch:
        txn = rpc_pb2_grpc.KVStub(ch).Txn(rpc_pb2.TxnRequest(success=ops), timeout=5)
    # The watch's member applies the transaction a moment after the member that
    # answered it (a follower hears of commits within --commit-broadcast-delay).
    watcher = cluster.members[0]
    wait_until(
        lambda: revision_of(watcher) >= txn.header.revision, 10, "the watcher's member to apply"
    )
    rng = w.create(b"many/x", range_end=b"many/y")
    assert rng.header.revision == txn.header.revision
    with m.channel() as ch:
        txn = rpc_pb2_grpc.KVStub(ch).Txn(rpc_pb2.TxnRequest(success=ops), timeout=5)
    r = w.next()
    assert r.watch_id == rng.watch_id and len(r.events) == 3
    assert r.header.revision == txn.header.revision
    w.quiet()


def test_watch_from_a_past_revision_replays_then_continues(
    cluster: LocalCluster, w: WatchClient
) -> None:
    m = cluster.members[0]
    revs = [put(m, b"h/%d" % (i % 3), b"%d" % i) for i in range(30)]
    start = revs[10]
    w.create(b"h/", range_end=b"h0", start_revision=start)
    later = []
    for i in range(30, 40):
        later.append(put(cluster.members[i % 3], b"h/%d" % (i % 3), b"%d" % i))
    evs = w.events(30)
    assert [e.kv.mod_revision for e in evs] == revs[10:] + later
    assert [e.kv.value for e in evs] == [b"%d" % i for i in range(10, 40)]
    w.quiet()


def test_watch_from_a_compacted_revision_is_canceled(cluster: LocalCluster, w: WatchClient) -> None:
    m = cluster.members[0]
    revs = [put(m, b"c", b"%d" % i) for i in range(6)]
    with m.channel() as ch:
        rpc_pb2_grpc.KVStub(ch).Compact(rpc_pb2.CompactionRequest(revision=revs[4]), timeout=5)
    created = w.create(b"c", start_revision=revs[1])
    assert not created.canceled
    r = w.next()
    assert r.watch_id == created.watch_id and r.canceled and r.compact_revision == revs[4]
    # the compacted revision itself still works
    w.create(b"c", start_revision=revs[4])
    assert [e.kv.value for e in w.events(2)] == [b"4", b"5"]


def test_cancel_and_progress_request(cluster: LocalCluster, w: WatchClient) -> None:
    m = cluster.members[2]
    a = w.create(b"a").watch_id
    b = w.create(b"b").watch_id
    w.send(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=a)))
    r = w.next()
    assert r.canceled and r.watch_id == a
    put(m, b"a", b"1")
    rev = put(m, b"b", b"1")
    r = w.next()
    assert r.watch_id == b and r.events[0].kv.key == b"b"
    # progress: one stream-level response at the current revision, no events
    w.send(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
    r = w.next()
    assert r.watch_id == -1 and not r.events and not r.created and not r.canceled
    assert r.header.revision >= rev
    w.quiet()


def test_progress_notify_for_idle_watchers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNOD_WATCH_PROGRESS_INTERVAL", "0.3")
    c = LocalCluster(tmp_path, size=1, extra_args=["--unsafe-no-fsync"])
    try:
        c.start()
        w = WatchClient(c.members[0].endpoint)
        wid = w.create(b"idle", progress_notify=True).watch_id
        plain = w.create(b"idle2").watch_id
        rev = put(c.members[0], b"x", b"1")
        for _ in range(2):
            r = w.next(5)
            assert r.watch_id == wid and not r.events and r.header.revision == rev
        assert plain != wid
        w.close()
    finally:
        c.stop()


# -- many writers, many watchers, a leader killed ------------------------------------


class Writer(threading.Thread):
    """Writes (puts, deletes, two-key txns) under PREFIX; records what was acknowledged."""

    def __init__(self, cluster: LocalCluster, n: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.cluster, self.n, self.stop = cluster, n, stop
        self.rng = random.Random(n)
        #: (revision, type, key, value) of every acknowledged change
        self.acked: list[tuple[int, int, bytes, bytes]] = []

    def run(self) -> None:
        channels = {m.name: m.channel() for m in self.cluster.members}
        i = 0
        while not self.stop.is_set():
            m = self.rng.choice([m for m in self.cluster.members if m.alive()])
            stub = rpc_pb2_grpc.KVStub(channels[m.name])
            key = PREFIX + b"%02d/%d" % (self.n, i % 4)
            value = b"%d-%d" % (self.n, i)
            try:
                if i % 9 == 8:
                    r = stub.DeleteRange(rpc_pb2.DeleteRangeRequest(key=key), timeout=2)
                    if r.deleted:
                        self.acked.append((r.header.revision, DELETE, key, b""))
                elif i % 5 == 4:
                    k2 = PREFIX + b"%02d/t" % self.n
                    ops = [
                        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=value))
                        for k in (key, k2)
                    ]
                    t = stub.Txn(rpc_pb2.TxnRequest(success=ops), timeout=2)
                    self.acked.append((t.header.revision, PUT, key, value))
                    self.acked.append((t.header.revision, PUT, k2, value))
                else:
                    p = stub.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=2)
                    self.acked.append((p.header.revision, PUT, key, value))
            except grpc.RpcError:
                time.sleep(0.02)
            i += 1
        for ch in channels.values():
            ch.close()


class Watcher(threading.Thread):
    """Watches PREFIX and, when its member goes away, resumes elsewhere from last + 1."""

    def __init__(self, cluster: LocalCluster, n: int, start_rev: int, done: threading.Event):
        super().__init__(daemon=True)
        self.cluster, self.n, self.done = cluster, n, done
        self.next_rev = start_rev
        self.events: list[tuple[int, int, bytes, bytes]] = []
        self.reconnects = 0
        self.error: str | None = None

    def run(self) -> None:
        members = self.cluster.members
        i = self.n
        while not self.done.is_set():
            m = members[i % len(members)]
            i += 1
            if not m.alive():
                continue
            client = WatchClient(m.endpoint)
            try:
                client.create(PREFIX, range_end=PREFIX_END, start_revision=self.next_rev)
                while not self.done.is_set():
                    try:
                        r = client.next(0.2)
                    except queue.Empty:
                        continue
                    if r.canceled:
                        self.error = f"canceled: {r}"
                        return
                    for e in r.events:
                        self.events.append((e.kv.mod_revision, e.type, e.kv.key, e.kv.value))
                    if r.events:
                        self.next_rev = r.events[-1].kv.mod_revision + 1
            except grpc.RpcError:
                self.reconnects += 1
                time.sleep(0.05)
            finally:
                client.close()


def test_concurrent_writers_and_watchers_across_a_leader_kill(cluster: LocalCluster) -> None:
    c = cluster
    start_rev = put(c.members[0], b"before", b"x") + 1
    stop, done = threading.Event(), threading.Event()
    watchers = [Watcher(c, n, start_rev, done) for n in range(10)]
    for wt in watchers:
        wt.start()
    time.sleep(0.5)  # the watches are established (those that are not replay anyway)
    writers = [Writer(c, n, stop) for n in range(20)]
    for wr in writers:
        wr.start()
    c.wait(lambda: sum(len(wr.acked) for wr in writers) >= 300, 30, "300 acknowledged writes")
    leader = c.leader()
    c.kill(leader, signal.SIGKILL)
    survivors = [m for m in c.members if m is not leader]
    before = sum(len(wr.acked) for wr in writers)
    c.wait(
        lambda: sum(len(wr.acked) for wr in writers) >= before + 300,
        30,
        "300 more acknowledged writes after the leader was killed",
    )
    stop.set()
    for wr in writers:
        wr.join(10)
    end_rev = put(survivors[0], PREFIX + b"~end", b"end")
    with survivors[1].channel() as ch:
        final = rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=PREFIX, range_end=PREFIX_END), timeout=5
        )
    assert final.header.revision == end_rev
    c.wait(
        lambda: all(wt.next_rev > end_rev or wt.error for wt in watchers),
        30,
        "every watcher to see the last write",
    )
    done.set()
    for wt in watchers:
        wt.join(10)

    acked = sorted(x for wr in writers for x in wr.acked)
    expected_state = {kv.key: (kv.value, kv.mod_revision) for kv in final.kvs}
    for wt in watchers:
        assert wt.error is None, wt.error
        evs = wt.events
        revs = [e[0] for e in evs]
        assert revs == sorted(revs), f"watcher {wt.n}: out of order"
        assert len(set(evs)) == len(evs), f"watcher {wt.n}: duplicates"
        # no gaps: only this test writes, so every revision from start to end is there
        assert sorted(set(revs)) == list(range(start_rev, end_rev + 1)), f"watcher {wt.n}: gap"
        missing = set(acked) - set(evs)
        assert not missing, f"watcher {wt.n} missed {len(missing)}: {sorted(missing)[:3]}"
        state: dict[bytes, tuple[bytes, int]] = {}
        for rev, typ, key, value in evs:
            if typ == PUT:
                state[key] = (value, rev)
            else:
                state.pop(key, None)
        assert state == expected_state, f"watcher {wt.n}: replay differs from the final Range"
    assert sum(wt.reconnects for wt in watchers) >= 1  # some were on the killed leader
    assert all(wt.events == watchers[0].events for wt in watchers)


# -- the real etcdctl ------------------------------------------------------------------

needs_etcdctl = pytest.mark.skipif(shutil.which("etcdctl") is None, reason="no etcdctl")


class EtcdctlWatch:
    """`etcdctl watch ...` in the background; its stdout lines collected by a thread."""

    def __init__(self, cluster: LocalCluster, *args: str) -> None:
        env = dict(os.environ, ETCDCTL_API="3")
        self.proc = subprocess.Popen(
            ["etcdctl", f"--endpoints={cluster.members[0].endpoint}", "watch", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_lines(self, n: int, timeout: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.lines[:n] if len(self.lines) >= n else self.lines

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def etcdctl(cluster: LocalCluster, *args: str) -> str:
    env = dict(os.environ, ETCDCTL_API="3")
    p = subprocess.run(
        ["etcdctl", f"--endpoints={cluster.endpoints}", "--command-timeout=10s", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


@needs_etcdctl
def test_etcdctl_watch_prefix_and_prev_kv(cluster: LocalCluster) -> None:
    prefix = EtcdctlWatch(cluster, "--prefix", "ew/")
    prev = EtcdctlWatch(cluster, "--prev-kv", "ew/a")
    time.sleep(1.0)  # etcdctl has connected and created its watch
    try:
        etcdctl(cluster, "put", "ew/a", "1")
        etcdctl(cluster, "put", "ew/b", "2")
        etcdctl(cluster, "put", "other", "3")
        etcdctl(cluster, "put", "ew/a", "4")
        etcdctl(cluster, "del", "ew/a")
        want = ["PUT", "ew/a", "1", "PUT", "ew/b", "2", "PUT", "ew/a", "4", "DELETE", "ew/a", ""]
        assert prefix.wait_lines(len(want)) == want
        want_prev = [
            "PUT", "ew/a", "1",
            "PUT", "ew/a", "1", "ew/a", "4",
            "DELETE", "ew/a", "4", "ew/a", "",
        ]  # fmt: skip
        assert prev.wait_lines(len(want_prev)) == want_prev
    finally:
        prefix.stop()
        prev.stop()


@needs_etcdctl
def test_etcdctl_watch_from_a_revision(cluster: LocalCluster) -> None:
    m = cluster.members[1]
    first = put(m, b"er", b"0")
    for i in range(1, 4):
        put(m, b"er", b"%d" % i)
    ew = EtcdctlWatch(cluster, f"--rev={first + 1}", "er")
    try:
        assert ew.wait_lines(9) == ["PUT", "er", "1", "PUT", "er", "2", "PUT", "er", "3"]
        etcdctl(cluster, "put", "er", "4")
        assert ew.wait_lines(12)[9:] == ["PUT", "er", "4"]
    finally:
        ew.stop()

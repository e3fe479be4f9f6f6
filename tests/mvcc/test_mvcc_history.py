"""MVCC store: events/watch replay, hash_kv, snapshots, and a model-based property test."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.consensus.mvcc import (
    CompactedError,
    FutureRevisionError,
    MvccStore,
    SnapshotCorruptError,
)
from synod.etcd.etcdserverpb import rpc_pb2
from synod.etcd.mvccpb import kv_pb2

RR = rpc_pb2.RangeRequest


def put(s: MvccStore, key: bytes, value: bytes = b"v", lease: int = 0) -> None:
    s.apply_put(rpc_pb2.PutRequest(key=key, value=value, lease=lease))


def delete(s: MvccStore, key: bytes, end: bytes = b"") -> None:
    s.apply_delete_range(rpc_pb2.DeleteRangeRequest(key=key, range_end=end))


def sample() -> MvccStore:
    s = MvccStore()
    put(s, b"a", b"1", lease=3)  # 2
    put(s, b"b", b"1")  # 3
    put(s, b"a", b"2")  # 4
    delete(s, b"b")  # 5
    s.apply_txn(
        rpc_pb2.TxnRequest(
            success=[
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"c", value=b"c")),
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"b", value=b"again")),
            ]
        )
    )  # 6
    return s


def ev(e: kv_pb2.Event) -> tuple[int, bytes, int, bytes, bytes]:
    return (e.type, e.kv.key, e.kv.mod_revision, e.kv.value, e.prev_kv.value)


def test_events_since() -> None:
    s = sample()
    assert [ev(e) for e in s.events_since(1)] == [
        (0, b"a", 2, b"1", b""),
        (0, b"b", 3, b"1", b""),
        (0, b"a", 4, b"2", b"1"),
        (1, b"b", 5, b"", b"1"),
        (0, b"c", 6, b"c", b""),
        (0, b"b", 6, b"again", b""),
    ]
    assert [ev(e) for e in s.events_since(4, b"b", b"c")] == [
        (1, b"b", 5, b"", b"1"),
        (0, b"b", 6, b"again", b""),
    ]
    assert [e.kv.mod_revision for e in s.events_since(3, b"a")] == [4]
    assert s.events_since(7) == []


def test_events_since_after_compaction() -> None:
    s = sample()
    s.compact(4)
    with pytest.raises(CompactedError) as ei:
        s.events_since(3)
    assert ei.value.compact_revision == 4
    # watching from the compacted revision itself is allowed (etcd: minRev < compactRev)
    assert [ev(e) for e in s.events_since(5)] == [
        (1, b"b", 5, b"", b"1"),
        (0, b"c", 6, b"c", b""),
        (0, b"b", 6, b"again", b""),
    ]
    assert [e.kv.mod_revision for e in s.events_since(4)][0] == 4


def test_write_events_match_replay() -> None:
    s = MvccStore()
    produced: list[kv_pb2.Event] = []
    produced += s.apply_put(rpc_pb2.PutRequest(key=b"a", value=b"1"))[1]
    produced += s.apply_put(rpc_pb2.PutRequest(key=b"a", value=b"2"))[1]
    produced += s.apply_delete_range(rpc_pb2.DeleteRangeRequest(key=b"a"))[1]
    assert [e.SerializeToString() for e in produced] == [
        e.SerializeToString() for e in s.events_since(1)
    ]


def test_hash_kv() -> None:
    s1, s2 = sample(), sample()
    assert s1.hash_kv() == s2.hash_kv()
    assert s1.hash_kv(4) == s2.hash_kv(4)
    assert s1.hash_kv(4) != s1.hash_kv()
    put(s2, b"z")
    assert s1.hash_kv() != s2.hash_kv()
    assert s1.hash_kv(6) == s2.hash_kv(6)
    with pytest.raises(FutureRevisionError):
        s1.hash_kv(7)
    s1.compact(4)
    s2.compact(4)
    assert s1.hash_kv(6)[1] == 4
    assert s1.hash_kv(6) == s2.hash_kv(6)
    with pytest.raises(CompactedError):
        s1.hash_kv(3)
    assert MvccStore.from_bytes(s1.to_bytes()).hash_kv() == s1.hash_kv()


def test_snapshot_roundtrip_and_restore() -> None:
    s = sample()
    s.compact(4)
    blob = s.to_bytes()
    r = MvccStore.from_bytes(blob)
    assert r.to_bytes() == blob
    assert (r.revision, r.compact_revision) == (6, 4)
    assert r.keys_for_lease(3) == frozenset()  # a's last put dropped the lease
    for rev in (4, 5, 6):
        want = s.range(RR(key=b"\x00", range_end=b"\x00", revision=rev))
        assert r.range(RR(key=b"\x00", range_end=b"\x00", revision=rev)) == want
    put(r, b"d")
    assert r.revision == 7
    empty = MvccStore()
    assert MvccStore.from_bytes(empty.to_bytes()).revision == 1


def test_snapshot_corruption_detected() -> None:
    blob = sample().to_bytes()
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x40
        with pytest.raises(SnapshotCorruptError):
            MvccStore.from_bytes(bytes(bad))
    with pytest.raises(SnapshotCorruptError) as ei:
        MvccStore.from_bytes(blob[:-3])
    assert "offset" in str(ei.value)
    with pytest.raises(SnapshotCorruptError):
        MvccStore.from_bytes(b"")


def test_snapshot_semantic_validation() -> None:
    """Well-checksummed but inconsistent content is rejected too."""
    from synod.consensus.mvcc import codec

    rec = codec.encode_record
    cases = [
        [rec(2, 0, b"a", True, 0, 0, 0, b"")],  # tombstone first
        [rec(2, 0, b"a", False, 2, 2, 0, b"")],  # version 2 at creation
        [rec(3, 0, b"a", False, 3, 1, 0, b""), rec(2, 0, b"b", False, 2, 1, 0, b"")],  # order
        [rec(9, 0, b"a", False, 9, 1, 0, b"")],  # beyond current revision
    ]
    for records in cases:
        blob = codec.encode_snapshot(5, -1, records)
        with pytest.raises(SnapshotCorruptError):
            MvccStore.from_bytes(blob)
    good = codec.encode_snapshot(5, -1, [rec(2, 0, b"a", False, 2, 1, 0, b"x")])
    assert MvccStore.from_bytes(good).range(RR(key=b"a")).kvs[0].value == b"x"
    assert struct.unpack_from(">8s", good)[0] == codec.MAGIC


# ---------------------------------------------------------------- model-based test

KEYS = [b"a", b"ab", b"b", b"c"]


class Model:
    """Reference: key -> list of (rev, value or None, create, version); never compacted."""

    def __init__(self) -> None:
        self.rev = 1
        self.hist: dict[bytes, list[tuple[int, bytes | None, int, int]]] = {}

    def latest(self, key: bytes) -> tuple[int, bytes | None, int, int] | None:
        h = self.hist.get(key)
        return h[-1] if h and h[-1][1] is not None else None

    def write(self, changes: list[tuple[bytes, bytes | None]]) -> None:
        changes = [(k, v) for k, v in changes if v is not None or self.latest(k) is not None]
        if not changes:
            return
        self.rev += 1
        for k, v in changes:
            cur = self.latest(k)
            if v is None:
                if cur is not None:
                    self.hist.setdefault(k, []).append((self.rev, None, 0, 0))
            elif cur is None:
                self.hist.setdefault(k, []).append((self.rev, v, self.rev, 1))
            else:
                self.hist[k].append((self.rev, v, cur[2], cur[3] + 1))

    def at(self, rev: int) -> list[tuple[bytes, bytes, int, int, int]]:
        out = []
        for k in sorted(self.hist):
            found = None
            for r, v, c, ver in self.hist[k]:
                if r <= rev:
                    found = (r, v, c, ver)
            if found is not None and found[1] is not None:
                out.append((k, found[1], found[2], found[0], found[3]))
        return out


ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(max_size=3)),
        st.tuples(st.just("del"), st.sampled_from(KEYS), st.sampled_from([b"", b"b", b"\x00"])),
        st.tuples(
            st.just("txn"),
            st.lists(st.sampled_from(KEYS), unique=True, max_size=3),
            st.binary(max_size=2),
        ),
        st.tuples(st.just("compact"), st.integers(0, 10), st.just(b"")),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(ops_strategy, st.data())
def test_against_model(ops: list[tuple[str, object, bytes]], data: st.DataObject) -> None:
    s = MvccStore()
    m = Model()
    for kind, arg, extra in ops:
        if kind == "put":
            assert isinstance(arg, bytes)
            s.apply_put(rpc_pb2.PutRequest(key=arg, value=extra))
            m.write([(arg, extra)])
        elif kind == "del":
            assert isinstance(arg, bytes)
            s.apply_delete_range(rpc_pb2.DeleteRangeRequest(key=arg, range_end=extra))
            victims = [
                k
                for k in KEYS
                if (k == arg if not extra else k >= arg and (extra == b"\x00" or k < extra))
            ]
            m.write([(k, None) for k in victims if m.latest(k) is not None])
        elif kind == "txn":
            assert isinstance(arg, list)
            s.apply_txn(
                rpc_pb2.TxnRequest(
                    success=[
                        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=extra))
                        for k in arg
                    ]
                )
            )
            m.write([(k, extra) for k in arg])
        else:
            assert isinstance(arg, int)
            target = s.compact_revision + 1 + arg
            if target <= s.revision:
                s.compact(target)
        assert s.revision == m.rev

    lo = max(s.compact_revision, 1)
    for _ in range(5):
        rev = data.draw(st.integers(lo, s.revision))
        got = s.range(RR(key=b"\x00", range_end=b"\x00", revision=rev))
        want = m.at(rev)
        assert [
            (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in got.kvs
        ] == want
        assert got.count == len(want)
        key = data.draw(st.sampled_from(KEYS))
        single = s.range(RR(key=key, revision=rev))
        assert [kv.key for kv in single.kvs] == [w[0] for w in want if w[0] == key]
    if s.compact_revision > 1:
        with pytest.raises(CompactedError):
            s.range(RR(key=b"a", revision=s.compact_revision - 1))

    blob = s.to_bytes()
    restored = MvccStore.from_bytes(blob)
    assert restored.to_bytes() == blob
    assert restored.hash_kv() == s.hash_kv()
    for rev in range(lo, s.revision + 1):
        q = RR(key=b"\x00", range_end=b"\x00", revision=rev)
        assert restored.range(q) == s.range(q)
    # replayed events reproduce the latest state
    if s.compact_revision < 2:
        state: dict[bytes, bytes] = {}
        for e in s.events_since(1):
            if e.type == kv_pb2.Event.PUT:
                state[e.kv.key] = e.kv.value
            else:
                state.pop(e.kv.key, None)
        assert sorted(state.items()) == [(w[0], w[1]) for w in m.at(s.revision)]

"""MVCC store: revisions, ranges, puts, deletes, compaction (etcd semantics)."""

from __future__ import annotations

import pytest

from synod.consensus.mvcc import (
    CompactedError,
    EmptyKeyError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseNotFoundError,
    LeaseProvidedError,
    MvccStore,
    ValueProvidedError,
    key_in_range,
)
from synod.etcd.etcdserverpb import rpc_pb2
from synod.etcd.mvccpb import kv_pb2

RR = rpc_pb2.RangeRequest


def put(s: MvccStore, key: bytes, value: bytes = b"", **kw: object) -> rpc_pb2.PutResponse:
    resp, _ = s.apply_put(rpc_pb2.PutRequest(key=key, value=value, **kw))  # type: ignore[arg-type]
    return resp


def delete(
    s: MvccStore, key: bytes, end: bytes = b"", prev: bool = False
) -> rpc_pb2.DeleteRangeResponse:
    resp, _ = s.apply_delete_range(rpc_pb2.DeleteRangeRequest(key=key, range_end=end, prev_kv=prev))
    return resp


def keys(resp: rpc_pb2.RangeResponse) -> list[bytes]:
    return [kv.key for kv in resp.kvs]


def get(s: MvccStore, key: bytes, rev: int = 0) -> kv_pb2.KeyValue | None:
    r = s.range(RR(key=key, revision=rev))
    return r.kvs[0] if r.kvs else None


def test_fresh_store() -> None:
    s = MvccStore()
    assert s.revision == 1
    assert s.compact_revision == -1
    r = s.range(RR(key=b"a"))
    assert r.count == 0 and not r.kvs and not r.more


def test_revision_and_version_bookkeeping() -> None:
    s = MvccStore()
    put(s, b"a", b"1")
    put(s, b"b", b"1")
    put(s, b"a", b"2")
    assert s.revision == 4
    a = get(s, b"a")
    assert a is not None
    assert (a.create_revision, a.mod_revision, a.version, a.value) == (2, 4, 2, b"2")
    delete(s, b"a")
    assert s.revision == 5 and get(s, b"a") is None
    put(s, b"a", b"3")  # new generation
    a = get(s, b"a")
    assert a is not None
    assert (a.create_revision, a.mod_revision, a.version) == (6, 6, 1)


def test_put_same_value_still_bumps_revision() -> None:
    s = MvccStore()
    put(s, b"a", b"x")
    put(s, b"a", b"x")
    assert s.revision == 3


def test_delete_nothing_keeps_revision() -> None:
    s = MvccStore()
    put(s, b"a")
    resp, events = s.apply_delete_range(rpc_pb2.DeleteRangeRequest(key=b"zz"))
    assert resp.deleted == 0 and events == [] and s.revision == 2
    delete(s, b"a")
    assert delete(s, b"a").deleted == 0 and s.revision == 3


def test_delete_range_prev_kvs_and_events() -> None:
    s = MvccStore()
    for k in (b"a", b"b", b"c", b"d"):
        put(s, k, k * 2)
    resp, events = s.apply_delete_range(
        rpc_pb2.DeleteRangeRequest(key=b"b", range_end=b"d", prev_kv=True)
    )
    assert resp.deleted == 2
    assert [kv.key for kv in resp.prev_kvs] == [b"b", b"c"]
    assert resp.prev_kvs[0].value == b"bb"
    assert s.revision == 6
    assert [(e.type, e.kv.key, e.kv.mod_revision, e.prev_kv.value) for e in events] == [
        (kv_pb2.Event.DELETE, b"b", 6, b"bb"),
        (kv_pb2.Event.DELETE, b"c", 6, b"cc"),
    ]
    assert events[0].kv.version == 0 and events[0].kv.value == b""


def test_range_end_variants() -> None:
    s = MvccStore()
    for k in (b"a", b"ab", b"abc", b"b", b"c"):
        put(s, k, b"v")
    assert keys(s.range(RR(key=b"ab"))) == [b"ab"]
    assert keys(s.range(RR(key=b"ab", range_end=b"b"))) == [b"ab", b"abc"]
    assert keys(s.range(RR(key=b"ab", range_end=b"ac"))) == [b"ab", b"abc"]  # prefix "ab"
    assert keys(s.range(RR(key=b"b", range_end=b"\x00"))) == [b"b", b"c"]
    assert keys(s.range(RR(key=b"\x00", range_end=b"\x00"))) == [b"a", b"ab", b"abc", b"b", b"c"]
    assert keys(s.range(RR(key=b"c", range_end=b"a"))) == []  # inverted range
    delete(s, b"ab")
    assert keys(s.range(RR(key=b"a", range_end=b"b"))) == [b"a", b"abc"]


def test_limit_count_more() -> None:
    s = MvccStore()
    for i in range(5):
        put(s, b"k%d" % i)
    r = s.range(RR(key=b"k", range_end=b"l", limit=2))
    assert keys(r) == [b"k0", b"k1"] and r.count == 5 and r.more
    r = s.range(RR(key=b"k", range_end=b"l", limit=5))
    assert len(r.kvs) == 5 and r.count == 5 and not r.more
    r = s.range(RR(key=b"k", range_end=b"l", limit=0))
    assert len(r.kvs) == 5 and not r.more


def test_keys_only_and_count_only() -> None:
    s = MvccStore()
    put(s, b"a", b"va")
    put(s, b"b", b"vb")
    r = s.range(RR(key=b"a", range_end=b"c", keys_only=True))
    assert keys(r) == [b"a", b"b"] and all(kv.value == b"" for kv in r.kvs)
    assert r.kvs[0].version == 1
    r = s.range(RR(key=b"a", range_end=b"c", count_only=True))
    assert r.count == 2 and not r.kvs and not r.more
    r = s.range(RR(key=b"a", count_only=True))
    assert r.count == 1 and not r.kvs
    assert get(s, b"a").value == b"va"  # type: ignore[union-attr]  # stored data untouched


def _sort_store() -> MvccStore:
    s = MvccStore()
    put(s, b"a", b"3")  # rev 2
    put(s, b"b", b"1")  # rev 3
    put(s, b"c", b"2")  # rev 4
    put(s, b"b", b"1")  # rev 5, b version 2
    put(s, b"b", b"0")  # rev 6, b version 3
    put(s, b"a", b"3")  # rev 7, a version 2
    return s


@pytest.mark.parametrize(
    ("order", "target", "expected"),
    [
        (RR.NONE, RR.KEY, [b"a", b"b", b"c"]),
        (RR.ASCEND, RR.KEY, [b"a", b"b", b"c"]),
        (RR.DESCEND, RR.KEY, [b"c", b"b", b"a"]),
        (RR.NONE, RR.VERSION, [b"c", b"a", b"b"]),  # NONE with non-KEY target = ASCEND
        (RR.ASCEND, RR.VERSION, [b"c", b"a", b"b"]),
        (RR.DESCEND, RR.VERSION, [b"b", b"a", b"c"]),
        (RR.ASCEND, RR.CREATE, [b"a", b"b", b"c"]),
        (RR.DESCEND, RR.CREATE, [b"c", b"b", b"a"]),
        (RR.ASCEND, RR.MOD, [b"c", b"b", b"a"]),
        (RR.DESCEND, RR.MOD, [b"a", b"b", b"c"]),
        (RR.ASCEND, RR.VALUE, [b"b", b"c", b"a"]),
        (RR.DESCEND, RR.VALUE, [b"a", b"c", b"b"]),
    ],
)
def test_sort(order: int, target: int, expected: list[bytes]) -> None:
    s = _sort_store()
    r = s.range(RR(key=b"a", range_end=b"z", sort_order=order, sort_target=target))  # type: ignore[arg-type]
    assert keys(r) == expected
    r = s.range(RR(key=b"a", range_end=b"z", sort_order=order, sort_target=target, limit=1))  # type: ignore[arg-type]
    assert keys(r) == expected[:1] and r.more and r.count == 3


def test_revision_filters_apply_before_limit_count_is_unfiltered() -> None:
    s = _sort_store()
    r = s.range(RR(key=b"a", range_end=b"z", min_mod_revision=5))
    assert keys(r) == [b"a", b"b"] and r.count == 3  # etcd counts before filtering
    r = s.range(RR(key=b"a", range_end=b"z", max_mod_revision=5))
    assert keys(r) == [b"c"]
    r = s.range(RR(key=b"a", range_end=b"z", min_create_revision=3))
    assert keys(r) == [b"b", b"c"]
    r = s.range(RR(key=b"a", range_end=b"z", max_create_revision=3))
    assert keys(r) == [b"a", b"b"]
    r = s.range(RR(key=b"a", range_end=b"z", min_create_revision=3, limit=1))
    assert keys(r) == [b"b"] and r.more
    r = s.range(RR(key=b"a", range_end=b"z", min_mod_revision=7, limit=1))
    assert keys(r) == [b"a"] and not r.more


def test_historical_reads() -> None:
    s = MvccStore()
    put(s, b"a", b"1")  # 2
    put(s, b"a", b"2")  # 3
    delete(s, b"a")  # 4
    put(s, b"a", b"3")  # 5
    put(s, b"b", b"1")  # 6
    assert get(s, b"a", 1) is None
    assert get(s, b"a", 2).value == b"1"  # type: ignore[union-attr]
    assert get(s, b"a", 3).value == b"2"  # type: ignore[union-attr]
    assert get(s, b"a", 4) is None
    assert get(s, b"a", 5).create_revision == 5  # type: ignore[union-attr]
    assert keys(s.range(RR(key=b"a", range_end=b"c", revision=5))) == [b"a"]
    assert s.range(RR(key=b"a", range_end=b"c", revision=6)).count == 2
    with pytest.raises(FutureRevisionError) as ei:
        s.range(RR(key=b"a", revision=7))
    assert ei.value.grpc_code == "OUT_OF_RANGE"
    assert str(ei.value) == "mvcc: required revision is a future revision"


def test_compaction() -> None:
    s = MvccStore()
    put(s, b"a", b"1")  # 2
    put(s, b"a", b"2")  # 3
    put(s, b"b", b"1")  # 4
    delete(s, b"b")  # 5
    put(s, b"c", b"1")  # 6
    put(s, b"a", b"3")  # 7
    s.apply_compaction(rpc_pb2.CompactionRequest(revision=5))
    assert s.compact_revision == 5
    with pytest.raises(CompactedError) as ei:
        get(s, b"a", 4)
    assert ei.value.grpc_code == "OUT_OF_RANGE"
    assert ei.value.grpc_message == "etcdserver: mvcc: required revision has been compacted"
    assert get(s, b"a", 5).value == b"2"  # type: ignore[union-attr]  # newest <= 5 kept
    assert get(s, b"b", 5) is None
    assert get(s, b"a", 6).value == b"2"  # type: ignore[union-attr]
    assert get(s, b"a").value == b"3"  # type: ignore[union-attr]
    assert get(s, b"a").version == 3  # type: ignore[union-attr]
    assert s.live_key_count() == 2
    with pytest.raises(CompactedError):
        s.compact(5)
    with pytest.raises(CompactedError):
        s.compact(4)
    with pytest.raises(FutureRevisionError):
        s.compact(8)
    s.compact(7)  # compacting at the current revision is allowed
    assert get(s, b"a", 7).value == b"3"  # type: ignore[union-attr]
    assert keys(s.range(RR(key=b"\x00", range_end=b"\x00"))) == [b"a", b"c"]


def test_put_prev_kv_ignore_value_ignore_lease() -> None:
    s = MvccStore()
    r = put(s, b"a", b"v1", lease=7, prev_kv=True)
    assert not r.HasField("prev_kv")
    assert s.keys_for_lease(7) == {b"a"}
    r = put(s, b"a", ignore_value=True, lease=8, prev_kv=True)
    assert r.prev_kv.value == b"v1" and r.prev_kv.lease == 7
    a = get(s, b"a")
    assert a is not None and a.value == b"v1" and a.lease == 8
    assert s.keys_for_lease(7) == frozenset() and s.keys_for_lease(8) == {b"a"}
    put(s, b"a", b"v2", ignore_lease=True)
    a = get(s, b"a")
    assert a is not None and a.value == b"v2" and a.lease == 8
    put(s, b"a", b"v3")  # no lease: detaches
    assert s.keys_for_lease(8) == frozenset()
    put(s, b"b", b"x", lease=9)
    delete(s, b"b")
    assert s.keys_for_lease(9) == frozenset()


@pytest.mark.parametrize(
    ("req", "exc", "code", "text"),
    [
        (
            rpc_pb2.PutRequest(key=b"zz", ignore_value=True),
            KeyNotFoundError,
            "INVALID_ARGUMENT",
            "etcdserver: key not found",
        ),
        (
            rpc_pb2.PutRequest(key=b"zz", ignore_lease=True),
            KeyNotFoundError,
            "INVALID_ARGUMENT",
            "etcdserver: key not found",
        ),
        (
            rpc_pb2.PutRequest(key=b"a", value=b"x", ignore_value=True),
            ValueProvidedError,
            "INVALID_ARGUMENT",
            "etcdserver: value is provided",
        ),
        (
            rpc_pb2.PutRequest(key=b"a", lease=3, ignore_lease=True),
            LeaseProvidedError,
            "INVALID_ARGUMENT",
            "etcdserver: lease is provided",
        ),
        (
            rpc_pb2.PutRequest(key=b"", value=b"x"),
            EmptyKeyError,
            "INVALID_ARGUMENT",
            "etcdserver: key is not provided",
        ),
    ],
)
def test_put_errors_leave_store_unchanged(
    req: rpc_pb2.PutRequest, exc: type[Exception], code: str, text: str
) -> None:
    s = MvccStore()
    put(s, b"a", b"1")
    before = s.to_bytes()
    with pytest.raises(exc) as ei:
        s.apply_put(req)
    assert ei.value.grpc_code == code  # type: ignore[attr-defined]
    assert str(ei.value) == text
    assert s.to_bytes() == before and s.revision == 2


def test_lease_hook() -> None:
    s = MvccStore(lease_exists=lambda lease: lease == 5)
    put(s, b"a", lease=5)
    with pytest.raises(LeaseNotFoundError) as ei:
        put(s, b"b", lease=6)
    assert ei.value.grpc_code == "NOT_FOUND"
    assert s.revision == 2


def test_put_events() -> None:
    s = MvccStore()
    _, ev = s.apply_put(rpc_pb2.PutRequest(key=b"a", value=b"1"))
    assert len(ev) == 1 and ev[0].type == kv_pb2.Event.PUT
    assert ev[0].kv.mod_revision == 2 and not ev[0].HasField("prev_kv")
    _, ev = s.apply_put(rpc_pb2.PutRequest(key=b"a", value=b"2"))
    assert ev[0].prev_kv.value == b"1" and ev[0].kv.version == 2


def test_returned_messages_are_copies() -> None:
    s = MvccStore()
    put(s, b"a", b"1")
    r = s.range(RR(key=b"a"))
    r.kvs[0].value = b"mutated"
    _, ev = s.apply_put(rpc_pb2.PutRequest(key=b"b", value=b"2"))
    ev[0].kv.value = b"mutated"
    assert get(s, b"a").value == b"1"  # type: ignore[union-attr]
    assert get(s, b"b").value == b"2"  # type: ignore[union-attr]


def test_empty_key_errors() -> None:
    s = MvccStore()
    with pytest.raises(EmptyKeyError):
        s.range(RR(key=b""))
    with pytest.raises(EmptyKeyError):
        s.apply_delete_range(rpc_pb2.DeleteRangeRequest(key=b""))


def test_key_in_range() -> None:
    assert key_in_range(b"a", b"a", b"")
    assert not key_in_range(b"ab", b"a", b"")
    assert key_in_range(b"ab", b"a", b"b")
    assert key_in_range(b"zz", b"a", b"\x00")
    assert not key_in_range(b"b", b"a", b"b")

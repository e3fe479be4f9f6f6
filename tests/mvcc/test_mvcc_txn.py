"""MVCC store transactions: compares, branches, nesting, duplicate keys, atomicity."""

from __future__ import annotations

import pytest

from synod.consensus.mvcc import (
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    KeyNotFoundError,
    MvccStore,
    TooManyOpsError,
)
from synod.etcd.etcdserverpb import rpc_pb2

C = rpc_pb2.Compare
Op = rpc_pb2.RequestOp


def p(key: bytes, value: bytes = b"v", **kw: object) -> rpc_pb2.RequestOp:
    return Op(request_put=rpc_pb2.PutRequest(key=key, value=value, **kw))  # type: ignore[arg-type]


def g(key: bytes, end: bytes = b"", **kw: object) -> rpc_pb2.RequestOp:
    return Op(request_range=rpc_pb2.RangeRequest(key=key, range_end=end, **kw))  # type: ignore[arg-type]


def d(key: bytes, end: bytes = b"") -> rpc_pb2.RequestOp:
    return Op(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key, range_end=end))


def t(compare=(), success=(), failure=()) -> rpc_pb2.RequestOp:  # type: ignore[no-untyped-def]
    return Op(request_txn=rpc_pb2.TxnRequest(compare=compare, success=success, failure=failure))


def txn(compare=(), success=(), failure=()) -> rpc_pb2.TxnRequest:  # type: ignore[no-untyped-def]
    return rpc_pb2.TxnRequest(compare=compare, success=success, failure=failure)


def store() -> MvccStore:
    s = MvccStore()
    s.apply_put(rpc_pb2.PutRequest(key=b"a", value=b"m", lease=9))  # rev 2
    s.apply_put(rpc_pb2.PutRequest(key=b"b", value=b"x"))  # rev 3
    s.apply_put(rpc_pb2.PutRequest(key=b"a", value=b"m"))  # rev 4: a v2 create 2 mod 4
    return s


def cond(s: MvccStore, c: rpc_pb2.Compare) -> bool:
    resp, _ = s.apply_txn(txn([c]))
    return resp.succeeded


@pytest.mark.parametrize(
    ("cmp", "expected"),
    [
        (C(key=b"a", target=C.VERSION, result=C.EQUAL, version=2), True),
        (C(key=b"a", target=C.VERSION, result=C.GREATER, version=1), True),
        (C(key=b"a", target=C.VERSION, result=C.LESS, version=2), False),
        (C(key=b"a", target=C.VERSION, result=C.NOT_EQUAL, version=2), False),
        (C(key=b"a", target=C.CREATE, result=C.EQUAL, create_revision=2), True),
        (C(key=b"a", target=C.CREATE, result=C.LESS, create_revision=3), True),
        (C(key=b"a", target=C.MOD, result=C.EQUAL, mod_revision=4), True),
        (C(key=b"a", target=C.MOD, result=C.GREATER, mod_revision=4), False),
        (C(key=b"a", target=C.VALUE, result=C.EQUAL, value=b"m"), True),
        (C(key=b"a", target=C.VALUE, result=C.GREATER, value=b"l"), True),
        (C(key=b"a", target=C.VALUE, result=C.LESS, value=b"l"), False),
        (C(key=b"a", target=C.VALUE, result=C.NOT_EQUAL, value=b"m"), False),
        (C(key=b"a", target=C.LEASE, result=C.EQUAL, lease=0), True),  # last put dropped lease
        (C(key=b"b", target=C.LEASE, result=C.NOT_EQUAL, lease=1), True),
        # missing key: version/create/mod/lease compare against 0
        (C(key=b"zz", target=C.VERSION, result=C.EQUAL, version=0), True),
        (C(key=b"zz", target=C.CREATE, result=C.EQUAL, create_revision=0), True),
        (C(key=b"zz", target=C.MOD, result=C.LESS, mod_revision=1), True),
        (C(key=b"zz", target=C.LEASE, result=C.EQUAL, lease=0), True),
        # missing key: any VALUE compare fails, even NOT_EQUAL / empty value
        (C(key=b"zz", target=C.VALUE, result=C.EQUAL, value=b""), False),
        (C(key=b"zz", target=C.VALUE, result=C.NOT_EQUAL, value=b"q"), False),
        # ranges: every key must satisfy it
        (C(key=b"a", range_end=b"c", target=C.VERSION, result=C.GREATER, version=0), True),
        (C(key=b"a", range_end=b"c", target=C.VERSION, result=C.EQUAL, version=2), False),
        (C(key=b"a", range_end=b"c", target=C.VALUE, result=C.GREATER, value=b"a"), True),
        (C(key=b"a", range_end=b"\x00", target=C.MOD, result=C.LESS, mod_revision=5), True),
        (C(key=b"x", range_end=b"y", target=C.VERSION, result=C.EQUAL, version=0), True),
        (C(key=b"x", range_end=b"y", target=C.VALUE, result=C.NOT_EQUAL, value=b"x"), False),
        # target_union member not matching the target compares against zero
        (C(key=b"a", target=C.VERSION, result=C.GREATER, mod_revision=100), True),
        (C(key=b"a", target=C.VALUE, result=C.GREATER), True),
    ],
)
def test_compare(cmp: rpc_pb2.Compare, expected: bool) -> None:
    assert cond(store(), cmp) is expected


def test_branches_and_single_revision() -> None:
    s = store()
    c = C(key=b"a", target=C.VALUE, result=C.EQUAL, value=b"m")
    resp, events = s.apply_txn(txn([c], [p(b"c", b"1"), p(b"d", b"2"), g(b"c")], [p(b"f")]))
    assert resp.succeeded and s.revision == 5
    assert [e.kv.key for e in events] == [b"c", b"d"]
    assert all(e.kv.mod_revision == 5 for e in events)
    put_c = resp.responses[0].response_put
    assert put_c.header.revision == 5
    rng = resp.responses[2].response_range
    assert [kv.value for kv in rng.kvs] == [b"1"]  # reads see the txn's earlier writes
    assert rng.header.revision == 5
    resp, events = s.apply_txn(txn([c], [], [p(b"f")]))
    assert resp.succeeded and not events and s.revision == 5  # empty branch: no revision
    c2 = C(key=b"a", target=C.VALUE, result=C.EQUAL, value=b"no")
    resp, events = s.apply_txn(txn([c2], [p(b"x")], [p(b"f"), g(b"f")]))
    assert not resp.succeeded and s.revision == 6
    assert resp.responses[1].response_range.kvs[0].create_revision == 6


def test_read_only_txn_and_delete_noop() -> None:
    s = store()
    resp, events = s.apply_txn(txn([], [g(b"a"), d(b"nope")]))
    assert resp.succeeded and not events and s.revision == 4
    assert resp.responses[0].response_range.header.revision == 4
    assert resp.responses[1].response_delete_range.deleted == 0
    assert resp.responses[1].response_delete_range.header.revision == 4


def test_txn_delete_then_range_and_sub_revision_order() -> None:
    s = store()
    resp, events = s.apply_txn(txn([], [d(b"a"), p(b"c"), g(b"a", b"z")]))
    assert [(e.type, e.kv.key) for e in events] == [(1, b"a"), (0, b"c")]
    assert [kv.key for kv in resp.responses[2].response_range.kvs] == [b"b", b"c"]
    assert resp.responses[0].response_delete_range.header.revision == 5
    # history is ordered by sub revision too
    assert [e.kv.key for e in s.events_since(5)] == [b"a", b"c"]


def test_nested_txn_compares_see_pre_txn_state() -> None:
    s = store()
    # the inner compare checks c's version == 0, evaluated before the outer put of c
    inner = t(
        [C(key=b"c", target=C.VERSION, result=C.EQUAL, version=0)],
        [p(b"e", b"in-ok")],
        [p(b"e", b"in-fail")],
    )
    resp, events = s.apply_txn(txn([], [p(b"c"), inner]))
    assert resp.responses[1].response_txn.succeeded
    assert resp.responses[1].response_txn.HasField("header")
    assert resp.responses[1].response_txn.responses[0].response_put.header.revision == 5
    assert [e.kv.value for e in events] == [b"v", b"in-ok"]
    assert s.revision == 5


def test_nested_txn_failure_branch() -> None:
    s = store()
    inner = t(
        [C(key=b"zz", target=C.VERSION, result=C.GREATER, version=0)],
        [p(b"e", b"1")],
        [d(b"b"), t([], [p(b"f")])],
    )
    resp, events = s.apply_txn(txn([], [inner]))
    r = resp.responses[0].response_txn
    assert not r.succeeded
    assert r.responses[0].response_delete_range.deleted == 1
    assert r.responses[1].response_txn.succeeded
    assert [(e.type, e.kv.key) for e in events] == [(1, b"b"), (0, b"f")]


@pytest.mark.parametrize(
    "request_",
    [
        txn([], [p(b"k"), p(b"k")]),
        txn([], [p(b"k"), d(b"k")]),
        txn([], [d(b"a", b"z"), p(b"k")]),
        txn([], [p(b"k"), t([], [p(b"k")])]),
        txn([], [d(b"k"), t([], [p(b"k")])]),
        txn([], [t([], [p(b"k")]), t([], [], [p(b"k")])]),
        txn([], [t([], [p(b"k")]), p(b"k")]),
        txn([], [], [p(b"k"), p(b"k")]),
    ],
)
def test_duplicate_keys_rejected(request_: rpc_pb2.TxnRequest) -> None:
    s = store()
    before = s.to_bytes()
    with pytest.raises(DuplicateKeyError) as ei:
        s.apply_txn(request_)
    assert ei.value.grpc_code == "INVALID_ARGUMENT"
    assert str(ei.value) == "etcdserver: duplicate key given in txn request"
    assert s.to_bytes() == before


@pytest.mark.parametrize(
    "request_",
    [
        txn([], [p(b"k")], [p(b"k")]),  # different branches
        txn([], [t([], [p(b"k")], [p(b"k")])]),  # both branches of one nested txn
        txn([], [d(b"k"), d(b"a", b"z")]),  # overlapping deletes
        txn([], [d(b"a", b"\x00"), p(b"k")]),  # etcd compares "\x00" literally here
    ],
)
def test_allowed_overlaps(request_: rpc_pb2.TxnRequest) -> None:
    store().apply_txn(request_)


def test_txn_validation_errors_leave_state_unchanged() -> None:
    s = store()
    before = s.to_bytes()
    cases: list[tuple[rpc_pb2.TxnRequest, type[Exception]]] = [
        (txn([], [p(b"c"), p(b"zz", b"", ignore_value=True)]), KeyNotFoundError),
        (txn([], [p(b"c"), Op()]), KeyNotFoundError),
        (txn([], [p(b"c"), p(b"")]), EmptyKeyError),
        (txn([C(key=b"")], [p(b"c")]), EmptyKeyError),
        (txn([], [p(b"c"), g(b"a", revision=5)]), FutureRevisionError),
        (txn([], [p(b"k%d" % i) for i in range(129)]), TooManyOpsError),
        (txn([], [t([], [p(b"c"), t([], [p(b"q", ignore_lease=True)])])]), KeyNotFoundError),
    ]
    for req, exc in cases:
        with pytest.raises(exc):
            s.apply_txn(req)
        assert s.to_bytes() == before
    # errors in the branch that does not run do not matter
    resp, _ = s.apply_txn(txn([], [p(b"c")], [p(b"zz", b"", ignore_value=True)]))
    assert resp.succeeded


def test_txn_range_on_compacted_revision() -> None:
    s = store()
    s.compact(3)
    with pytest.raises(CompactedError):
        s.apply_txn(txn([], [p(b"c"), g(b"a", revision=2)]))
    assert s.revision == 4
    resp, _ = s.apply_txn(txn([], [p(b"c"), g(b"a", revision=3)]))
    assert resp.responses[1].response_range.kvs[0].version == 1


def test_txn_historical_range_after_own_write() -> None:
    s = store()
    resp, _ = s.apply_txn(txn([], [p(b"a", b"new"), g(b"a", revision=4)]))
    assert resp.responses[1].response_range.kvs[0].value == b"m"
    assert resp.responses[1].response_range.header.revision == 5


def test_txn_ignore_value_and_prev_kv() -> None:
    s = store()
    resp, events = s.apply_txn(txn([], [p(b"b", b"", ignore_value=True, lease=4, prev_kv=True)]))
    assert resp.responses[0].response_put.prev_kv.value == b"x"
    assert events[0].kv.value == b"x" and events[0].kv.lease == 4
    assert s.keys_for_lease(4) == {b"b"}


def test_too_many_ops_nested_budget() -> None:
    s = MvccStore(max_txn_ops=4)
    s.apply_txn(txn([], [p(b"a"), t([], [p(b"b")])]))
    with pytest.raises(TooManyOpsError):
        s.apply_txn(txn([], [p(b"a"), p(b"b"), t([], [p(b"c"), p(b"d"), p(b"e")])]))

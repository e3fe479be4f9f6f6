"""Request builders for the etcd v3 KV API: keys, ranges, txn compares and ops.

Keys and values accept `bytes` or `str` (encoded as UTF-8). `prefix_end`
implements etcd's rule for the end of a prefix range. Everything here is pure
(builds protobuf messages), so it is safe to use from any thread; the client
that sends these requests is asyncio-only.

Txn helpers::

    txn(
        compare=[compare_version("lock/a", "==", 0)],
        success=[op_put("lock/a", "me", lease=lease_id)],
        failure=[op_get("lock/a")],
    )
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from synod.etcd.etcdserverpb import rpc_pb2

__all__ = [
    "CompareOp",
    "KeyLike",
    "SortOrder",
    "SortSpec",
    "SortTarget",
    "compare_create_revision",
    "compare_lease",
    "compare_mod_revision",
    "compare_value",
    "compare_version",
    "delete_request",
    "is_read_only_txn",
    "key_range",
    "op_delete",
    "op_get",
    "op_put",
    "op_txn",
    "prefix_end",
    "put_request",
    "range_request",
    "to_bytes",
    "txn_request",
]

KeyLike = bytes | str
CompareOp = Literal["==", "!=", "<", ">"]
SortTarget = Literal["key", "version", "create", "mod", "value"]
SortOrder = Literal["none", "ascend", "descend"]
SortSpec = tuple[SortTarget, SortOrder]

_CMP: dict[str, rpc_pb2.Compare.CompareResult] = {
    "==": rpc_pb2.Compare.EQUAL,
    "!=": rpc_pb2.Compare.NOT_EQUAL,
    "<": rpc_pb2.Compare.LESS,
    ">": rpc_pb2.Compare.GREATER,
}
_SORT_TARGET: dict[str, rpc_pb2.RangeRequest.SortTarget] = {
    "key": rpc_pb2.RangeRequest.KEY,
    "version": rpc_pb2.RangeRequest.VERSION,
    "create": rpc_pb2.RangeRequest.CREATE,
    "mod": rpc_pb2.RangeRequest.MOD,
    "value": rpc_pb2.RangeRequest.VALUE,
}
_SORT_ORDER: dict[str, rpc_pb2.RangeRequest.SortOrder] = {
    "none": rpc_pb2.RangeRequest.NONE,
    "ascend": rpc_pb2.RangeRequest.ASCEND,
    "descend": rpc_pb2.RangeRequest.DESCEND,
}


def to_bytes(v: KeyLike) -> bytes:
    """bytes pass through; str is UTF-8 encoded."""
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    raise TypeError(f"expected bytes or str, got {type(v).__name__}")


def prefix_end(key: KeyLike) -> bytes:
    """The range_end covering every key with prefix `key` (etcd's GetPrefixRangeEnd).

    Increment the last byte that is < 0xff and drop everything after it; if
    every byte is 0xff (or the key is empty) return b"\\0", which etcd reads as
    "all keys >= key".
    """
    b = bytearray(to_bytes(key))
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


def key_range(key: KeyLike, range_end: KeyLike = b"", prefix: bool = False) -> tuple[bytes, bytes]:
    """(key, range_end) for a request. prefix=True on an empty key means "all keys"
    (etcd wants key=b"\\0", range_end=b"\\0" for that; an empty key is rejected)."""
    k = to_bytes(key)
    if prefix:
        if range_end:
            raise ValueError("pass either range_end or prefix=True, not both")
        if not k:
            return b"\0", b"\0"
        return k, prefix_end(k)
    return k, to_bytes(range_end)


def range_request(
    key: KeyLike,
    *,
    range_end: KeyLike = b"",
    prefix: bool = False,
    revision: int = 0,
    serializable: bool = False,
    keys_only: bool = False,
    count_only: bool = False,
    limit: int = 0,
    sort: SortSpec | None = None,
    min_mod_revision: int = 0,
    max_mod_revision: int = 0,
    min_create_revision: int = 0,
    max_create_revision: int = 0,
) -> rpc_pb2.RangeRequest:
    k, end = key_range(key, range_end, prefix)
    req = rpc_pb2.RangeRequest(
        key=k,
        range_end=end,
        revision=revision,
        serializable=serializable,
        keys_only=keys_only,
        count_only=count_only,
        limit=limit,
        min_mod_revision=min_mod_revision,
        max_mod_revision=max_mod_revision,
        min_create_revision=min_create_revision,
        max_create_revision=max_create_revision,
    )
    if sort is not None:
        target, order = sort
        req.sort_target = _SORT_TARGET[target]
        req.sort_order = _SORT_ORDER[order]
    return req


def put_request(
    key: KeyLike,
    value: KeyLike,
    *,
    lease: int = 0,
    prev_kv: bool = False,
    ignore_value: bool = False,
    ignore_lease: bool = False,
) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(
        key=to_bytes(key),
        value=to_bytes(value),
        lease=lease,
        prev_kv=prev_kv,
        ignore_value=ignore_value,
        ignore_lease=ignore_lease,
    )


def delete_request(
    key: KeyLike, *, range_end: KeyLike = b"", prefix: bool = False, prev_kv: bool = False
) -> rpc_pb2.DeleteRangeRequest:
    k, end = key_range(key, range_end, prefix)
    return rpc_pb2.DeleteRangeRequest(key=k, range_end=end, prev_kv=prev_kv)


# --- txn compares --------------------------------------------------------------


def _compare(
    key: KeyLike,
    op: CompareOp,
    target: rpc_pb2.Compare.CompareTarget,
    range_end: KeyLike,
    prefix: bool,
) -> rpc_pb2.Compare:
    if op not in _CMP:
        raise ValueError(f"compare operator must be one of {sorted(_CMP)}, got {op!r}")
    k, end = key_range(key, range_end, prefix)
    return rpc_pb2.Compare(key=k, result=_CMP[op], target=target, range_end=end)


def compare_value(
    key: KeyLike, op: CompareOp, value: KeyLike, *, range_end: KeyLike = b"", prefix: bool = False
) -> rpc_pb2.Compare:
    c = _compare(key, op, rpc_pb2.Compare.VALUE, range_end, prefix)
    c.value = to_bytes(value)
    return c


def compare_version(
    key: KeyLike, op: CompareOp, version: int, *, range_end: KeyLike = b"", prefix: bool = False
) -> rpc_pb2.Compare:
    """version 0 means "key does not exist"."""
    c = _compare(key, op, rpc_pb2.Compare.VERSION, range_end, prefix)
    c.version = version
    return c


def compare_create_revision(
    key: KeyLike, op: CompareOp, revision: int, *, range_end: KeyLike = b"", prefix: bool = False
) -> rpc_pb2.Compare:
    c = _compare(key, op, rpc_pb2.Compare.CREATE, range_end, prefix)
    c.create_revision = revision
    return c


def compare_mod_revision(
    key: KeyLike, op: CompareOp, revision: int, *, range_end: KeyLike = b"", prefix: bool = False
) -> rpc_pb2.Compare:
    c = _compare(key, op, rpc_pb2.Compare.MOD, range_end, prefix)
    c.mod_revision = revision
    return c


def compare_lease(
    key: KeyLike, op: CompareOp, lease: int, *, range_end: KeyLike = b"", prefix: bool = False
) -> rpc_pb2.Compare:
    c = _compare(key, op, rpc_pb2.Compare.LEASE, range_end, prefix)
    c.lease = lease
    return c


# --- txn ops -------------------------------------------------------------------


def op_get(
    key: KeyLike,
    *,
    range_end: KeyLike = b"",
    prefix: bool = False,
    revision: int = 0,
    keys_only: bool = False,
    count_only: bool = False,
    limit: int = 0,
    sort: SortSpec | None = None,
) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(
        request_range=range_request(
            key,
            range_end=range_end,
            prefix=prefix,
            revision=revision,
            keys_only=keys_only,
            count_only=count_only,
            limit=limit,
            sort=sort,
        )
    )


def op_put(
    key: KeyLike, value: KeyLike, *, lease: int = 0, prev_kv: bool = False
) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=put_request(key, value, lease=lease, prev_kv=prev_kv))


def op_delete(
    key: KeyLike, *, range_end: KeyLike = b"", prefix: bool = False, prev_kv: bool = False
) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(
        request_delete_range=delete_request(
            key, range_end=range_end, prefix=prefix, prev_kv=prev_kv
        )
    )


def txn_request(
    compare: Iterable[rpc_pb2.Compare] = (),
    success: Iterable[rpc_pb2.RequestOp] = (),
    failure: Iterable[rpc_pb2.RequestOp] = (),
) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))


def op_txn(
    compare: Iterable[rpc_pb2.Compare] = (),
    success: Iterable[rpc_pb2.RequestOp] = (),
    failure: Iterable[rpc_pb2.RequestOp] = (),
) -> rpc_pb2.RequestOp:
    """A nested txn as an op (etcd >= 3.3)."""
    return rpc_pb2.RequestOp(request_txn=txn_request(compare, success, failure))


def is_read_only_txn(txn: rpc_pb2.TxnRequest) -> bool:
    """True when no branch (recursively) writes: such a txn is safe to retry."""
    for op in (*txn.success, *txn.failure):
        which = op.WhichOneof("request")
        if which == "request_range":
            continue
        if which == "request_txn" and is_read_only_txn(op.request_txn):
            continue
        return False
    return True

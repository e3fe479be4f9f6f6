"""KV, txn and compaction through EtcdClient against a real server."""

from __future__ import annotations

import pytest
from etcd_harness import EtcdCluster

from synod.client.errors import Compacted, InvalidArgument
from synod.client.etcd import (
    EtcdClient,
    compare_create_revision,
    compare_mod_revision,
    compare_value,
    compare_version,
    op_delete,
    op_get,
    op_put,
    op_txn,
    prefix_end,
)


def test_prefix_end() -> None:
    assert prefix_end(b"a") == b"b"
    assert prefix_end("abc") == b"abd"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"a\xfe\xff\xff") == b"a\xff"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert prefix_end(b"") == b"\0"


async def test_put_get_delete(cluster1: EtcdCluster) -> None:
    async with EtcdClient(cluster1.endpoints) as c:
        r = await c.put("kv/a", "1")
        rev_a = r.header.revision
        await c.put(b"kv/b", b"2")
        await c.put("kv/c", "3")
        await c.put("kw/x", "outside")

        got = await c.get("kv/a")
        assert [(kv.key, kv.value) for kv in got.kvs] == [(b"kv/a", b"1")]
        assert got.kvs[0].create_revision == rev_a and got.kvs[0].version == 1

        got = await c.get("kv/", prefix=True)
        assert [kv.key for kv in got.kvs] == [b"kv/a", b"kv/b", b"kv/c"]
        assert got.count == 3

        got = await c.get("kv/a", range_end="kv/c")
        assert [kv.key for kv in got.kvs] == [b"kv/a", b"kv/b"]

        got = await c.get("kv/", prefix=True, sort=("key", "descend"), limit=2)
        assert [kv.key for kv in got.kvs] == [b"kv/c", b"kv/b"]
        assert got.more and got.count == 3

        got = await c.get("kv/", prefix=True, count_only=True)
        assert got.count == 3 and not got.kvs

        got = await c.get("kv/", prefix=True, keys_only=True, serializable=True)
        assert [kv.value for kv in got.kvs] == [b"", b"", b""]

        r = await c.put("kv/a", "1b", prev_kv=True)
        assert r.prev_kv.value == b"1"
        old = await c.get("kv/a", revision=rev_a)
        assert old.kvs[0].value == b"1"

        d = await c.delete("kv/", prefix=True, prev_kv=True)
        assert d.deleted == 3
        assert sorted(kv.key for kv in d.prev_kvs) == [b"kv/a", b"kv/b", b"kv/c"]
        assert (await c.get("kv/", prefix=True)).count == 0
        assert (await c.get("kw/x")).kvs[0].value == b"outside"

        with pytest.raises(ValueError):
            await c.get("kv/", prefix=True, range_end="kv0")


async def test_txn(cluster1: EtcdCluster) -> None:
    async with EtcdClient(cluster1.endpoints) as c:
        # create-if-absent
        t = await c.txn(
            [compare_version("lock", "==", 0)],
            [op_put("lock", "owner-1")],
            [op_get("lock")],
        )
        assert t.succeeded
        created = t.header.revision
        t = await c.txn(
            [compare_create_revision("lock", "==", 0)],
            [op_put("lock", "owner-2")],
            [op_get("lock")],
        )
        assert not t.succeeded
        assert t.responses[0].response_range.kvs[0].value == b"owner-1"

        t = await c.txn([compare_value("lock", "!=", "owner-1")], [op_delete("lock")], [])
        assert not t.succeeded
        t = await c.txn([compare_mod_revision("lock", ">", created - 1)], [], [])
        assert t.succeeded
        t = await c.txn([compare_mod_revision("lock", "<", created)], [], [])
        assert not t.succeeded

        # several ops, prev_kv, nested txn
        t = await c.txn(
            [compare_value("lock", "==", "owner-1")],
            [
                op_put("a", "1"),
                op_put("b", "2", prev_kv=True),
                op_txn([compare_version("lock", ">", 0)], [op_get("a")], []),
                # etcd evaluates every compare, nested ones included, against the
                # state *before* the outer txn: "a" does not exist for this compare.
                op_txn([compare_version("a", ">", 0)], [], [op_get("b")]),
                op_delete("lock", prev_kv=True),
            ],
        )
        assert t.succeeded
        nested = t.responses[2].response_txn
        # ...while reads inside the txn see the earlier ops' writes.
        assert nested.succeeded and nested.responses[0].response_range.kvs[0].value == b"1"
        nested = t.responses[3].response_txn
        assert not nested.succeeded
        assert nested.responses[0].response_range.kvs[0].value == b"2"
        assert t.responses[4].response_delete_range.prev_kvs[0].value == b"owner-1"
        assert (await c.get("lock")).count == 0

        with pytest.raises(InvalidArgument):  # duplicate key in one txn
            await c.txn([], [op_put("dup", "1"), op_put("dup", "2")])

        # read-only txn
        t = await c.txn([], [op_get("", prefix=True, count_only=True)])
        assert t.responses[0].response_range.count == 2


async def test_compact(cluster1: EtcdCluster) -> None:
    async with EtcdClient(cluster1.endpoints) as c:
        revs = [(await c.put("c", str(i))).header.revision for i in range(5)]
        await c.compact(revs[3])
        assert (await c.get("c", revision=revs[3])).kvs[0].value == b"3"
        with pytest.raises(Compacted):
            await c.get("c", revision=revs[1])
        with pytest.raises(Compacted):  # compacting again at the same revision
            await c.compact(revs[3])

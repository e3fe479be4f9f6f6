"""etcdctl (the real one, from Debian's etcd-client) against a Synod cluster."""

from __future__ import annotations

import json
import shutil

import pytest
from cluster_harness import LocalCluster, etcdctl

pytestmark = pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")


def test_put_get_delete(cluster: LocalCluster) -> None:
    assert etcdctl(cluster, "put", "foo", "bar").stdout == "OK\n"
    assert etcdctl(cluster, "get", "foo").stdout == "foo\nbar\n"
    assert etcdctl(cluster, "del", "foo").stdout == "1\n"
    assert etcdctl(cluster, "get", "foo").stdout == ""
    assert etcdctl(cluster, "del", "foo").stdout == "0\n"


def test_get_prefix_revision_serializable_and_json(cluster: LocalCluster) -> None:
    etcdctl(cluster, "put", "k1", "v1")
    etcdctl(cluster, "put", "k2", "v2")
    etcdctl(cluster, "put", "other", "x")
    etcdctl(cluster, "put", "k1", "v1b")
    assert etcdctl(cluster, "get", "--prefix", "k").stdout == "k1\nv1b\nk2\nv2\n"
    out = json.loads(etcdctl(cluster, "get", "k1", "-w", "json").stdout)
    kv = out["kvs"][0]
    assert kv["version"] == 2 and kv["create_revision"] < kv["mod_revision"]
    header = out["header"]
    assert header["revision"] == kv["mod_revision"] and header["raft_term"] >= 1
    assert header["cluster_id"] and header["member_id"]
    old = etcdctl(cluster, "get", "k1", f"--rev={kv['create_revision']}").stdout
    assert old == "k1\nv1\n"
    assert etcdctl(cluster, "get", "k2", "--consistency=s").stdout == "k2\nv2\n"


def test_txn_non_interactive(cluster: LocalCluster) -> None:
    etcdctl(cluster, "put", "foo", "baz")
    script = 'value("foo") = "baz"\n\nput t ok\n\nput t fail\n\n'
    assert etcdctl(cluster, "txn", "--interactive=false", stdin=script).stdout == "SUCCESS\n\nOK\n"
    assert etcdctl(cluster, "get", "t", "--print-value-only").stdout == "ok\n"
    script = 'value("foo") = "nope"\n\nput t ok2\n\nput t fail\n\n'
    assert etcdctl(cluster, "txn", "--interactive=false", stdin=script).stdout == "FAILURE\n\nOK\n"
    assert etcdctl(cluster, "get", "t", "--print-value-only").stdout == "fail\n"


def test_compaction_then_old_revision_is_out_of_range(cluster: LocalCluster) -> None:
    for i in range(4):
        etcdctl(cluster, "put", "c", str(i))
    rev = json.loads(etcdctl(cluster, "get", "c", "-w", "json").stdout)["header"]["revision"]
    assert etcdctl(cluster, "compaction", str(rev - 1)).stdout == f"compacted revision {rev - 1}\n"
    p = etcdctl(cluster, "get", "c", f"--rev={rev - 2}", check=False)
    assert p.returncode != 0
    assert "required revision has been compacted" in p.stderr
    assert etcdctl(cluster, "get", "c", f"--rev={rev - 1}").stdout == "c\n2\n"


def test_member_list(cluster: LocalCluster) -> None:
    def listed() -> list[str] | None:
        lines = etcdctl(cluster, "member", "list").stdout.splitlines()
        # client URLs appear once each member has published them through the log
        return lines if all(m.client_url in "".join(lines) for m in cluster.members) else None

    lines = cluster.wait(listed, 10, "every member to publish its client URL")
    assert len(lines) == 3
    for m in cluster.members:
        (line,) = [ln for ln in lines if f", {m.name}, " in ln]
        assert f"started, {m.name}, {m.peer_url}, {m.client_url}, false" in line


def test_endpoint_status(cluster: LocalCluster) -> None:
    etcdctl(cluster, "put", "a", "1")
    out = json.loads(etcdctl(cluster, "endpoint", "status", "-w", "json").stdout)
    assert len(out) == 3
    leaders = {e["Status"]["leader"] for e in out}
    assert len(leaders) == 1 and leaders.pop() in {e["Status"]["header"]["member_id"] for e in out}
    for e in out:
        st = e["Status"]
        assert st["version"] and st["raftTerm"] >= 1 and st["raftIndex"] >= 2
    table = etcdctl(cluster, "endpoint", "status").stdout.splitlines()
    assert len(table) == 3 and sum(", true, " in ln for ln in table) == 1


def test_bad_input_gets_etcd_errors(cluster: LocalCluster) -> None:
    p = etcdctl(cluster, "put", "", "x", check=False)
    assert p.returncode != 0 and "key is not provided" in p.stderr
    p = etcdctl(cluster, "get", "x", "--rev=1000000", check=False)
    assert p.returncode != 0 and "future revision" in p.stderr
    assert etcdctl(cluster, "put", "still", "serving").stdout == "OK\n"

"""Log compaction and InstallSnapshot (§7)."""

from __future__ import annotations

import pytest
from raft_harness import MT, Cluster, Message, msgs_of, new_node, take_ready

from synod.consensus.raft import ConfState, RaftSafetyError, Snapshot, SnapshotMeta
from synod.consensus.raft.progress import ProgressState


def snapshot_at(node, index, data=b"state"):
    meta = SnapshotMeta(
        index=index, term=node.raft.log.term(index), conf=node.raft.conf_state_at(index)
    )
    return Snapshot(meta, data)


def lagging_cluster():
    """Node 3 missed everything; the leader compacted its log past what node 3 has."""
    c = Cluster([1, 2, 3])
    c.isolate(3)
    c.elect(1)
    c[1].propose([b"a", b"b", b"c", b"d"])
    c.stabilize()
    at = c.committed(1)
    c[1].compact(snapshot_at(c[1], at))
    return c, at


def test_compact_drops_log_before_snapshot_index():
    node = new_node(1, [1])
    node.campaign()
    node.propose([b"a", b"b", b"c"])
    take_ready(node)
    take_ready(node)
    assert node.raft.log.applied == 4
    node.compact(snapshot_at(node, 3))
    assert node.raft.log.first_index() == 4
    assert node.raft.log.term(2) is None
    assert [e.data for e in node.raft.log.entries] == [b"c"]


def test_compact_keeps_the_last_entries_the_snapshot_covers():
    node = new_node(1, [1])
    node.campaign()
    node.propose([b"a", b"b", b"c", b"d"])
    take_ready(node)
    take_ready(node)
    assert node.raft.log.applied == 5
    node.compact(snapshot_at(node, 4), keep=2)
    log = node.raft.log
    assert log.snapshot.meta.index == 4
    assert log.first_index() == 3
    assert log.term(1) is None
    assert [e.data for e in log.entries] == [b"b", b"c", b"d"]
    assert [e.data for e in log.slice(3, 6, 1 << 20)] == [b"b", b"c", b"d"]
    # A later snapshot moves the start on, keeping the same number behind it.
    node.propose([b"e"])
    take_ready(node)
    take_ready(node)
    node.compact(snapshot_at(node, 6), keep=2)
    assert (log.snapshot.meta.index, log.first_index()) == (6, 5)
    # Keeping more than the log holds keeps it all.
    node.compact(snapshot_at(node, 6), keep=100)
    assert log.first_index() == 5


def test_follower_behind_by_fewer_than_the_kept_entries_gets_appends_not_a_snapshot():
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    c[1].propose([b"a", b"b", b"c", b"d"])
    c.stabilize()
    behind = c[3].raft.log.last_index()
    at = c.committed(1)
    c[1].compact(snapshot_at(c[1], at), keep=at - behind)
    assert c[1].raft.log.first_index() == behind + 1
    c.heal()
    c[1].propose([b"e"])  # its append reaches node 3 over a gap: rejected, then probed
    for _ in range(3):
        c.tick(1)
        c.stabilize()
    assert c.committed(3) == at + 1
    assert not c.sent_of(MT.SNAPSHOT)
    assert c.disks[3].snapshot.meta.index == 0  # caught up from entries
    assert [e.data for e in c.applied[3]][-5:] == [b"a", b"b", b"c", b"d", b"e"]


def test_compact_beyond_applied_is_refused():
    node = new_node(1, [1])
    node.campaign()
    node.propose([b"a"])
    rd = node.ready()  # nothing applied yet
    with pytest.raises(RaftSafetyError):
        node.compact(Snapshot(SnapshotMeta(1, 1, node.raft.conf)))
    node.advance(rd)


def test_compact_with_wrong_configuration_is_refused():
    node = new_node(1, [1])
    node.campaign()
    take_ready(node)
    take_ready(node)
    bad = Snapshot(SnapshotMeta(1, 1, ConfState(frozenset({1, 2}))))
    with pytest.raises(RaftSafetyError):
        node.compact(bad)


def test_follower_behind_first_index_is_sent_snapshot_and_reports_its_index():
    c, at = lagging_cluster()
    c.heal()
    c.tick(1)  # a heartbeat; node 3's answer makes the leader try to catch it up
    c.process_ready(1)
    c.deliver()
    c.process_ready(3)
    c.deliver()
    rd = c.process_ready(1)
    (snap_msg,) = msgs_of(rd.messages, MT.SNAPSHOT, to=3)
    assert snap_msg.snapshot.meta.index == at
    assert c[1].raft.prs[3].state == ProgressState.SNAPSHOT
    c.pending.clear()
    c[3].step(snap_msg)
    rd3 = c.process_ready(3)
    assert rd3.snapshot is snap_msg.snapshot
    assert rd3.hard_state.commit == at
    (resp,) = msgs_of(rd3.messages, MT.APPEND_RESP)
    assert not resp.reject and resp.index == at
    assert c[3].raft.log.first_index() == at + 1


def test_follower_catches_up_after_snapshot():
    c, at = lagging_cluster()
    c.heal()
    c[1].propose([b"after-snapshot"])
    for _ in range(3):
        c.tick(1)
        c.stabilize()
    assert c[3].raft.log.snapshot.meta.index == at
    assert c.committed(3) == c.committed(1)
    assert c[1].raft.prs[3].state == ProgressState.REPLICATE
    assert [e.data for e in c.applied[3]] == [b"after-snapshot"]
    assert c.disks[3].snapshot.data == b"state"


def test_snapshot_carries_configuration_to_follower():
    c, _ = lagging_cluster()
    c.heal()
    for _ in range(3):
        c.tick(1)
        c.stabilize()
    assert c[3].raft.conf.voters == frozenset({1, 2, 3})


def drive_to_snapshot_state(c):
    """Make the leader send node 3 a snapshot that is lost on the way."""
    leader = c[1]
    leader.step(Message(MT.HEARTBEAT_RESP, to=1, sender=3, term=leader.term))
    c.stabilize()  # node 3 is still cut off: the snapshot is dropped
    assert c.sent_of(MT.SNAPSHOT, to=3)
    pr = leader.raft.prs[3]
    assert pr.state == ProgressState.SNAPSHOT
    return pr


def test_report_snapshot_failure_returns_follower_to_probe():
    c, _ = lagging_cluster()
    pr = drive_to_snapshot_state(c)
    c[1].report_snapshot(3, ok=False)
    assert pr.state == ProgressState.PROBE
    assert pr.next == pr.match + 1
    # It waits for the follower's next answer before trying again, then retries.
    n = len(c.sent_of(MT.SNAPSHOT))
    c.heal()
    c.tick(1)
    c.stabilize()
    assert len(c.sent_of(MT.SNAPSHOT)) == n + 1
    assert c.committed(3) == c.committed(1)


def test_report_snapshot_success_resumes_after_snapshot_index():
    c, at = lagging_cluster()
    pr = drive_to_snapshot_state(c)
    c[1].report_snapshot(3, ok=True)
    assert pr.state == ProgressState.PROBE
    assert pr.next == at + 1


def test_no_appends_are_sent_while_snapshot_is_in_flight():
    c, _ = lagging_cluster()
    drive_to_snapshot_state(c)
    start = len(c.sent)
    c[1].propose([b"x"])
    c.stabilize()
    assert c.sent_of(MT.APPEND, to=3, since=start) == []


def test_snapshot_older_than_commit_is_ignored():
    node = new_node(2, [1, 2, 3], terms=[1, 1, 1], term=1, commit=3)
    snap = Snapshot(SnapshotMeta(2, 1, node.raft.conf))
    node.step(Message(MT.SNAPSHOT, to=2, sender=1, term=1, snapshot=snap))
    rd = take_ready(node)
    assert rd.snapshot is None
    (resp,) = rd.messages
    assert resp.index == 3
    assert node.raft.log.last_index() == 3


def test_restart_from_snapshot_on_disk():
    c, at = lagging_cluster()
    c.heal()
    for _ in range(3):
        c.tick(1)
        c.stabilize()
    node = c.restart(3)
    assert node.raft.log.snapshot.meta.index == at
    assert node.raft.log.committed >= at
    assert node.raft.conf.voters == frozenset({1, 2, 3})

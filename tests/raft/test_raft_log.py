"""RaftLog on its own, and restarting a node from what it persisted."""

from __future__ import annotations

import pytest
from raft_harness import MT, Cluster, Message, conf_snapshot, log_of, new_node, take_ready

from synod.consensus.raft import Entry, HardState, RaftSafetyError, Role, Snapshot, SnapshotMeta
from synod.consensus.raft.log import RaftLog


def make_log(terms, committed=0, applied=0, snapshot=None):
    snap = snapshot or Snapshot()
    return RaftLog(snap, log_of(terms, start=snap.meta.index + 1), committed, applied)


def test_find_conflict_by_term_skips_whole_terms():
    log = make_log([1, 1, 2, 2, 2, 4, 4])
    # The largest index <= 7 whose term is <= 3 is 5 (term 2).
    assert log.find_conflict_by_term(7, 3) == (5, 2)
    assert log.find_conflict_by_term(7, 4) == (7, 4)
    assert log.find_conflict_by_term(4, 1) == (2, 1)
    # Beyond the last index: start from the last index.
    assert log.find_conflict_by_term(100, 2) == (5, 2)
    # Nothing of a term that low: the start of the log (index 0, term 0).
    assert log.find_conflict_by_term(7, 0) == (0, 0)


def test_find_conflict_by_term_below_snapshot_reports_unknown_term():
    snap = Snapshot(SnapshotMeta(index=5, term=2))
    log = make_log([3, 3], committed=5, applied=5, snapshot=snap)
    assert log.find_conflict_by_term(3, 3) == (3, 0)
    assert log.find_conflict_by_term(7, 2) == (5, 2)


def test_maybe_append_rejects_on_prev_mismatch_and_leaves_log_alone():
    log = make_log([1, 2])
    assert log.maybe_append(2, 1, 0, [Entry(3, 3)]) is None
    assert log.maybe_append(5, 2, 0, [Entry(3, 6)]) is None
    assert [e.term for e in log.entries] == [1, 2]


def test_maybe_append_truncates_from_first_conflict_only():
    log = make_log([1, 1, 1, 1])
    last = log.maybe_append(1, 1, 0, [Entry(1, 2), Entry(2, 3)])
    assert last == 3
    assert [(e.index, e.term) for e in log.entries] == [(1, 1), (2, 1), (3, 2)]


def test_maybe_append_with_matching_entries_keeps_longer_tail():
    log = make_log([1, 1, 1, 1])
    assert log.maybe_append(1, 1, 0, [Entry(1, 2)]) == 2
    assert log.last_index() == 4  # a stale, shorter append never truncates


def test_maybe_append_commits_at_most_last_new_entry():
    log = make_log([1, 1, 1, 1, 1])
    assert log.maybe_append(1, 1, 10, [Entry(1, 2)]) == 2
    assert log.committed == 2


def test_slice_returns_at_least_one_entry_then_fills_budget():
    log = RaftLog(Snapshot(), [Entry(1, i, data=b"x" * 10) for i in range(1, 6)], 0, 0)
    # each entry costs len(data) + 16 = 26 bytes
    assert len(log.slice(1, 6, 0)) == 1
    assert len(log.slice(1, 6, 52)) == 2
    assert len(log.slice(1, 6, 77)) == 2
    assert len(log.slice(1, 6, 1 << 20)) == 5
    assert [e.index for e in log.slice(2, 4, 1 << 20)] == [2, 3]
    assert [e.index for e in log.slice(4, 100, 1 << 20)] == [4, 5]


def test_slice_into_snapshot_raises():
    snap = Snapshot(SnapshotMeta(index=3, term=1))
    log = make_log([1, 1], committed=3, applied=3, snapshot=snap)
    with pytest.raises(RaftSafetyError):
        log.slice(3, 5, 100)


def test_commit_to_beyond_last_index_raises():
    log = make_log([1, 1])
    with pytest.raises(RaftSafetyError):
        log.commit_to(3)


def test_commit_never_moves_backwards():
    log = make_log([1, 1, 1], committed=2)
    assert log.commit_to(1) is False
    assert log.committed == 2


def test_overwriting_committed_entry_raises():
    log = make_log([1, 1, 1], committed=2)
    with pytest.raises(RaftSafetyError):
        log.maybe_append(1, 1, 0, [Entry(2, 2)])
    with pytest.raises(RaftSafetyError):
        log.append([Entry(2, 2)])


def test_truncating_uncommitted_tail_moves_stable_back():
    log = make_log([1, 1, 1, 1], committed=1)
    assert log.stable == 4
    log.append([Entry(2, 3)])
    assert log.stable == 2
    assert log.unstable_entries() == (Entry(2, 3),)


def test_stable_to_ignores_acknowledgement_of_overwritten_entries():
    log = make_log([1, 1])
    log.append([Entry(1, 3)])
    log.append([Entry(2, 3)])  # the entry being persisted was replaced
    log.stable_to(3, 1)
    assert log.stable == 2
    log.stable_to(3, 2)
    assert log.stable == 3


def test_compact_drops_entries_up_to_snapshot_index():
    log = make_log([1, 1, 2, 2], committed=4, applied=3)
    log.compact(Snapshot(SnapshotMeta(index=3, term=2)))
    assert log.first_index() == 4
    assert log.term(3) == 2
    assert log.term(2) is None
    assert log.last_index() == 4


def test_compact_beyond_applied_raises():
    log = make_log([1, 1, 2, 2], committed=4, applied=2)
    with pytest.raises(RaftSafetyError):
        log.compact(Snapshot(SnapshotMeta(index=3, term=2)))


def test_is_up_to_date_compares_last_term_then_index():
    log = make_log([1, 2, 2])
    assert log.is_up_to_date(1, 3)  # higher last term wins even when shorter
    assert not log.is_up_to_date(10, 1)  # lower last term loses even when longer
    assert log.is_up_to_date(3, 2)
    assert not log.is_up_to_date(2, 2)


def test_restart_restores_term_vote_commit_and_log():
    node = new_node(1, [1, 2, 3], terms=[1, 1, 2], term=3, vote=2, commit=2)
    assert (node.term, node.raft.vote, node.raft.log.committed) == (3, 2, 2)
    assert node.role == Role.FOLLOWER
    assert node.raft.log.last_index() == 3
    rd = take_ready(node)
    # Nothing to re-persist, and entries committed but not applied are handed out.
    assert rd.hard_state is None and rd.entries == ()
    assert [e.index for e in rd.committed_entries] == [1, 2]


def test_restarted_node_still_refuses_second_vote_in_same_term():
    node = new_node(1, [1, 2, 3], terms=[1], term=3, vote=2)
    node.step(Message(MT.VOTE, to=1, sender=3, term=3, index=5, log_term=3))
    (resp,) = take_ready(node).messages
    assert resp.type == MT.VOTE_RESP and resp.reject


def test_restart_from_cluster_disk_keeps_committed_state():
    c = Cluster([1, 2, 3])
    c.elect(1)
    c[1].propose([b"a", b"b"])
    c.stabilize()
    before = (c[2].term, c[2].raft.vote, c.committed(2), c[2].raft.log.last_index())
    node = c.restart(2)
    assert (node.term, node.raft.vote, node.raft.log.committed, node.raft.log.last_index()) == (
        before
    )
    assert c.disks[2].hard_state == HardState(before[0], before[1], before[2])


def test_raftlog_rejects_inconsistent_start():
    with pytest.raises(RaftSafetyError):
        RaftLog(conf_snapshot([1]), [Entry(1, 2)], 0, 0)

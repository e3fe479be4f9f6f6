"""ReadIndex reads (thesis §6.4)."""

from __future__ import annotations

import pytest
from raft_harness import MT, Cluster, Message, msgs_of, new_node, take_ready

from synod.consensus.raft import ProposalDropped, ReadState, Role


def test_single_node_read_returns_immediately_at_commit_index():
    node = new_node(1, [1])
    node.campaign()
    take_ready(node)
    take_ready(node)  # no-op committed
    node.read_index(b"ctx")
    rd = take_ready(node)
    assert rd.read_states == (ReadState(node.raft.log.committed, b"ctx"),)
    assert rd.messages == ()


def test_single_node_read_before_first_commit_waits_for_it():
    node = new_node(1, [1])
    node.campaign()
    node.read_index(b"early")
    rd = take_ready(node)  # the no-op, not yet persisted when ready() was taken
    assert rd.read_states == ()
    rd = take_ready(node)
    assert rd.read_states == (ReadState(1, b"early"),)


def test_leader_releases_read_only_after_quorum_acknowledges_heartbeat_round():
    c = Cluster([1, 2, 3])
    leader = c.elect(1)
    leader.read_index(b"r1")
    rd = c.process_ready(1)
    hbs = msgs_of(rd.messages, MT.HEARTBEAT)
    assert sorted(m.to for m in hbs) == [2, 3]
    assert rd.read_states == ()
    c.pending.clear()
    # One follower's acknowledgement plus the leader itself is a quorum of three.
    c[2].step(hbs[0] if hbs[0].to == 2 else hbs[1])
    c.process_ready(2)
    (ack,) = [m for m in c.pending if m.type == MT.HEARTBEAT_RESP]
    c.pending.clear()
    assert c.read_states[1] == []
    c.deliver([ack])
    rd = c.process_ready(1)
    assert rd.read_states == (ReadState(c.committed(1), b"r1"),)


def test_read_index_is_the_commit_index_when_the_read_arrived():
    c = Cluster([1, 2, 3])
    leader = c.elect(1)
    leader.propose([b"w"])
    c.stabilize()
    at = c.committed(1)
    leader.read_index(b"r")
    c.stabilize()
    assert c.read_states[1] == [ReadState(at, b"r")]


def test_many_reads_before_one_ready_share_one_heartbeat_round():
    c = Cluster([1, 2, 3])
    leader = c.elect(1)
    start = len(c.sent)
    for i in range(10):
        leader.read_index(f"r{i}".encode())
    c.stabilize()
    assert len(c.sent_of(MT.HEARTBEAT, since=start)) == 2  # one per follower
    assert [rs.context for rs in c.read_states[1]] == [f"r{i}".encode() for i in range(10)]


def test_new_leader_defers_reads_until_its_noop_commits():
    c = Cluster([1, 2, 3])
    leader = c[1]
    leader.campaign()
    c.process_ready(1)  # vote requests out
    c.deliver()
    for i in (2, 3):
        c.process_ready(i)
    c.deliver()  # votes in: node 1 leads, its no-op is not yet committed
    assert leader.role == Role.LEADER
    noop = leader.raft.log.last_index()
    leader.read_index(b"deferred")
    rd = c.process_ready(1)
    assert msgs_of(rd.messages, MT.HEARTBEAT) == []  # no read round yet
    assert rd.read_states == ()
    c.stabilize()
    assert c.read_states[1] == [ReadState(noop, b"deferred")]


def test_follower_read_index_is_forwarded_and_answered_with_same_context():
    c = Cluster([1, 2, 3])
    c.elect(1)
    c[3].read_index(b"from-3")
    c.stabilize()
    (fwd,) = c.sent_of(MT.READ_INDEX)
    assert (fwd.sender, fwd.to, fwd.context) == (3, 1, b"from-3")
    (resp,) = c.sent_of(MT.READ_INDEX_RESP)
    assert resp.to == 3
    assert c.read_states[3] == [ReadState(c.committed(1), b"from-3")]
    assert c.read_states[1] == []


def test_read_index_without_leader_is_refused():
    node = new_node(1, [1, 2, 3])
    with pytest.raises(ProposalDropped):
        node.read_index(b"x")


def test_partitioned_leader_never_releases_a_read():
    c = Cluster([1, 2, 3], check_quorum=True, pre_vote=True)
    c.elect(1)
    c.isolate(1)
    c[1].read_index(b"stale-read")
    for _ in range(30):
        c.tick(1)
        c.stabilize()
    assert c.read_states[1] == []
    assert c[1].role == Role.FOLLOWER  # and it gave up leading


def test_deposed_leader_never_releases_read_after_heal():
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(1)
    c[2].campaign()
    c.stabilize()
    assert c[2].role == Role.LEADER
    c[1].read_index(b"old-leader-read")  # node 1 still believes it leads
    c.process_ready(1)
    c.heal()
    c.stabilize()
    for _ in range(5):
        c.tick_all()
    assert c.read_states[1] == []
    assert c[1].role == Role.FOLLOWER


def test_stale_heartbeat_ack_from_older_round_does_not_release_newer_read():
    c = Cluster([1, 2, 3])
    leader = c.elect(1)
    leader.tick()  # a periodic heartbeat with the current (old) round
    rd = c.process_ready(1)
    old_hbs = msgs_of(rd.messages, MT.HEARTBEAT)
    c.pending.clear()
    leader.read_index(b"new")
    c.process_ready(1)  # the new round's heartbeats are lost
    c.pending.clear()
    c.deliver(old_hbs)
    c.process_ready(2)
    c.process_ready(3)
    c.deliver()
    c.process_ready(1)
    assert c.read_states[1] == []


def test_read_responses_from_non_members_are_ignored():
    c = Cluster([1, 2, 3])
    leader = c.elect(1)
    leader.read_index(b"r")
    c.process_ready(1)
    c.pending.clear()
    leader.step(Message(MT.HEARTBEAT_RESP, to=1, sender=9, term=leader.term, read_round=99))
    c.process_ready(1)
    assert c.read_states[1] == []


def test_reads_arriving_while_a_round_is_on_its_way_share_the_next_round():
    c = Cluster([1, 2, 3])
    leader = c.elect(1)
    mark = len(c.sent)
    leader.read_index(b"r1")
    c.process_ready(1)
    round1, c.pending = c.pending, []
    leader.read_index(b"r2")
    leader.read_index(b"r3")
    # Round 1 is still travelling: r2 and r3 wait for it rather than start their own.
    assert c.process_ready(1) is None
    c.deliver(round1)
    c.stabilize()
    assert [rs.context for rs in c.read_states[1]] == [b"r1", b"r2", b"r3"]
    assert len(c.sent_of(MT.HEARTBEAT, since=mark)) == 4  # two rounds, two followers


def test_a_lost_read_round_is_confirmed_by_the_next_heartbeat():
    c = Cluster([1, 2, 3])
    leader = c.elect(1)
    leader.read_index(b"r1")
    c.process_ready(1)
    c.pending.clear()  # round 1's heartbeats are lost
    leader.read_index(b"r2")
    c.stabilize()
    assert c.read_states[1] == []
    c.tick(1)  # the regular heartbeat carries round 1 again
    c.stabilize()
    assert [rs.context for rs in c.read_states[1]] == [b"r1", b"r2"]


def test_a_round_lost_with_leadership_does_not_hold_up_the_next_term():
    c = Cluster([1, 2, 3])
    leader = c.elect(1)
    leader.read_index(b"old")
    c.process_ready(1)
    c.pending.clear()  # the round is lost, then so is the leadership
    c.elect(2)
    leader = c.elect(1)
    mark = len(c.sent)
    leader.read_index(b"new")
    rd = c.process_ready(1)
    assert rd is not None and {m.to for m in msgs_of(rd.messages, MT.HEARTBEAT)} == {2, 3}
    c.stabilize()
    assert [rs.context for rs in c.read_states[1]] == [b"new"]
    assert len(c.sent_of(MT.HEARTBEAT, since=mark)) == 2

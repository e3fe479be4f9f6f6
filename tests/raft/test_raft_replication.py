"""Figure 2 / §5.3, §5.4.2: log replication, commitment, and the Ready contract."""

from __future__ import annotations

import pytest
from raft_harness import (
    MT,
    Cluster,
    Message,
    elect_alone,
    log_of,
    msgs_of,
    new_node,
    replicating_cluster,
    take_ready,
)

from synod.consensus.raft import Entry, ProposalDropped, Role
from synod.consensus.raft.progress import ProgressState


def append(to, sender, term, index, log_term, entries=(), commit=0):
    return Message(
        MT.APPEND,
        to=to,
        sender=sender,
        term=term,
        index=index,
        log_term=log_term,
        entries=tuple(entries),
        commit=commit,
    )


def only_resp(node):
    (resp,) = msgs_of(take_ready(node).messages, MT.APPEND_RESP)
    return resp


# -- AppendEntries receiver ---------------------------------------------------------


def test_reply_false_to_append_when_term_is_stale():
    node = new_node(1, [1, 2, 3], terms=[1, 1], term=3)
    node.step(append(1, 2, term=2, index=2, log_term=1, entries=log_of([2], start=3)))
    resp = only_resp(node)
    # Not accepted: the stale leader learns the newer term instead.
    assert resp.term == 3
    assert node.raft.log.last_index() == 2


def test_reply_false_when_log_lacks_prev_entry():
    node = new_node(1, [1, 2, 3], terms=[1, 1], term=2)
    node.step(append(1, 2, term=2, index=4, log_term=2, entries=log_of([2], start=5)))
    resp = only_resp(node)
    assert resp.reject and resp.index == 4
    assert node.raft.log.last_index() == 2


def test_reply_false_when_prev_entry_term_differs():
    node = new_node(1, [1, 2, 3], terms=[1, 1, 1], term=2)
    node.step(append(1, 2, term=2, index=3, log_term=2, entries=log_of([2], start=4)))
    resp = only_resp(node)
    assert resp.reject
    assert [e.term for e in node.raft.log.entries] == [1, 1, 1]


def test_conflicting_entries_are_deleted_and_replaced():
    node = new_node(1, [1, 2, 3], terms=[1, 1, 2, 2], term=2, commit=1)
    node.step(append(1, 3, term=3, index=2, log_term=1, entries=[Entry(3, 3)]))
    resp = only_resp(node)
    assert not resp.reject and resp.index == 3
    assert [(e.index, e.term) for e in node.raft.log.entries] == [(1, 1), (2, 1), (3, 3)]


def test_new_entries_are_appended():
    node = new_node(1, [1, 2, 3], terms=[1], term=1)
    node.step(append(1, 2, term=1, index=1, log_term=1, entries=[Entry(1, 2), Entry(1, 3)]))
    rd = take_ready(node)
    assert [e.index for e in rd.entries] == [2, 3]
    (resp,) = rd.messages
    assert not resp.reject and resp.index == 3


def test_follower_commit_is_min_of_leader_commit_and_last_new_entry():
    node = new_node(1, [1, 2, 3], terms=[1, 1, 1, 1, 1], term=1)
    # The leader has committed 5, but this message only vouches for entries up to 3.
    node.step(append(1, 2, term=1, index=2, log_term=1, entries=[Entry(1, 3)], commit=5))
    assert node.raft.log.committed == 3
    node.step(append(1, 2, term=1, index=3, log_term=1, entries=[Entry(1, 4)], commit=2))
    assert node.raft.log.committed == 3  # never backwards


def test_follower_response_is_in_the_same_ready_as_the_entries_it_acknowledges():
    node = new_node(1, [1, 2, 3], term=1)
    node.step(append(1, 2, term=1, index=0, log_term=0, entries=[Entry(1, 1), Entry(1, 2)]))
    rd = node.ready()
    assert [e.index for e in rd.entries] == [1, 2]
    (resp,) = rd.messages
    assert resp.index == 2
    node.advance(rd)
    assert not node.has_ready()


def test_append_before_follower_commit_is_answered_with_commit_index():
    node = new_node(1, [1, 2, 3], terms=[1, 1, 1], term=1, commit=3)
    node.step(append(1, 2, term=1, index=1, log_term=1, entries=[Entry(1, 2)]))
    resp = only_resp(node)
    assert not resp.reject and resp.index == 3


# -- Leaders -------------------------------------------------------------------------


def test_leader_appends_noop_of_its_term_on_election():
    c = Cluster([1, 2, 3])
    leader = c.elect(1)
    last = leader.raft.log.entries[-1]
    assert (last.term, last.data) == (leader.term, b"")
    assert all(c.committed(i) == last.index for i in c.nodes)
    assert [e.index for e in c.applied[2]] == [last.index]


def test_leader_sends_heartbeats_every_heartbeat_tick():
    c = Cluster([1, 2, 3], heartbeat_tick=3, election_tick=10)
    leader = c.elect(1)
    start = len(c.sent)
    for _ in range(9):
        leader.tick()
        c.stabilize()
    hbs = c.sent_of(MT.HEARTBEAT, since=start)
    assert len(msgs_of(hbs, to=2)) == 3 and len(msgs_of(hbs, to=3)) == 3


def test_heartbeat_carries_commit_no_further_than_follower_match():
    c = Cluster([1, 2, 3])
    leader = c.elect(1)
    c.isolate(3)
    leader.propose([b"x"])
    c.stabilize()
    start = len(c.sent)
    leader.tick()
    c.process_ready(1)
    (hb3,) = c.sent_of(MT.HEARTBEAT, to=3, since=start)
    (hb2,) = c.sent_of(MT.HEARTBEAT, to=2, since=start)
    assert hb2.commit == c.committed(1)
    assert hb3.commit <= leader.raft.prs[3].match


def test_leader_decrements_next_and_retries_on_rejection():
    # Node 1 leads term 3 with a log the follower lacks part of.
    leader = new_node(1, [1, 2], terms=[1, 1, 2, 2], term=2, commit=2)
    elect_alone(leader, [2])
    take_ready(leader)
    pr = leader.raft.prs[2]
    assert pr.next == 5  # optimistic: right after our last entry before the no-op
    # Follower 2 only has entries 1..2: reject index 4 with a hint at 2.
    leader.step(
        Message(
            MT.APPEND_RESP, to=1, sender=2, term=3, index=4, reject=True, reject_hint=2, hint_term=1
        )
    )
    (retry,) = msgs_of(take_ready(leader).messages, MT.APPEND, to=2)
    assert retry.index == 2 and retry.log_term == 1
    assert [e.index for e in retry.entries] == [3, 4, 5]


def test_follower_log_is_repaired_to_match_leader():
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    for i in range(5):
        c[1].propose([f"v{i}".encode()])
        c.stabilize()
    c.heal()
    for _ in range(10):  # streamed appends were lost: re-probed within election_tick
        c[1].tick()
        c.stabilize()
    logs = {i: [(e.index, e.term) for e in c[i].raft.log.entries] for i in c.nodes}
    assert logs[1] == logs[2] == logs[3]
    assert c.committed(3) == c.committed(1)


def test_leader_does_not_count_own_entry_for_commit_until_persisted():
    node = new_node(1, [1])
    node.campaign()
    take_ready(node)  # the no-op
    take_ready(node)  # its commit
    committed = node.raft.log.committed
    node.propose([b"x"])
    rd = node.ready()
    assert [e.data for e in rd.entries] == [b"x"]
    assert node.raft.log.committed == committed  # not persisted yet
    assert rd.committed_entries == ()
    node.advance(rd)
    assert node.raft.log.committed == committed + 1
    rd = take_ready(node)
    assert [e.data for e in rd.committed_entries] == [b"x"]


def test_commit_only_by_counting_replicas_of_current_term_entry_figure_8():
    # Entry 2 (term 2) is on the leader and node 2: a majority of three, but it is
    # of an older term, so the new leader (term 4) must not commit it by counting.
    leader = new_node(1, [1, 2, 3], terms=[1, 2], term=3, commit=1)
    elect_alone(leader, [3])
    assert leader.term == 4
    rd = leader.ready()  # carries the no-op (index 3, term 4); not persisted yet
    assert [(e.index, e.term) for e in rd.entries] == [(3, 4)]
    # Node 2 acknowledges having everything up to the no-op, but the leader's
    # own copy of it is not persisted; node 2 and the leader only share entry 2.
    leader.step(Message(MT.APPEND_RESP, to=1, sender=2, term=4, index=2))
    assert leader.raft.prs[2].match == 2
    assert leader.raft.log.committed == 1, "an old-term entry was committed by counting"
    # Once an entry of term 4 is on a majority, it and everything before it commit.
    leader.advance(rd)
    leader.step(Message(MT.APPEND_RESP, to=1, sender=2, term=4, index=3))
    assert leader.raft.log.committed == 3


def test_old_term_entry_commits_indirectly_with_current_term_entry():
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.isolate(3)
    c[1].propose([b"a"])
    c.stabilize()
    c.heal()
    # Node 2 takes over in a new term; entry 'a' (old term) commits through its no-op.
    c.isolate(1)
    c[2].campaign()
    c.stabilize()
    assert c[2].role == Role.LEADER
    assert b"a" in [e.data for e in c.applied[3]]


def test_commit_is_broadcast_to_followers():
    c = Cluster([1, 2, 3])
    c.elect(1)
    c[1].propose([b"z"])
    c.stabilize()
    for i in (1, 2, 3):
        assert [e.data for e in c.applied[i]][-1] == b"z"


def test_follower_forwards_proposals_to_leader():
    c = Cluster([1, 2, 3])
    c.elect(1)
    c[2].propose([b"via-follower"])
    c.stabilize()
    (fwd,) = c.sent_of(MT.PROPOSE)
    assert fwd.sender == 2 and fwd.to == 1
    assert b"via-follower" in [e.data for e in c.applied[3]]


def test_proposal_without_known_leader_is_dropped():
    node = new_node(1, [1, 2, 3])
    with pytest.raises(ProposalDropped):
        node.propose([b"x"])


# -- Batching, pipelining, flow control -------------------------------------------------


def test_many_proposals_between_readies_go_out_as_one_append_per_follower():
    c = replicating_cluster()
    for i in range(20):
        c[1].propose([f"p{i}".encode()])
    rd = c.process_ready(1)
    appends = msgs_of(rd.messages, MT.APPEND)
    assert sorted(m.to for m in appends) == [2, 3]
    assert all(len(m.entries) == 20 for m in appends)


def test_max_size_per_msg_bounds_entries_per_message():
    c = replicating_cluster(max_size_per_msg=60)  # 26 bytes per 10-byte entry
    c[1].propose([b"0123456789"] * 6)
    rd = c.process_ready(1)
    (m2,) = msgs_of(rd.messages, MT.APPEND, to=2)
    assert len(m2.entries) == 2


def test_max_size_per_msg_always_sends_at_least_one_entry():
    c = replicating_cluster(max_size_per_msg=1)
    c[1].propose([b"a much larger entry than the limit"] * 3)
    rd = c.process_ready(1)
    (m2,) = msgs_of(rd.messages, MT.APPEND, to=2)
    assert len(m2.entries) == 1
    c.stabilize()
    assert c.committed(2) == c[1].raft.log.last_index()


def test_replicate_state_pipelines_appends_up_to_max_inflight():
    c = replicating_cluster(max_inflight_msgs=3)
    sent = []
    for i in range(5):
        c[1].propose([f"p{i}".encode()])
        rd = c.process_ready(1)  # no delivery: nothing is acknowledged
        sent += msgs_of(rd.messages, MT.APPEND, to=2)
    assert len(sent) == 3  # then the window is full and it pauses
    assert [m.entries[0].data for m in sent] == [b"p0", b"p1", b"p2"]
    assert c[1].raft.prs[2].state == ProgressState.REPLICATE


def test_ack_frees_window_slots():
    c = replicating_cluster(max_inflight_msgs=2)
    c.pending.clear()
    held = []
    for i in range(4):
        c[1].propose([f"p{i}".encode()])
        rd = c.process_ready(1)
        held += msgs_of(rd.messages, MT.APPEND, to=2)
    c.pending.clear()
    assert len(held) == 2
    # Node 2 gets the first append and acknowledges it.
    c[2].step(held[0])
    c.process_ready(2)
    acks = [m for m in c.pending if m.type == MT.APPEND_RESP]
    c.pending.clear()
    c.deliver(acks)
    rd = c.process_ready(1)
    (more,) = msgs_of(rd.messages, MT.APPEND, to=2)
    assert [e.data for e in more.entries] == [b"p2", b"p3"]


def test_rejection_in_replicate_sends_follower_to_probe_one_message_at_a_time():
    c = replicating_cluster()
    c.pending.clear()
    leader = c[1]
    pr = leader.raft.prs[2]
    leader.step(
        Message(
            MT.APPEND_RESP,
            to=1,
            sender=2,
            term=leader.term,
            index=pr.next - 1 + 5,
            reject=True,
            reject_hint=pr.match,
            hint_term=leader.term,
        )
    )
    # A rejection beyond match (e.g. the follower lost its unsynced tail).
    assert pr.state == ProgressState.PROBE
    rd = c.process_ready(1)
    assert len(msgs_of(rd.messages, MT.APPEND, to=2)) == 1
    for i in range(3):
        leader.propose([f"q{i}".encode()])
        rd = c.process_ready(1)
        assert msgs_of(rd.messages, MT.APPEND, to=2) == []  # waits for the answer
        assert len(msgs_of(rd.messages, MT.APPEND, to=3)) == 1


def test_fast_backtracking_repairs_divergent_tail_in_o_terms_round_trips():
    # Node 2 led term 2 and appended 50 entries nobody else got; nodes 1 and 3
    # moved on in term 3. Node 1 then leads term 4.
    n1 = new_node(1, [1, 2, 3], terms=[1] + [3] * 10, term=3, commit=1)
    n2 = new_node(2, [1, 2, 3], terms=[1] + [2] * 50, term=3, commit=1)
    n3 = new_node(3, [1, 2, 3], terms=[1] + [3] * 10, term=3, commit=1)
    c = Cluster([])
    for i, n in ((1, n1), (2, n2), (3, n3)):
        c.add_node(i, n)
    c.elect(1)
    appends_to_2 = c.sent_of(MT.APPEND, to=2)
    rejects = [m for m in c.sent_of(MT.APPEND_RESP) if m.sender == 2 and m.reject]
    assert len(rejects) <= 2, rejects
    assert len(appends_to_2) <= 3
    assert [(e.index, e.term) for e in n2.raft.log.entries] == [
        (e.index, e.term) for e in n1.raft.log.entries
    ]


def test_fast_backtracking_for_follower_with_short_log():
    n1 = new_node(1, [1, 2], terms=[1] * 40, term=1, commit=1)
    n2 = new_node(2, [1, 2], terms=[1], term=1, commit=1)
    c = Cluster([])
    c.add_node(1, n1)
    c.add_node(2, n2)
    c.elect(1)
    rejects = [m for m in c.sent_of(MT.APPEND_RESP) if m.reject]
    assert len(rejects) == 1
    assert n2.raft.log.last_index() == n1.raft.log.last_index()


def test_stalled_replicate_follower_is_probed_again_after_election_tick():
    c = replicating_cluster(election_tick=10)
    c.cut(1, 2)
    c[1].propose([b"lost"])
    c.stabilize()
    assert c[1].raft.prs[2].state == ProgressState.REPLICATE
    c.heal()
    for _ in range(10):
        c[1].tick()
    c.stabilize()
    assert c.committed(2) == c.committed(1) == c[1].raft.log.last_index()
    assert b"lost" in [e.data for e in c.applied[2]]


# -- what may leave before the disk write (thesis §10.2.1) ----------------------------


def test_leader_appends_may_be_sent_before_its_own_entries_are_persisted():
    c = Cluster([1, 2, 3])
    leader = c.elect(1)
    leader.propose([b"x"])
    rd = leader.ready()
    early, late = rd.split_messages()
    assert [e.data for e in rd.entries] == [b"x"]
    x = rd.entries[-1].index
    assert {m.to for m in msgs_of(early, MT.APPEND)} == {2, 3}
    assert all(m.entries[-1].index == x for m in early)
    assert late == ()
    # ... while the leader counts itself towards a commit only once persisted:
    # one follower's acknowledgement is not a quorum until then.
    leader.step(Message(MT.APPEND_RESP, to=1, sender=2, term=leader.term, index=x))
    assert leader.raft.log.committed < x
    leader.advance(rd)
    assert leader.raft.log.committed == x


def test_follower_acknowledgement_waits_for_the_disk_write():
    node = new_node(1, [1, 2, 3], term=1)
    node.step(append(1, 2, term=1, index=0, log_term=0, entries=[Entry(1, 1)]))
    early, late = node.ready().split_messages()
    assert early == ()
    assert [m.type for m in late] == [MT.APPEND_RESP]


def test_nothing_leaves_before_a_new_term_or_vote_is_persisted():
    node = new_node(1, [1, 2, 3])
    node.campaign()
    rd = node.ready()
    assert rd.term_changed
    early, late = rd.split_messages()
    assert early == ()
    assert {m.type for m in late} == {MT.VOTE}
    node.advance(rd)
    # A lone voter becomes leader in the Ready that raises its term: its first
    # appends (to a learner here) must wait for that term to be on disk too.
    alone = new_node(1, [1], learners=[2])
    alone.campaign()
    rd = alone.ready()
    assert alone.role == Role.LEADER and rd.term_changed
    early, late = rd.split_messages()
    assert early == () and msgs_of(late, MT.APPEND, to=2)

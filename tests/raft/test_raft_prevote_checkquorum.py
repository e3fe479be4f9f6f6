"""Pre-vote (thesis §9.6) and check-quorum / leader stickiness (thesis §4.2.3, §6.2)."""

from __future__ import annotations

from raft_harness import MT, Cluster, Message, msgs_of, new_node, take_ready, tick

from synod.consensus.raft import HardState, Role

# -- pre-vote ---------------------------------------------------------------------------


def test_partitioned_node_that_rejoins_does_not_bump_cluster_term():
    c = Cluster([1, 2, 3], pre_vote=True, check_quorum=False)
    c.elect(1)
    term = c[1].term
    c.isolate(3)
    c[1].propose([b"while-away"])  # node 3's log falls behind
    c.stabilize()
    for _ in range(100):
        c.tick(3)
        c.stabilize()
    assert c[3].term == term  # it never got past the pre-election
    c.heal()
    for _ in range(30):
        c.tick_all()
    assert c.leaders() == [1]
    assert c.terms() == {1: term, 2: term, 3: term}
    assert b"while-away" in [e.data for e in c.applied[3]]


def test_without_pre_vote_rejoining_node_disrupts_the_term():
    # The contrast to the test above: what pre-vote protects against.
    c = Cluster([1, 2, 3], pre_vote=False, check_quorum=False)
    c.elect(1)
    term = c[1].term
    c.isolate(3)
    for _ in range(30):
        c.tick(3)
        c.stabilize()
    assert c[3].term > term
    c.heal()
    c.tick(1)
    c.stabilize()
    assert c[1].term > term


def test_pre_vote_request_changes_neither_term_nor_vote_of_voter():
    node = new_node(1, [1, 2, 3], terms=[1], term=2, vote=3, pre_vote=True)
    node.step(Message(MT.PRE_VOTE, to=1, sender=2, term=3, index=1, log_term=1))
    rd = take_ready(node)
    (resp,) = rd.messages
    assert resp.type == MT.PRE_VOTE_RESP and not resp.reject and resp.term == 3
    assert rd.hard_state is None
    assert (node.term, node.raft.vote) == (2, 3)


def test_pre_vote_denied_to_less_up_to_date_log():
    node = new_node(1, [1, 2, 3], terms=[1, 2], term=2, pre_vote=True)
    node.step(Message(MT.PRE_VOTE, to=1, sender=2, term=3, index=1, log_term=1))
    (resp,) = take_ready(node).messages
    assert resp.reject
    assert node.term == 2


def test_pre_candidate_keeps_term_and_vote_while_asking():
    node = new_node(1, [1, 2, 3], terms=[1], term=1, vote=2, pre_vote=True)
    node.campaign()
    rd = take_ready(node)
    assert node.role == Role.PRE_CANDIDATE
    assert rd.hard_state is None and (node.term, node.raft.vote) == (1, 2)
    reqs = msgs_of(rd.messages, MT.PRE_VOTE)
    assert sorted(m.to for m in reqs) == [2, 3] and all(m.term == 2 for m in reqs)


def test_pre_candidate_that_wins_runs_a_real_election():
    node = new_node(1, [1, 2, 3], terms=[1], term=1, pre_vote=True)
    node.campaign()
    take_ready(node)
    node.step(Message(MT.PRE_VOTE_RESP, to=1, sender=2, term=2))
    assert node.role == Role.CANDIDATE
    rd = take_ready(node)
    assert rd.hard_state == HardState(term=2, vote=1, commit=0)
    assert sorted(m.to for m in msgs_of(rd.messages, MT.VOTE)) == [2, 3]
    node.step(Message(MT.VOTE_RESP, to=1, sender=3, term=2))
    assert node.role == Role.LEADER and node.term == 2


def test_pre_candidate_that_loses_returns_to_follower_in_same_term():
    node = new_node(1, [1, 2, 3], terms=[1], term=1, pre_vote=True)
    node.campaign()
    node.step(Message(MT.PRE_VOTE_RESP, to=1, sender=2, term=1, reject=True))
    node.step(Message(MT.PRE_VOTE_RESP, to=1, sender=3, term=1, reject=True))
    assert node.role == Role.FOLLOWER and node.term == 1


def test_cluster_with_pre_vote_elects_by_ticking():
    c = Cluster([1, 2, 3], pre_vote=True, check_quorum=True)
    for _ in range(60):
        c.tick_all()
        if c.leaders():
            break
    assert len(c.leaders()) == 1
    assert set(c.terms().values()) == {1}


# -- check-quorum -------------------------------------------------------------------


def test_leader_without_quorum_steps_down_within_two_election_ticks():
    c = Cluster([1, 2, 3], pre_vote=True, check_quorum=True, election_tick=10)
    c.elect(1)
    for _ in range(10):  # an established leader with active followers
        c.tick_all()
    c.isolate(1)
    for t in range(1, 21):
        c.tick(1)
        c.stabilize()
        if t < 10:
            assert c[1].role == Role.LEADER, t
    assert c[1].role == Role.FOLLOWER
    assert c[1].leader == 0


def test_leader_with_quorum_keeps_leading():
    c = Cluster([1, 2, 3], pre_vote=True, check_quorum=True, election_tick=10)
    c.elect(1)
    c.isolate(3)  # one follower down is fine
    for _ in range(100):
        c.tick(1)
        c.stabilize()
    assert c[1].role == Role.LEADER


def test_follower_in_lease_ignores_higher_term_vote_request():
    node = new_node(1, [1, 2, 3], terms=[1], term=1, check_quorum=True)
    node.step(Message(MT.HEARTBEAT, to=1, sender=2, term=1))
    take_ready(node)
    node.step(Message(MT.VOTE, to=1, sender=3, term=2, index=5, log_term=1))
    rd = take_ready(node)
    assert rd.messages == ()
    assert node.term == 1 and node.leader == 2


def test_follower_in_lease_ignores_pre_vote_request():
    node = new_node(1, [1, 2, 3], terms=[1], term=1, check_quorum=True, pre_vote=True)
    node.step(Message(MT.HEARTBEAT, to=1, sender=2, term=1))
    take_ready(node)
    node.step(Message(MT.PRE_VOTE, to=1, sender=3, term=2, index=5, log_term=1))
    assert take_ready(node).messages == ()


def test_follower_in_lease_honours_transfer_vote_request():
    node = new_node(1, [1, 2, 3], terms=[1], term=1, check_quorum=True)
    node.step(Message(MT.HEARTBEAT, to=1, sender=2, term=1))
    take_ready(node)
    node.step(Message(MT.VOTE, to=1, sender=3, term=2, index=1, log_term=1, transfer=True))
    (resp,) = take_ready(node).messages
    assert resp.type == MT.VOTE_RESP and not resp.reject
    assert node.term == 2 and node.raft.vote == 3


def test_follower_votes_once_lease_has_expired():
    node = new_node(1, [1, 2, 3], terms=[1], term=1, check_quorum=True, election_tick=10)
    node.step(Message(MT.HEARTBEAT, to=1, sender=2, term=1))
    take_ready(node)
    tick(node, 10)
    node.step(Message(MT.VOTE, to=1, sender=3, term=2, index=1, log_term=1))
    resp = msgs_of(take_ready(node).messages, MT.VOTE_RESP)
    assert resp and not resp[0].reject


def test_stale_leader_learns_new_term_from_append_response_and_steps_down():
    c = Cluster([1, 2, 3], pre_vote=True, check_quorum=True)
    c.elect(1)
    c.isolate(1)
    old_term = c[1].term
    for _ in range(30):
        c.tick(2)
        c.tick(3)
        c.stabilize()
        if c[2].role == Role.LEADER or c[3].role == Role.LEADER:
            break
    (new_leader,) = [i for i in (2, 3) if c[i].role == Role.LEADER]
    assert c[1].role == Role.LEADER and c[1].term == old_term  # not yet stepped down
    c.heal()
    c[1].propose([b"stale"])  # it still believes it leads
    c.stabilize()
    assert c[1].role == Role.FOLLOWER and c[1].term == c[new_leader].term
    c.tick_all(3)
    assert c.leaders() == [new_leader]
    assert all(b"stale" not in [e.data for e in c.applied[i]] for i in c.nodes)

"""Figure 2 / §5.2, §5.4.1: terms, votes and elections."""

from __future__ import annotations

from raft_harness import MT, Cluster, Message, msgs_of, new_node, take_ready, tick

from synod.consensus.raft import NONE, HardState, Role


def vote_req(to, sender, term, index=0, log_term=0, pre=False, transfer=False):
    t = MT.PRE_VOTE if pre else MT.VOTE
    return Message(
        t, to=to, sender=sender, term=term, index=index, log_term=log_term, transfer=transfer
    )


# -- All servers -------------------------------------------------------------------


def test_follower_increments_term_and_reverts_on_higher_term_message():
    node = new_node(1, [1, 2, 3], term=2)
    node.step(Message(MT.HEARTBEAT, to=1, sender=2, term=5))
    assert node.term == 5
    assert node.role == Role.FOLLOWER
    assert node.leader == 2


def test_leader_steps_down_on_message_with_higher_term():
    c = Cluster([1, 2, 3])
    leader = c.elect(1)
    term = leader.term
    leader.step(Message(MT.APPEND_RESP, to=1, sender=3, term=term + 3))
    assert leader.role == Role.FOLLOWER
    assert leader.term == term + 3
    assert leader.leader == NONE


def test_candidate_steps_down_on_higher_term_vote_response():
    node = new_node(1, [1, 2, 3], term=1)
    node.campaign()
    assert node.role == Role.CANDIDATE and node.term == 2
    node.step(Message(MT.VOTE_RESP, to=1, sender=2, term=7, reject=True))
    assert node.role == Role.FOLLOWER and node.term == 7


def test_stale_term_append_is_answered_with_current_term():
    node = new_node(1, [1, 2, 3], term=5)
    node.step(Message(MT.APPEND, to=1, sender=2, term=3, index=0, log_term=0))
    (resp,) = take_ready(node).messages
    assert resp.type == MT.APPEND_RESP and resp.term == 5 and resp.to == 2
    assert node.term == 5 and node.leader == NONE


# -- RequestVote receiver ------------------------------------------------------------


def test_reply_false_to_vote_request_with_stale_term():
    node = new_node(1, [1, 2, 3], term=5)
    node.step(vote_req(1, 2, term=4, index=10, log_term=4))
    rd = take_ready(node)
    assert all(m.reject for m in msgs_of(rd.messages, MT.VOTE_RESP))  # no grant (may be silent)
    assert node.raft.vote == NONE and node.term == 5


def test_vote_granted_at_most_once_per_term():
    node = new_node(1, [1, 2, 3], term=1)
    node.step(vote_req(1, 2, term=2))
    node.step(vote_req(1, 3, term=2))
    node.step(vote_req(1, 2, term=2))  # the same candidate again: still yes
    resps = take_ready(node).messages
    assert [(m.to, m.reject) for m in resps] == [(2, False), (3, True), (2, False)]
    assert node.raft.vote == 2


def test_vote_denied_to_candidate_with_lower_last_log_term():
    node = new_node(1, [1, 2, 3], terms=[1, 2], term=2)
    # The candidate's log is longer but ends in an older term.
    node.step(vote_req(1, 2, term=3, index=5, log_term=1))
    (resp,) = take_ready(node).messages
    assert resp.reject
    assert node.term == 3  # the term was still adopted
    assert node.raft.vote == NONE


def test_vote_denied_to_candidate_with_same_last_term_but_shorter_log():
    node = new_node(1, [1, 2, 3], terms=[1, 2, 2], term=2)
    node.step(vote_req(1, 2, term=3, index=2, log_term=2))
    (resp,) = take_ready(node).messages
    assert resp.reject


def test_vote_granted_to_candidate_with_at_least_as_up_to_date_log():
    node = new_node(1, [1, 2, 3], terms=[1, 2, 2], term=2)
    node.step(vote_req(1, 2, term=3, index=3, log_term=2))
    (resp,) = take_ready(node).messages
    assert not resp.reject and resp.term == 3


def test_vote_is_in_the_same_ready_as_the_hard_state_recording_it():
    node = new_node(1, [1, 2, 3], term=1)
    node.step(vote_req(1, 2, term=2))
    rd = node.ready()
    (resp,) = rd.messages
    assert not resp.reject
    # The caller must persist hard_state before sending the messages of this Ready.
    assert rd.hard_state == HardState(term=2, vote=2, commit=0)
    assert rd.must_sync()


def test_follower_that_knows_a_leader_does_not_vote_in_its_term():
    node = new_node(1, [1, 2, 3], term=2)
    node.step(Message(MT.HEARTBEAT, to=1, sender=2, term=2))
    take_ready(node)
    node.step(vote_req(1, 3, term=2))
    (resp,) = take_ready(node).messages
    assert resp.reject


# -- Candidates ----------------------------------------------------------------------


def test_candidate_increments_term_votes_for_itself_and_requests_votes():
    node = new_node(1, [1, 2, 3], terms=[1, 1], term=1)
    node.campaign()
    rd = take_ready(node)
    assert node.role == Role.CANDIDATE
    assert rd.hard_state == HardState(term=2, vote=1, commit=0)
    reqs = msgs_of(rd.messages, MT.VOTE)
    assert sorted(m.to for m in reqs) == [2, 3]
    assert all((m.term, m.index, m.log_term) == (2, 2, 1) for m in reqs)


def test_candidate_becomes_leader_with_majority_of_votes():
    node = new_node(1, [1, 2, 3, 4, 5], term=1)
    node.campaign()
    node.step(Message(MT.VOTE_RESP, to=1, sender=2, term=2))
    assert node.role == Role.CANDIDATE  # 2 of 5
    node.step(Message(MT.VOTE_RESP, to=1, sender=3, term=2, reject=True))
    assert node.role == Role.CANDIDATE
    node.step(Message(MT.VOTE_RESP, to=1, sender=4, term=2))
    assert node.role == Role.LEADER and node.leader == 1 and node.term == 2


def test_candidate_reverts_to_follower_when_majority_rejects():
    node = new_node(1, [1, 2, 3], term=1)
    node.campaign()
    node.step(Message(MT.VOTE_RESP, to=1, sender=2, term=2, reject=True))
    node.step(Message(MT.VOTE_RESP, to=1, sender=3, term=2, reject=True))
    assert node.role == Role.FOLLOWER and node.term == 2


def test_candidate_steps_down_on_append_from_leader_of_its_term():
    node = new_node(1, [1, 2, 3], term=1)
    node.campaign()
    node.step(Message(MT.APPEND, to=1, sender=3, term=2, index=0, log_term=0))
    assert node.role == Role.FOLLOWER
    assert node.leader == 3 and node.term == 2
    (resp,) = msgs_of(take_ready(node).messages, MT.APPEND_RESP)
    assert not resp.reject


def test_candidate_starts_new_election_on_timeout_after_split_vote():
    node = new_node(1, [1, 2, 3], term=1, election_tick=10)
    node.campaign()
    take_ready(node)
    assert node.term == 2
    node.step(Message(MT.VOTE_RESP, to=1, sender=2, term=2, reject=True))
    assert node.role == Role.CANDIDATE  # no decision yet: 1 yes, 1 no, 1 missing
    tick(node, 2 * 10)  # past any randomized timeout
    rd = take_ready(node)
    assert node.role == Role.CANDIDATE and node.term == 3
    assert sorted(m.to for m in msgs_of(rd.messages, MT.VOTE)) == [2, 3]
    assert all(m.term == 3 for m in msgs_of(rd.messages, MT.VOTE))


def test_follower_starts_election_after_election_timeout_without_leader():
    node = new_node(1, [1, 2, 3], term=1, election_tick=10)
    tick(node, 9)
    assert node.role == Role.FOLLOWER  # never before election_tick
    tick(node, 11)
    assert node.role == Role.CANDIDATE and node.term == 2


def test_heartbeats_from_leader_postpone_election():
    node = new_node(1, [1, 2, 3], term=1, election_tick=10)
    for _ in range(50):
        tick(node, 5)
        node.step(Message(MT.HEARTBEAT, to=1, sender=2, term=1))
    assert node.role == Role.FOLLOWER and node.term == 1


def test_single_voter_elects_itself_immediately():
    node = new_node(1, [1], term=0)
    node.campaign()
    assert node.role == Role.LEADER and node.term == 1


# -- Election timeout randomization -------------------------------------------------


def election_timeout(seed, election_tick=10):
    node = new_node(1, [1, 2, 3], election_tick=election_tick, seed=seed)
    for t in range(1, 3 * election_tick):
        node.tick()
        if node.role != Role.FOLLOWER:
            return t
    raise AssertionError("no election")


def test_election_timeout_is_within_election_tick_and_twice_that():
    timeouts = {election_timeout(seed) for seed in range(50)}
    assert min(timeouts) >= 10 and max(timeouts) < 20
    assert len(timeouts) > 3  # it really is randomized


def test_election_timeout_is_driven_by_the_seeded_rng():
    assert election_timeout(seed=7) == election_timeout(seed=7)
    by_seed = {seed: election_timeout(seed) for seed in range(20)}
    assert len(set(by_seed.values())) > 1  # different seeds, different timeouts


def test_timeout_is_re_randomized_for_each_election():
    node = new_node(1, [1, 2, 3], election_tick=10, seed=3)
    seen = set()
    for _ in range(20):
        before = node.term
        t = 0
        while node.term == before:
            node.tick()
            t += 1
        seen.add(t)
    assert all(10 <= t < 20 for t in seen) and len(seen) > 1


# -- In a cluster ---------------------------------------------------------------------


def test_cluster_elects_exactly_one_leader_by_ticking():
    c = Cluster([1, 2, 3])
    for _ in range(40):
        c.tick_all()
        if c.leaders():
            break
    assert len(c.leaders()) == 1
    lead = c.leaders()[0]
    assert all(n.leader == lead for n in c.nodes.values())
    assert len(set(c.terms().values())) == 1

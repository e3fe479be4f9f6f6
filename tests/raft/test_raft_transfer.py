"""Leadership transfer (thesis §3.10)."""

from __future__ import annotations

import pytest
from raft_harness import MT, Cluster, msgs_of

from synod.consensus.raft import ConfChangeError, ProposalDropped, Role


def cluster():
    c = Cluster([1, 2, 3], pre_vote=True, check_quorum=True, election_tick=10)
    c.elect(1)
    return c


def test_transfer_to_up_to_date_follower_sends_timeout_now_and_target_wins():
    c = cluster()
    term = c[1].term
    c[1].transfer_leadership(2)
    rd = c.process_ready(1)
    (tn,) = msgs_of(rd.messages, MT.TIMEOUT_NOW)
    assert tn.to == 2
    c.stabilize()
    assert c.leaders() == [2]
    assert c[2].term == term + 1
    # The target skipped the pre-election and campaigned with transfer set.
    votes = [m for m in c.sent_of(MT.VOTE) if m.sender == 2]
    assert votes and all(m.transfer for m in votes)
    assert [m for m in c.sent_of(MT.PRE_VOTE) if m.sender == 2] == []


def test_transfer_to_lagging_follower_first_catches_it_up():
    c = cluster()
    c.hold(1, 3)  # node 3 is slow: what the leader sends it is still on its way
    c[1].propose([b"a", b"b", b"c"])
    c.stabilize()
    assert c[3].raft.log.last_index() < c[1].raft.log.last_index()
    c[1].transfer_leadership(3)
    c.stabilize()
    assert c.sent_of(MT.TIMEOUT_NOW) == []  # not before it has caught up
    c.release()
    c.stabilize()
    tn = c.sent_of(MT.TIMEOUT_NOW)
    assert [m.to for m in tn] == [3]
    assert c.leaders() == [3]
    assert [e.data for e in c.applied[3] if e.data] == [b"a", b"b", b"c"]


def test_transfer_to_follower_whose_appends_were_lost_completes():
    # Node 3 missed the appends the leader streamed to it (REPLICATE state), and
    # is reachable again. A transfer to it must catch it up and then hand over
    # within the transfer's election-timeout budget.
    c = cluster()
    c.isolate(3)
    c[1].propose([b"a", b"b", b"c"])
    c.stabilize()
    c.heal()
    assert c[3].raft.log.last_index() < c[1].raft.log.last_index()
    c[1].transfer_leadership(3)
    c.stabilize()
    for _ in range(10):  # one election timeout of leader ticks (heartbeat every tick)
        if c[3].role == Role.LEADER:
            break
        c.tick(1)
        c.stabilize()
    assert c.sent_of(MT.TIMEOUT_NOW), "transfer abandoned before the target was caught up"
    assert c.leaders() == [3]


def test_transfer_to_unreachable_follower_does_not_send_timeout_now():
    c = cluster()
    c.isolate(3)
    c[1].propose([b"a"])
    c.stabilize()
    c[1].transfer_leadership(3)
    c.stabilize()
    assert c.sent_of(MT.TIMEOUT_NOW) == []
    assert c[1].role == Role.LEADER


def test_proposals_are_refused_during_transfer():
    c = cluster()
    c.isolate(2)
    c[1].transfer_leadership(2)
    with pytest.raises(ProposalDropped):
        c[1].propose([b"x"])


def test_forwarded_proposals_are_dropped_during_transfer():
    c = cluster()
    c.cut(1, 2)
    c[1].transfer_leadership(2)
    last = c[1].raft.log.last_index()
    c[3].propose([b"fwd"])
    c.stabilize()
    assert c[1].raft.log.last_index() == last


def test_transfer_is_abandoned_after_an_election_timeout():
    c = cluster()
    c.isolate(2)
    c[1].transfer_leadership(2)
    for _ in range(9):
        c.tick(1)
        c.stabilize()
    with pytest.raises(ProposalDropped):
        c[1].propose([b"still-transferring"])
    c.tick(1)
    c.stabilize()
    assert c[1].role == Role.LEADER
    c[1].propose([b"after"])  # accepted again
    c.stabilize()
    assert b"after" in [e.data for e in c.applied[3]]


def test_transfer_to_self_or_non_voter_is_an_error():
    c = cluster()
    with pytest.raises(ConfChangeError):
        c[1].transfer_leadership(1)
    with pytest.raises(ConfChangeError):
        c[1].transfer_leadership(9)


def test_transfer_on_a_follower_is_refused():
    c = cluster()
    with pytest.raises(ProposalDropped):
        c[2].transfer_leadership(3)

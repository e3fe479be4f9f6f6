"""Config.campaign_on_leader_loss: a follower whose connection to the leader
broke does not wait out a whole election timeout before campaigning.

The transport reports a broken connection with report_unreachable(peer). The
election still needs votes, so a follower alone in thinking the leader gone
cannot unseat it: the others, still hearing the leader, reject its pre-vote.
"""

from __future__ import annotations

from raft_harness import MT, Cluster

from synod.consensus.raft import NONE, Role

KW = dict(pre_vote=True, check_quorum=True, election_tick=10, campaign_on_leader_loss=True)


def test_followers_that_lose_the_leader_elect_a_new_one_within_a_few_ticks():
    c = Cluster([1, 2, 3], **KW)
    c.elect(1)
    c.isolate(1)  # the leader's process is gone
    for f in (2, 3):
        c[f].report_unreachable(1)
        assert c[f].leader == NONE
    ticks = 0
    while not any(c[f].role == Role.LEADER for f in (2, 3)) and ticks < 3:
        ticks += 1
        # Their clocks are out of phase: 2 ticks, messages flow, then 3 ticks.
        for f in (2, 3):
            c.tick(f)
            c.stabilize()
    # Within two ticks rather than election_tick (10) to 2 * election_tick.
    assert any(c[f].role == Role.LEADER for f in (2, 3)), "no new leader"
    assert ticks <= 2


def test_one_follower_alone_cannot_unseat_a_live_leader():
    c = Cluster([1, 2, 3], **KW)
    c.elect(1)
    term = c[1].term
    c[2].report_unreachable(1)  # its own connection broke; 3 still hears 1
    c.tick(2, 2)  # campaigns (pre-vote): 3 is in its lease and rejects it
    c.stabilize()
    assert c.sent_of(MT.PRE_VOTE, to=3)
    assert c[1].role == Role.LEADER and c[1].term == term
    c.tick(1, 1)  # the next heartbeat brings 2 back
    c.stabilize()
    assert c[2].leader == 1 and c[2].role == Role.FOLLOWER and c[2].term == term


def test_losing_another_follower_changes_nothing():
    c = Cluster([1, 2, 3], **KW)
    c.elect(1)
    c[2].report_unreachable(3)
    assert c[2].leader == 1
    before = c[2].raft.election_elapsed
    c[2].report_unreachable(3)
    assert c[2].raft.election_elapsed == before


def test_off_by_default():
    c = Cluster([1, 2, 3], pre_vote=True, check_quorum=True)
    c.elect(1)
    c.isolate(1)
    c[2].report_unreachable(1)
    assert c[2].leader == 1
    c.tick(2, 5)
    assert c[2].role == Role.FOLLOWER

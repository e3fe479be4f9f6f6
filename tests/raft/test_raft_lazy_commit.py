"""Commit propagation: the no-ack commit append and Config.lazy_commit.

A sequential client pays for every peer message, so a commit that moves with
nothing new to send should cost as few as possible: the follower need not
answer an append that only carries a commit index (the leader knows its match
already), and with lazy_commit the leader waits for the caller's flush_commit()
(or the next proposal's appends) before telling followers at all — except a
follower that forwarded a now-committed proposal, which hears at once.
"""

from __future__ import annotations

from raft_harness import MT, Message, msgs_of, new_node, replicating_cluster, take_ready

from synod.consensus.raft.progress import ProgressState


def test_commit_only_append_is_not_acknowledged():
    c = replicating_cluster()
    mark = len(c.sent)
    c[1].propose([b"x"])
    c.stabilize()
    # The entry's append is acknowledged; the append that only carries its
    # commit index is marked no_ack and draws no answer.
    appends = c.sent_of(MT.APPEND, since=mark)
    with_entries = [m for m in appends if m.entries]
    commit_only = [m for m in appends if not m.entries]
    assert {m.to for m in with_entries} == {2, 3} and not any(m.no_ack for m in with_entries)
    assert {m.to for m in commit_only} == {2, 3} and all(m.no_ack for m in commit_only)
    assert len(c.sent_of(MT.APPEND_RESP, since=mark)) == 2
    for i in (2, 3):
        assert c.committed(i) == c.committed(1)


def test_no_ack_append_that_does_not_match_is_still_answered():
    node = new_node(1, [1, 2, 3], terms=[1, 1], term=2)
    node.step(
        Message(MT.APPEND, to=1, sender=2, term=2, index=5, log_term=2, commit=5, no_ack=True)
    )
    (resp,) = msgs_of(take_ready(node).messages, MT.APPEND_RESP)
    assert resp.reject and resp.index == 5
    assert node.raft.log.committed == 0


def test_probing_leader_still_asks_for_an_answer():
    c = replicating_cluster()
    pr = c[1].raft.prs[2]
    pr.become_probe()
    mark = len(c.sent)
    c[1].raft._send_append(2, pr)  # an empty probe: the answer moves it back to replicate
    c.stabilize()
    (probe,) = c.sent_of(MT.APPEND, to=2, since=mark)
    assert not probe.entries and not probe.no_ack
    assert c[1].raft.prs[2].state == ProgressState.REPLICATE


def test_lazy_commit_waits_for_flush():
    c = replicating_cluster(lazy_commit=True)
    mark = len(c.sent)
    c[1].propose([b"x"])
    c.stabilize()
    leader_commit = c.committed(1)
    assert [e.data for e in c.applied[1]][-1] == b"x"
    assert c[1].commit_due
    assert not [m for m in c.sent_of(MT.APPEND, since=mark) if not m.entries]
    assert all(c.committed(i) < leader_commit for i in (2, 3))

    c[1].flush_commit()
    c.stabilize()
    assert not c[1].commit_due
    assert all(c.committed(i) == leader_commit for i in (2, 3))
    assert b"x" in [e.data for e in c.applied[2]]
    # Nothing more to say: a second flush sends nothing.
    mark = len(c.sent)
    c[1].flush_commit()
    c.stabilize()
    assert c.sent[mark:] == []


def test_lazy_commit_rides_on_the_next_appends():
    c = replicating_cluster(lazy_commit=True)
    c[1].propose([b"a"])
    c.stabilize()
    first = c.committed(1)
    mark = len(c.sent)
    c[1].propose([b"b"])
    c.stabilize()
    # The appends carrying "b" told the followers that "a" is committed; only
    # "b"'s own commit waits for a flush. No commit-only append went out.
    assert all(m.entries for m in c.sent_of(MT.APPEND, since=mark))
    assert all(c.committed(i) == first for i in (2, 3))
    assert c.committed(1) == first + 1


def test_lazy_commit_tells_a_forwarding_follower_at_once():
    c = replicating_cluster(lazy_commit=True)
    mark = len(c.sent)
    c[2].propose([b"via-2"])
    c.stabilize()
    assert b"via-2" in [e.data for e in c.applied[2]]
    assert c.committed(2) == c.committed(1)
    # Follower 3 forwarded nothing: it waits for the flush (or the next append).
    assert c.committed(3) < c.committed(1)
    told = [m for m in c.sent_of(MT.APPEND, since=mark) if not m.entries]
    assert [m.to for m in told] == [2] and told[0].no_ack


def test_flush_skips_the_follower_told_already():
    c = replicating_cluster(lazy_commit=True)
    c[2].propose([b"via-2"])
    c.stabilize()
    mark = len(c.sent)
    c[1].flush_commit()
    c.stabilize()
    # Follower 2 heard of the commit when it was made; the flush tells only 3.
    told = c.sent_of(MT.APPEND, since=mark)
    assert [m.to for m in told] == [3] and not told[0].entries
    assert all(c.committed(i) == c.committed(1) for i in (2, 3))


def test_heartbeat_carries_a_lazy_commit():
    c = replicating_cluster(lazy_commit=True, heartbeat_tick=1)
    c[1].propose([b"x"])
    c.stabilize()
    c.tick(1)
    c.stabilize()
    assert all(c.committed(i) == c.committed(1) for i in (2, 3))

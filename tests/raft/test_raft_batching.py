"""Fewer, fuller messages under load: Config.batch_forwards and the append window.

Every peer message costs a Python member a fixed amount of CPU at each end, so
a busy cluster should send one full message per round trip rather than one
small message per turn of a loop. Two mechanisms do that, and neither may
delay an idle cluster or keep a follower from hearing of its commit.
"""

from __future__ import annotations

from raft_harness import MT, Message, replicating_cluster

from synod.consensus.raft import Entry, Role


def forwarded(c, since: int = 0) -> list[list[bytes]]:
    """The data of each PROPOSE follower 2 sent, in order."""
    return [[e.data for e in m.entries] for m in c.sent_of(MT.PROPOSE, since=since)]


def applied_data(c, id: int) -> list[bytes]:
    return [e.data for e in c.applied[id] if e.data]


def lose_a_forward_then_hold_b():
    """Follower 2's forward of "a" is lost on a cut link; "b", made after it, is held."""
    c = replicating_cluster(batch_forwards=True)
    c.cut(2, 1)
    c[2].propose([b"a"])
    c.stabilize()
    c[2].propose([b"b"])
    c.stabilize()
    assert forwarded(c) == [[b"a"]]
    return c


def test_an_idle_follower_forwards_at_once():
    c = replicating_cluster(batch_forwards=True)
    c[2].propose([b"a"])
    c.process_ready(2)
    assert forwarded(c) == [[b"a"]]


def test_a_busy_follower_holds_proposals_until_the_leader_answers():
    c = replicating_cluster(batch_forwards=True)
    c[2].propose([b"a"])
    c.process_ready(2)
    c[2].propose([b"b"])
    c[2].propose([b"c"])
    c.process_ready(2)
    # "a" is on its way: "b" and "c" wait for word from the leader...
    assert forwarded(c) == [[b"a"]]
    c.stabilize()
    # ...which the append carrying "a" is; then they go as one message.
    assert forwarded(c) == [[b"a"], [b"b", b"c"]]
    for i in (1, 2, 3):
        assert applied_data(c, i) == [b"a", b"b", b"c"]


def test_without_batch_forwards_each_proposal_goes_alone():
    c = replicating_cluster()
    for d in (b"a", b"b", b"c"):
        c[2].propose([d])
    c.stabilize()
    assert forwarded(c) == [[b"a"], [b"b"], [b"c"]]


def test_held_proposals_go_at_the_next_tick_without_word_from_the_leader():
    c = lose_a_forward_then_hold_b()
    c.heal()
    c.tick(2)
    c.stabilize()
    assert forwarded(c) == [[b"a"], [b"b"]]
    assert applied_data(c, 2) == [b"b"]


def test_held_proposals_join_the_log_of_a_follower_that_becomes_leader():
    c = lose_a_forward_then_hold_b()
    c.heal()
    c.elect(2)
    c.stabilize()
    assert c[2].role == Role.LEADER
    for i in (1, 2, 3):
        assert applied_data(c, i) == [b"b"]


def test_a_full_window_still_carries_the_commit_index():
    c = replicating_cluster(lazy_commit=True, max_inflight_msgs=1)
    c.hold(2, 1)  # follower 2's acknowledgements are late
    mark = len(c.sent)
    c[1].step(Message(MT.PROPOSE, to=1, sender=2, entries=(Entry(0, 0, data=b"y"),)))
    c.stabilize()
    y = c[1].raft.log.last_index()
    assert c.committed(1) == y  # follower 3 acknowledged it
    # Follower 2 forwarded "y" and has it, but its window is full until its
    # acknowledgement arrives; the commit still reaches it, in an append
    # that carries no entries and asks for no answer (one is on its way).
    commit_only = [m for m in c.sent_of(MT.APPEND, to=2, since=mark) if not m.entries]
    assert len(commit_only) == 1 and commit_only[0].commit == y and commit_only[0].no_ack
    assert c.committed(2) == y
    assert b"y" in applied_data(c, 2)
    c.release()
    c.stabilize()
    assert c[1].raft.prs[2].match == y


def test_proposals_held_while_no_leader_was_known_go_when_one_speaks():
    c = lose_a_forward_then_hold_b()
    c[2].raft.become_follower(c[2].term, 0)  # it loses track of the leader...
    c.tick(2)  # ...so the tick has nowhere to send "b"
    c.stabilize()
    assert forwarded(c) == [[b"a"]]
    c.heal()
    c.tick(1)  # the leader's heartbeat names it again
    c.stabilize()
    assert forwarded(c) == [[b"a"], [b"b"]]
    assert applied_data(c, 2) == [b"b"]


def test_a_heartbeat_answer_frees_a_window_whose_acknowledgement_was_lost():
    c = replicating_cluster(max_inflight_msgs=1)
    c.cut_links.add((2, 1))  # one way: follower 2's acknowledgement of "a" is lost
    c[1].propose([b"a"])
    c.stabilize()
    c.heal()
    c[1].propose([b"b"])
    c.stabilize()
    assert c[1].raft.prs[2].match < c[1].raft.log.last_index()  # "b" waits: window full
    c.tick(1)  # a heartbeat round: follower 2 answers it
    c.stabilize()
    assert c[1].raft.prs[2].match == c[1].raft.log.last_index()
    assert applied_data(c, 2) == [b"a", b"b"]

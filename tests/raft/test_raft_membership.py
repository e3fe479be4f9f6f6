"""Single-server membership changes, in effect on append (thesis §4.1)."""

from __future__ import annotations

import pytest
from raft_harness import MT, Cluster, Message, elect_alone, msgs_of, new_node, take_ready, tick

from synod.consensus.raft import (
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    ProposalDropped,
    Role,
)
from synod.consensus.raft.confchange import encode

ADD_VOTER, ADD_LEARNER, REMOVE = (
    ConfChangeType.ADD_VOTER,
    ConfChangeType.ADD_LEARNER,
    ConfChangeType.REMOVE,
)


def with_new_member(c: Cluster, id: int) -> None:
    """Start a brand-new, empty member that learns the configuration from the leader."""
    c.add_node(id, new_node(id, [], **c.node_kw))


def voters(node):
    return set(node.raft.conf.voters)


def test_adding_learner_replicates_to_it():
    c = Cluster([1, 2, 3])
    c.elect(1)
    with_new_member(c, 4)
    c[1].propose_conf_change(ConfChange(ADD_LEARNER, 4))
    c[1].propose([b"for-everyone"])
    c.stabilize()
    assert c[1].raft.conf.learners == frozenset({4})
    assert c[4].raft.conf.learners == frozenset({4})
    assert b"for-everyone" in [e.data for e in c.applied[4]]


def test_learner_is_not_counted_for_commit():
    c = Cluster([1, 2, 3])
    c.elect(1)
    with_new_member(c, 4)
    c[1].propose_conf_change(ConfChange(ADD_LEARNER, 4))
    c.stabilize()
    c.isolate(2)
    c.isolate(3)
    c.cut_links -= {(1, 4), (4, 1)}
    before = c.committed(1)
    c[1].propose([b"x"])
    c.stabilize()
    assert c[4].raft.log.last_index() == c[1].raft.log.last_index()  # the learner has it
    assert c[1].raft.prs[4].match == c[1].raft.log.last_index()
    assert c.committed(1) == before  # but leader + learner are not a quorum of 3


def test_adding_learner_to_configuration_that_already_has_it_is_an_error():
    c = Cluster([1, 2, 3])
    c.elect(1)
    with pytest.raises(ConfChangeError):
        c[1].propose_conf_change(ConfChange(ADD_VOTER, 2))


def test_promoting_learner_makes_it_count_and_campaign():
    c = Cluster([1, 2, 3])
    c.elect(1)
    with_new_member(c, 4)
    c[1].propose_conf_change(ConfChange(ADD_LEARNER, 4))
    c.stabilize()
    c[1].propose_conf_change(ConfChange(ADD_VOTER, 4))
    c.stabilize()
    assert voters(c[1]) == voters(c[4]) == {1, 2, 3, 4}
    assert c[4].raft.conf.learners == frozenset()
    assert c[4].raft.promotable()
    # Now 3 of 4 are needed: leader + 4 alone no longer commit, leader + 2 + 4 do.
    c.isolate(3)
    c.hold(1, 2)
    before = c.committed(1)
    c[1].propose([b"y"])
    c.stabilize()
    assert c.committed(1) == before
    c.release()
    c.stabilize()
    assert c.committed(1) == c[1].raft.log.last_index()


def test_removing_voter_changes_quorum_as_soon_as_appended():
    c = Cluster([1, 2, 3, 4])
    c.elect(1)
    c.isolate(3)
    c.isolate(4)
    # With 3 and 4 gone, 2 of 4 is no quorum; removing 4 makes it 2 of 3 at once.
    c[1].propose_conf_change(ConfChange(REMOVE, 4))
    assert voters(c[1]) == {1, 2, 3}  # before anything is committed
    c.stabilize()
    cc_index = c[1].raft.conf_index
    assert c.committed(1) == cc_index
    assert 4 not in c[1].raft.prs


def test_second_change_is_refused_until_first_commits():
    c = Cluster([1, 2, 3])
    c.elect(1)
    with_new_member(c, 4)
    c[1].propose_conf_change(ConfChange(ADD_LEARNER, 4))
    with pytest.raises(ProposalDropped):
        c[1].propose_conf_change(ConfChange(REMOVE, 3))
    c.stabilize()
    c[1].propose_conf_change(ConfChange(REMOVE, 3))  # fine now


def test_new_leader_refuses_changes_until_it_commits_entry_of_its_term():
    node = new_node(1, [1, 2, 3], terms=[1, 1], term=1, commit=2)
    elect_alone(node, [2])
    with pytest.raises(ProposalDropped):
        node.propose_conf_change(ConfChange(REMOVE, 3))
    rd = take_ready(node)
    (app,) = msgs_of(rd.messages, MT.APPEND, to=2)
    node.step(Message(MT.APPEND_RESP, to=1, sender=2, term=node.term, index=app.entries[-1].index))
    assert node.raft.log.committed == 3
    node.propose_conf_change(ConfChange(REMOVE, 3))


def test_removed_leader_steps_down_once_removal_commits():
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.hold(2, 1)
    c.hold(3, 1)
    c[1].propose_conf_change(ConfChange(REMOVE, 1))
    c.stabilize()
    assert c[1].role == Role.LEADER  # appended, not yet committed
    assert voters(c[1]) == {2, 3}
    c.release()
    c.stabilize()
    assert c[1].role == Role.FOLLOWER
    # The rest elect a leader among themselves; the removed node never campaigns.
    for _ in range(40):
        c.tick_all()
        if c.leaders():
            break
    assert c.leaders() and c.leaders()[0] in (2, 3)
    assert c[1].role == Role.FOLLOWER and not c[1].raft.promotable()


def test_learner_never_campaigns():
    node = new_node(4, [1, 2, 3], learners=[4])
    tick(node, 100)
    assert node.role == Role.FOLLOWER
    assert not node.has_ready() or take_ready(node).messages == ()


def test_learner_ignores_campaign_request():
    node = new_node(4, [1, 2, 3], learners=[4])
    node.campaign()
    assert node.role == Role.FOLLOWER and node.term == 0


def test_node_outside_configuration_never_campaigns():
    node = new_node(9, [1, 2, 3])
    tick(node, 100)
    node.campaign()
    assert node.role == Role.FOLLOWER and node.term == 0
    assert not node.has_ready() or take_ready(node).messages == ()


def test_truncated_configuration_entry_reverts_follower_configuration():
    cc = ConfChange(REMOVE, 3)
    data = encode(cc, ConfState(frozenset({1, 2}), frozenset()))
    node = new_node(2, [1, 2, 3], terms=[1], term=1, commit=1)
    node.step(
        Message(
            MT.APPEND,
            to=2,
            sender=1,
            term=1,
            index=1,
            log_term=1,
            entries=(Entry(1, 2, EntryType.CONF_CHANGE, data),),
        )
    )
    assert voters(node) == {1, 2}  # in effect on append
    # A new leader of term 2 never had that entry and overwrites it.
    node.step(
        Message(MT.APPEND, to=2, sender=3, term=2, index=1, log_term=1, entries=(Entry(2, 2),))
    )
    assert voters(node) == {1, 2, 3}


def test_leader_with_uncommitted_change_from_old_term_refuses_new_change():
    data = encode(ConfChange(REMOVE, 3), ConfState(frozenset({1, 2}), frozenset()))
    ents = [Entry(1, 1), Entry(1, 2, EntryType.CONF_CHANGE, data)]
    node = new_node(1, [1, 2, 3], entries=ents, term=1, commit=1)
    assert voters(node) == {1, 2}
    elect_alone(node, [2])
    with pytest.raises(ProposalDropped):
        node.propose_conf_change(ConfChange(ADD_LEARNER, 5))

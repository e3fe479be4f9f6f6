"""A small, deterministic harness for driving Synod's Raft core in unit tests.

Nothing here is random except the seeded `random.Random` each node's Config gets
(seed = node id unless told otherwise), so every test is a fixed script.

Two ways of driving nodes:

* One node by hand: build it with `new_node(...)`, `step()` messages into it
  and look at what comes out with `take_ready(node)` (which "persists" by simply
  calling advance()) or `node.ready()` / `node.advance(rd)` when the test cares
  about what happens in between.

* A whole cluster: `Cluster([1, 2, 3])` builds the nodes; `stabilize()` runs
  every node's Ready loop and delivers every message synchronously until nothing
  is left to do. Links can be cut (`cut`, `isolate`) and healed (`heal`);
  messages over a cut link are dropped. Each node has a "disk" (snapshot,
  entries, hard state) written exactly as the Ready contract says, so a test can
  restart a node from it. Every message that left a Ready is recorded in
  `cluster.sent`, so tests can count them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from synod.consensus.raft import (
    NONE,
    Config,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    RawNode,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)

MT = MessageType


# -- building nodes ------------------------------------------------------------


def conf_snapshot(
    voters: Iterable[int], learners: Iterable[int] = (), index: int = 0, term: int = 0
) -> Snapshot:
    """The bootstrap 'snapshot' that names the initial configuration."""
    conf = ConfState(frozenset(voters), frozenset(learners))
    return Snapshot(SnapshotMeta(index=index, term=term, conf=conf))


def log_of(terms: Sequence[int], start: int = 1) -> list[Entry]:
    """Entries with the given terms at consecutive indexes from `start`."""
    return [
        Entry(term=t, index=start + i, data=f"e{start + i}".encode()) for i, t in enumerate(terms)
    ]


def new_node(
    id: int,
    voters: Iterable[int],
    *,
    learners: Iterable[int] = (),
    election_tick: int = 10,
    heartbeat_tick: int = 1,
    pre_vote: bool = False,
    check_quorum: bool = False,
    lazy_commit: bool = False,
    campaign_on_leader_loss: bool = False,
    batch_forwards: bool = False,
    max_size_per_msg: int = 1 << 20,
    max_inflight_msgs: int = 256,
    terms: Sequence[int] = (),
    term: int = 0,
    vote: int = NONE,
    commit: int = 0,
    applied: int = 0,
    seed: int | None = None,
    snapshot: Snapshot | None = None,
    entries: Sequence[Entry] | None = None,
) -> RawNode:
    """A RawNode (re)started from the given persisted state.

    `terms` is a shorthand for a log: terms=(1, 1, 2) is entries 1..3 of terms 1, 1, 2.
    pre_vote and check_quorum default to off so that the plain Raft rules can be
    tested on their own; the extension tests switch them on explicitly.
    """
    cfg = Config(
        id=id,
        rng=random.Random(id if seed is None else seed),
        election_tick=election_tick,
        heartbeat_tick=heartbeat_tick,
        max_size_per_msg=max_size_per_msg,
        max_inflight_msgs=max_inflight_msgs,
        pre_vote=pre_vote,
        check_quorum=check_quorum,
        lazy_commit=lazy_commit,
        campaign_on_leader_loss=campaign_on_leader_loss,
        batch_forwards=batch_forwards,
    )
    snap = snapshot if snapshot is not None else conf_snapshot(voters, learners)
    ents = list(entries) if entries is not None else log_of(terms, start=snap.meta.index + 1)
    return RawNode(cfg, HardState(term, vote, commit), snap, ents, applied)


# -- looking at output -----------------------------------------------------------


def take_ready(node: RawNode) -> Ready:
    """Take the node's Ready and acknowledge it at once (as if persisted and sent)."""
    rd = node.ready()
    node.advance(rd)
    return rd


def msgs_of(
    messages: Iterable[Message], type: MessageType | None = None, to: int | None = None
) -> list[Message]:
    return [m for m in messages if (type is None or m.type == type) and (to is None or m.to == to)]


def tick(node: RawNode, n: int) -> None:
    for _ in range(n):
        node.tick()


def elect_alone(node: RawNode, peers: Iterable[int]) -> None:
    """Make `node` leader by campaigning and feeding it granted votes from `peers`.

    Works with or without pre-vote; the node's Ready output is consumed.
    """
    node.campaign()
    for _ in range(2):  # pre-vote round, then the real one
        rd = take_ready(node)
        requests = [m for m in rd.messages if m.type in (MT.VOTE, MT.PRE_VOTE)]
        for m in requests:
            resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
            if m.to in peers:
                node.step(Message(resp, to=node.id, sender=m.to, term=m.term))
        if node.role == Role.LEADER:
            break
    assert node.role == Role.LEADER, node.role


# -- a cluster -------------------------------------------------------------------


@dataclass
class Disk:
    """What one node has persisted, written as the Ready contract says."""

    snapshot: Snapshot
    entries: list[Entry]
    hard_state: HardState = field(default_factory=HardState)

    def write(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = [e for e in self.entries if e.index > rd.snapshot.meta.index]
        if rd.entries:
            first = rd.entries[0].index
            self.entries = [e for e in self.entries if e.index < first] + list(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state


class Cluster:
    """Nodes wired together by a synchronous, lossless network (unless cut)."""

    def __init__(self, ids: Iterable[int], *, learners: Iterable[int] = (), **node_kw) -> None:
        ids = list(ids)
        self.node_kw = node_kw
        self.nodes: dict[int, RawNode] = {}
        self.disks: dict[int, Disk] = {}
        for i in list(ids) + list(learners):
            node = new_node(i, ids, learners=learners, **node_kw)
            self.nodes[i] = node
            self.disks[i] = Disk(node.raft.log.snapshot, list(node.raft.log.entries))
        #: messages taken from Readies and not yet delivered
        self.pending: list[Message] = []
        #: every message any node ever handed out, in order
        self.sent: list[Message] = []
        #: every message dropped by a cut link
        self.dropped: list[Message] = []
        self.cut_links: set[tuple[int, int]] = set()
        #: links whose messages are delayed (kept in `held`) rather than dropped
        self.held_links: set[tuple[int, int]] = set()
        self.held: list[Message] = []
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.nodes}
        self.read_states: dict[int, list[ReadState]] = {i: [] for i in self.nodes}

    def __getitem__(self, id: int) -> RawNode:
        return self.nodes[id]

    # -- network ---------------------------------------------------------------

    def cut(self, a: int, b: int) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def isolate(self, id: int) -> None:
        for other in self.nodes:
            if other != id:
                self.cut(id, other)

    def heal(self) -> None:
        self.cut_links.clear()

    def hold(self, sender: int, to: int) -> None:
        """Delay (not drop) messages from `sender` to `to` until `release()`."""
        self.held_links.add((sender, to))

    def release(self) -> None:
        """Stop delaying and deliver every held message, in order."""
        self.held_links.clear()
        held, self.held = self.held, []
        self.deliver(held)

    def add_node(self, id: int, node: RawNode) -> None:
        """Attach a (new or restarted) node."""
        self.nodes[id] = node
        self.disks.setdefault(id, Disk(node.raft.log.snapshot, list(node.raft.log.entries)))
        self.applied.setdefault(id, [])
        self.read_states.setdefault(id, [])

    def restart(self, id: int) -> RawNode:
        """Rebuild node `id` from its disk (everything not persisted is lost)."""
        d = self.disks[id]
        kw = dict(self.node_kw)
        node = new_node(
            id,
            d.snapshot.meta.conf.voters,
            snapshot=d.snapshot,
            entries=d.entries,
            term=d.hard_state.term,
            vote=d.hard_state.vote,
            commit=max(d.hard_state.commit, d.snapshot.meta.index),
            **kw,
        )
        self.nodes[id] = node
        return node

    # -- driving ---------------------------------------------------------------

    def process_ready(self, id: int) -> Ready | None:
        """Run one turn of node `id`'s Ready loop; its messages go to `pending`."""
        node = self.nodes[id]
        if not node.has_ready():
            return None
        rd = node.ready()
        self.disks[id].write(rd)  # 1. persist
        self.pending.extend(rd.messages)  # 2. send
        self.sent.extend(rd.messages)
        self.applied[id].extend(rd.committed_entries)  # 3. apply
        self.read_states[id].extend(rd.read_states)
        node.advance(rd)  # 4. advance
        return rd

    def deliver(self, messages: Iterable[Message] | None = None) -> int:
        """Deliver `messages` (default: everything pending); returns how many arrived."""
        if messages is None:
            messages, self.pending = self.pending, []
        n = 0
        for m in messages:
            if (m.sender, m.to) in self.held_links:
                self.held.append(m)
                continue
            if (m.sender, m.to) in self.cut_links or m.to not in self.nodes:
                self.dropped.append(m)
                continue
            self.nodes[m.to].step(m)
            n += 1
        return n

    def stabilize(self, max_rounds: int = 1000) -> None:
        """Run Ready loops and deliver messages until the cluster is quiet."""
        for _ in range(max_rounds):
            busy = False
            for id in sorted(self.nodes):
                if self.process_ready(id) is not None:
                    busy = True
            if self.pending:
                self.deliver()
                busy = True
            if not busy:
                return
        raise AssertionError("cluster did not stabilize")

    def tick(self, id: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[id].tick()

    def tick_all(self, n: int = 1, stabilize: bool = True) -> None:
        """Tick every node once per round, stabilizing after each round."""
        for _ in range(n):
            for id in sorted(self.nodes):
                self.nodes[id].tick()
            if stabilize:
                self.stabilize()

    def elect(self, id: int) -> RawNode:
        """Have `id` campaign and run the election to completion."""
        self.nodes[id].campaign()
        self.stabilize()
        node = self.nodes[id]
        assert node.role == Role.LEADER, f"{id} is {node.role.name}"
        return node

    # -- looking -------------------------------------------------------------------

    def sent_of(self, type: MessageType | None = None, to: int | None = None, since: int = 0):
        return msgs_of(self.sent[since:], type, to)

    def leaders(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.role == Role.LEADER]

    def committed(self, id: int) -> int:
        return self.nodes[id].raft.log.committed

    def terms(self) -> dict[int, int]:
        return {i: n.term for i, n in self.nodes.items()}


def replicating_cluster(**node_kw) -> Cluster:
    """A 3-member cluster whose leader, 1, streams to both followers (REPLICATE)."""
    from synod.consensus.raft.progress import ProgressState

    c = Cluster([1, 2, 3], **node_kw)
    c.elect(1)
    assert all(c[1].raft.prs[i].state == ProgressState.REPLICATE for i in (2, 3))
    return c

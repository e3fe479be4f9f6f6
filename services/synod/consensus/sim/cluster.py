"""Deterministic simulation of a cluster of real Raft cores.

Everything — message delays, losses, crashes, partitions, client requests,
membership changes — is drawn from one `random.Random(seed)`, and time is a
simulated millisecond counter driven by an event queue. The same seed always
replays the same run.

A run has two phases:
1. Faults (`fault_ms`): clients write and read while a nemesis crashes and
   restarts members, partitions the network, changes membership, transfers
   leadership, and the network loses, duplicates and reorders messages.
2. Recovery: every fault is healed and every member restarted; within
   `liveness_ms` a leader must commit a new proposal, and every member of the
   final configuration must converge to the same state.
The Checker runs on every step of both phases.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from synod.consensus.raft import (
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    ConfState,
    Message,
    MessageType,
    ProposalDropped,
    Ready,
    Role,
)

from .checker import Checker, SafetyViolation, Violation
from .network import Network, NetworkFaults
from .node import SimNode, link

TICK_MS = 10


@dataclass
class SimParams:
    """One run's shape; `from_seed` draws a varied but reproducible mix."""

    nodes: int = 3
    election_tick: int = 10
    fault_ms: int = 3000
    liveness_ms: int = 4000
    loss: float = 0.0
    duplicate: float = 0.0
    max_delay: int = 5
    client_every_ms: int = 4
    max_outstanding: int = 32
    client_timeout_ms: int = 1000
    nemesis_every_ms: int = 250
    #: how often a Ready's early messages (Ready.split_messages) go before its
    #: write rather than after: both orders are legal, and both must be explored
    early_send: float = 0.5
    #: the share of crashes that strike in the middle of a member's next Ready
    #: (between its early messages and its write, or between write and send)
    crash_mid_ready: float = 0.3
    #: take a snapshot and compact once this many entries are applied past the last one
    snapshot_every: int = 50
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    #: Config.lazy_commit: ms from a leader's commit_due to its flush_commit call
    #: (None: lazy_commit off; -1: never flush, heartbeats and appends carry it)
    commit_flush_ms: int | None = None
    #: the transport reports a crashed member unreachable to the others (after
    #: 0-4 ms), and Config.campaign_on_leader_loss is on
    report_crashes: bool = False
    #: Config.batch_forwards: followers hold proposals while a forward is in flight
    batch_forwards: bool = False
    #: entries a snapshot covers that stay in the log (Node's snapshot_catchup_entries)
    catchup_entries: int = 0
    #: relative weights of the nemesis' faults
    faults: dict[str, int] = field(
        default_factory=lambda: {
            "crash": 3,
            "partition": 3,
            "one_way": 1,
            "membership": 2,
            "transfer": 1,
            "flaky": 1,
        }
    )

    @classmethod
    def from_seed(cls, seed: int) -> SimParams:
        r = random.Random(seed ^ 0x5EED)
        return cls(
            nodes=r.choice([3, 3, 5]),
            loss=r.choice([0.0, 0.01, 0.05, 0.15]),
            duplicate=r.choice([0.0, 0.02, 0.1]),
            max_delay=r.choice([2, 5, 15, 40]),
            snapshot_every=r.choice([10, 30, 100]),
            max_size_per_msg=r.choice([256, 4096, 1 << 20]),
            max_inflight_msgs=r.choice([1, 4, 256]),
            # drawn last, so older seeds keep the rest of their shape
            commit_flush_ms=r.choice([None, None, 0, 2, 20, -1]),
            report_crashes=r.random() < 0.5,
            batch_forwards=r.random() < 0.5,
            catchup_entries=r.choice([0, 0, 5, 40]),
        )


@dataclass
class SimResult:
    seed: int
    violation: Violation | None
    trace: list[str]
    stats: dict[str, int]


@dataclass
class _Write:
    node: int
    incarnation: int
    start: int


@dataclass
class _Read:
    node: int
    incarnation: int
    #: the highest index of a write acknowledged before this read began
    required: int
    index: int = -1


class Simulation:
    def __init__(self, seed: int, params: SimParams | None = None, trace_len: int = 60):
        self.seed = seed
        self.p = params or SimParams.from_seed(seed)
        self.rng = random.Random(seed)
        self.faults = NetworkFaults(
            loss=self.p.loss, duplicate=self.p.duplicate, max_delay=self.p.max_delay
        )
        self.net = Network(self.rng, self.faults)
        self.check = Checker()
        self.now = 0
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        voters = frozenset(range(1, self.p.nodes + 1))
        self.nodes: dict[int, SimNode] = {}
        for i in sorted(voters):
            self._add_node(i, ConfState(voters))
        self.next_id = self.p.nodes + 1
        self.trace: deque[str] = deque(maxlen=trace_len)
        self.writes: dict[int, _Write] = {}
        self.reads: dict[bytes, _Read] = {}
        self.max_acked = 0
        self.ids = itertools.count(1)
        self.stats = {
            "writes_acked": 0,
            "reads_served": 0,
            "crashes": 0,
            "partitions": 0,
            "conf_changes": 0,
            "transfers": 0,
            "snapshots_sent": 0,
            "elections": 0,
        }
        self.recovering = False
        #: set when the recovery-phase probe write commits
        self.liveness_ok_at: int | None = None
        self._liveness_req: int | None = None
        self._probed: tuple[int, int, int] | None = None
        self._prev_soft: dict[int, tuple[Role, int]] = {}

    # -- plumbing ----------------------------------------------------------------

    def at(self, when: int, fn: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), fn))

    def note(self, text: str) -> None:
        self.trace.append(f"t={self.now}ms {text}")

    def _add_node(self, node_id: int, conf: ConfState) -> SimNode:
        n = SimNode(
            node_id,
            conf,
            self.seed,
            self.p.election_tick,
            max_size_per_msg=self.p.max_size_per_msg,
            max_inflight_msgs=self.p.max_inflight_msgs,
            lazy_commit=self.p.commit_flush_ms is not None,
            campaign_on_leader_loss=self.p.report_crashes,
            batch_forwards=self.p.batch_forwards,
            catchup_entries=self.p.catchup_entries,
        )
        self.nodes[node_id] = n
        self.disk_chain_reset(n)
        # Desynchronize the members' clocks: ticks start at different offsets.
        self.at(self.now + 1 + self.rng.randrange(TICK_MS), lambda: self._tick(node_id))
        return n

    def disk_chain_reset(self, n: SimNode) -> None:
        snap = n.disk.snapshot
        base = json.loads(snap.data)["chain"] if snap.data else 0
        n.disk_chain = {snap.meta.index: base}

    # -- the event loop --------------------------------------------------------------

    def run(self) -> SimResult:
        self.at(1, self._client)
        self.at(self.p.nemesis_every_ms, self._nemesis)
        self.at(self.p.fault_ms, self._heal)
        end = self.p.fault_ms + self.p.liveness_ms
        violation: Violation | None = None
        try:
            while self._queue:
                when, _, fn = heapq.heappop(self._queue)
                if when > end:
                    break
                self.now = self.check.now = when
                fn()
                if self.recovering and self._converged():
                    break
            else:
                pass
            if violation is None:
                self._final_checks()
        except SafetyViolation as e:
            violation = e.violation
        except Exception as e:  # noqa: BLE001 - a crash of the core is a finding too
            violation = Violation(self.now, "exception", f"{type(e).__name__}: {e}")
        return SimResult(self.seed, violation, list(self.trace), dict(self.stats))

    def _tick(self, node_id: int) -> None:
        n = self.nodes.get(node_id)
        if n is None:
            return
        if n.raw is not None:
            n.raw.tick()
            self._process(n)
        self.at(self.now + TICK_MS, lambda: self._tick(node_id))

    def _deliver(self, m: Message, sender_incarnation: int) -> None:
        dest = self.nodes.get(m.to)
        src = self.nodes.get(m.sender)
        ok = dest is not None and dest.raw is not None
        if ok:
            assert dest is not None and dest.raw is not None
            dest.raw.step(m)
            self._process(dest)
        if m.type == MessageType.SNAPSHOT and src is not None and src.raw is not None:
            if src.incarnation == sender_incarnation:
                # The transport reports how the snapshot transfer ended.
                src.raw.report_snapshot(m.to, ok)
                self._process(src)

    # -- one member's Ready loop ---------------------------------------------------

    def _process(self, n: SimNode) -> None:
        while n.raw is not None and n.raw.has_ready():
            self._handle_ready(n, n.raw.ready())
        delay = self.p.commit_flush_ms
        if n.raw is not None and n.raw.commit_due and not n.flush_pending and delay is not None:
            if delay >= 0:
                n.flush_pending = True
                self.at(self.now + delay, functools.partial(self._flush_commit, n, n.incarnation))

    def _flush_commit(self, n: SimNode, incarnation: int) -> None:
        """The service's commit-flush timer (node.py) firing."""
        if n.raw is None or n.incarnation != incarnation:
            return
        n.flush_pending = False
        n.raw.flush_commit()
        self._process(n)

    def _handle_ready(self, n: SimNode, rd: Ready) -> None:
        """The service's order (node.py): what does not wait for the disk goes first."""
        raw = n.raw
        assert raw is not None
        if rd.soft_state is not None:
            self._on_soft_state(n, rd)
        early, late = rd.split_messages()
        es = self.p.early_send
        if early and (es <= 0 or (es < 1 and self.rng.random() >= es)):
            # Sending early is allowed, not required: explore both orders.
            early, late = (), rd.messages
        # 0. send what does not depend on the disk write, and apply what is
        #    committed (on a quorum's disks) unless a snapshot must go first
        self._send(n, early)
        apply_first = rd.snapshot is None
        if apply_first:
            self._apply(n, rd)
        if n.crash_after_persist and (early or rd.committed_entries) and self.rng.random() < 0.5:
            n.crash_after_persist = False
            self._crash(n, "after sending and applying, before persisting")
            return
        # 1. persist
        n.disk.write(rd)
        self._record_disk(n, rd)
        if n.crash_after_persist:
            n.crash_after_persist = False
            self._crash(n, "after persisting, before sending")
            return
        if rd.hard_state is not None:
            self._record_commit(n, rd.hard_state.commit)
        # 2. send the rest
        self._send(n, late)
        # 3. apply (after a snapshot)
        if not apply_first:
            self._apply(n, rd)
        # 4. advance
        raw.advance(rd)
        sm = n.sm
        assert sm is not None
        if sm.applied - raw.raft.log.snapshot.meta.index >= self.p.snapshot_every:
            snap = n.take_snapshot()
            if snap is not None:
                drop = [i for i in n.disk_chain if i < snap.meta.index]
                for i in drop:
                    del n.disk_chain[i]

    def _apply(self, n: SimNode, rd: Ready) -> None:
        sm = n.sm
        assert sm is not None
        if rd.snapshot is not None:
            n.sm = sm = type(sm)(rd.snapshot)
        for e in rd.committed_entries:
            if e.index <= sm.applied:
                continue
            self.check.apply(n.id, e)
            req = sm.apply(e)
            if req is not None:
                self._on_applied_write(n, req, e.index)
        for rs in rd.read_states:
            r = self.reads.get(rs.context)
            if r is not None and r.node == n.id and r.incarnation == n.incarnation:
                r.index = rs.index
        self._serve_reads(n)

    def _send(self, n: SimNode, msgs: Sequence[Message]) -> None:
        assert n.raw is not None
        for m in msgs:
            if m.type == MessageType.SNAPSHOT:
                self.stats["snapshots_sent"] += 1
            delays = self.net.deliveries(m.sender, m.to)
            if not delays and m.type == MessageType.SNAPSHOT:
                n.raw.report_snapshot(m.to, False)
            for d in delays:
                self.at(self.now + d, functools.partial(self._deliver, m, n.incarnation))

    def _on_soft_state(self, n: SimNode, rd: Ready) -> None:
        assert rd.soft_state is not None and n.raw is not None
        s = rd.soft_state
        self.check.role(n.id, s.role, s.term)
        prev = self._prev_soft.get(n.id)
        self._prev_soft[n.id] = (s.role, s.term)
        if s.role == Role.LEADER and prev != (Role.LEADER, s.term):
            self.stats["elections"] += 1
            self.note(f"node {n.id} leads term {s.term}")
            log = n.raw.raft.log
            top = self.check.max_committed
            lo = log.first_index()
            self.check.new_leader(
                n.id,
                {i: log.term(i) for i in range(lo, top + 1) if i in self.check.committed},
                log.snapshot.meta.index,
            )

    def _record_disk(self, n: SimNode, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.disk_chain_reset(n)
        if not rd.entries:
            return
        chain = n.disk_chain
        for e in rd.entries:
            c = link(chain[e.index - 1], e)
            chain[e.index] = c
            self.check.persisted(n.id, e.index, e.term, c)
        last = rd.entries[-1].index
        for i in [i for i in chain if i > last]:
            del chain[i]

    def _record_commit(self, n: SimNode, commit: int) -> None:
        raw = n.raw
        assert raw is not None
        log = raw.raft.log
        start = max(n.checked_commit + 1, log.first_index())
        for i in range(start, commit + 1):
            self.check.commit(n.id, i, log.term(i))
        n.checked_commit = max(n.checked_commit, commit)

    def _on_applied_write(self, n: SimNode, req: int, index: int) -> None:
        w = self.writes.pop(req, None)
        if w is None:
            return
        if w.node == n.id and w.incarnation == n.incarnation:
            # The member the client asked has applied it: the client hears "ok".
            self.max_acked = max(self.max_acked, index)
            self.stats["writes_acked"] += 1
            if req == self._liveness_req and self.liveness_ok_at is None:
                self.liveness_ok_at = self.now
                self.note(f"liveness: probe committed at index {index}")
        else:
            self.writes[req] = w

    def _serve_reads(self, n: SimNode) -> None:
        sm = n.sm
        assert sm is not None
        for ctx, r in list(self.reads.items()):
            if r.node == n.id and 0 <= r.index <= sm.applied:
                # Serve from the state machine as it is now.
                self.check.read(n.id, sm.applied, r.required)
                self.stats["reads_served"] += 1
                del self.reads[ctx]

    # -- clients ---------------------------------------------------------------

    def _alive(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raw is not None]

    def _leader(self) -> SimNode | None:
        best = None
        for n in self._alive():
            assert n.raw is not None
            if n.raw.role == Role.LEADER and (best is None or n.raw.term > best.raw.term):  # type: ignore[union-attr]
                best = n
        return best

    def _client(self) -> None:
        # Clients wait for answers, so at most `max_outstanding` requests are
        # open; one not answered within `client_timeout_ms` is given up on
        # (its outcome unknown, exactly like a client's timeout).
        for req, w in list(self.writes.items()):
            if self.now - w.start > self.p.client_timeout_ms:
                del self.writes[req]
        alive = self._alive()
        if alive and not self.recovering and len(self.writes) < self.p.max_outstanding:
            n = self.rng.choice(alive)
            if self.rng.random() < 0.7:
                self._write(n)
            else:
                self._read(n)
        self.at(self.now + 1 + self.rng.randrange(self.p.client_every_ms * 2), self._client)

    def _write(self, n: SimNode) -> int:
        assert n.raw is not None
        req = next(self.ids)
        key = f"k{self.rng.randrange(8)}"
        try:
            n.raw.propose([f"{req}:{key}:{req}".encode()])
        except ProposalDropped:
            return req
        self.writes[req] = _Write(n.id, n.incarnation, self.now)
        self._process(n)
        return req

    def _read(self, n: SimNode) -> None:
        assert n.raw is not None
        ctx = str(next(self.ids)).encode()
        try:
            n.raw.read_index(ctx)
        except ProposalDropped:
            return
        self.reads[ctx] = _Read(n.id, n.incarnation, self.max_acked)
        self._process(n)

    # -- the nemesis -------------------------------------------------------------

    def _nemesis(self) -> None:
        if self.recovering:
            return
        kinds = list(self.p.faults)
        kind = self.rng.choices(kinds, [self.p.faults[k] for k in kinds])[0]
        getattr(self, f"_fault_{kind}")()
        jitter = self.rng.randrange(self.p.nemesis_every_ms)
        self.at(self.now + self.p.nemesis_every_ms // 2 + jitter, self._nemesis)

    def _fault_crash(self) -> None:
        alive = self._alive()
        if not alive:
            return
        leader = self._leader()
        n = leader if leader is not None and self.rng.random() < 0.5 else self.rng.choice(alive)
        if self.rng.random() < self.p.crash_mid_ready:
            n.crash_after_persist = True
            self.note(f"nemesis: node {n.id} will crash after its next persist")
        else:
            self._crash(n, "kill -9")
        self.at(self.now + 50 + self.rng.randrange(600), lambda: self._restart(n))

    def _crash(self, n: SimNode, how: str) -> None:
        if n.raw is None:
            return
        self.stats["crashes"] += 1
        self.note(f"nemesis: node {n.id} crashes ({how})")
        n.crash()
        if self.p.report_crashes:
            # Its connections close: each peer's transport notices, a little later.
            for other in self._alive():
                report = functools.partial(self._report_unreachable, other, other.incarnation, n.id)
                self.at(self.now + self.rng.randrange(5), report)

    def _report_unreachable(self, n: SimNode, incarnation: int, peer: int) -> None:
        if n.raw is None or n.incarnation != incarnation:
            return
        n.raw.report_unreachable(peer)
        self._process(n)

    def _restart(self, n: SimNode) -> None:
        n.crash_after_persist = False
        if n.raw is not None:
            return
        n.start()
        self.note(f"node {n.id} restarts (term {n.disk.hard_state.term})")

    def _fault_partition(self) -> None:
        ids = sorted(self.nodes)
        self.stats["partitions"] += 1
        leader = self._leader()
        if leader is not None and self.rng.random() < 0.5:
            self.faults.isolate(leader.id, set(ids))
            self.note(f"nemesis: isolate leader {leader.id}")
        else:
            self.rng.shuffle(ids)
            cut = self.rng.randrange(1, len(ids))
            a, b = ids[:cut], ids[cut:]
            for x in a:
                for y in b:
                    self.faults.cut(x, y)
            self.note(f"nemesis: partition {sorted(a)} | {sorted(b)}")
        self.at(self.now + 100 + self.rng.randrange(800), self._heal_partition)

    def _fault_one_way(self) -> None:
        ids = sorted(self.nodes)
        a, b = self.rng.sample(ids, 2)
        self.faults.blocked.add((a, b))
        self.note(f"nemesis: drop messages {a} -> {b}")
        self.at(self.now + 100 + self.rng.randrange(800), self._heal_partition)

    def _heal_partition(self) -> None:
        if self.faults.blocked:
            self.note("nemesis: network healed")
        self.faults.blocked.clear()

    def _fault_flaky(self) -> None:
        self.faults.loss = self.rng.choice([0.0, 0.05, 0.3])
        self.faults.duplicate = self.rng.choice([0.0, 0.1])
        self.note(f"nemesis: loss {self.faults.loss}, duplicate {self.faults.duplicate}")

    def _fault_transfer(self) -> None:
        leader = self._leader()
        if leader is None or leader.raw is None:
            return
        voters = sorted(leader.raw.raft.conf.voters - {leader.id})
        if not voters:
            return
        to = self.rng.choice(voters)
        try:
            leader.raw.transfer_leadership(to)
        except (ProposalDropped, ConfChangeError):
            return
        self.stats["transfers"] += 1
        self.note(f"nemesis: leader {leader.id} transfers to {to}")
        self._process(leader)

    def _fault_membership(self) -> None:
        leader = self._leader()
        if leader is None or leader.raw is None:
            return
        conf = leader.raw.raft.conf
        options: list[tuple[str, Any]] = []
        for lid in sorted(conf.learners):
            options.append(("promote", lid))
        if len(conf.voters) > 3:
            options += [("remove", v) for v in sorted(conf.voters)]
        if len(conf.members()) < 6:
            options.append(("add", None))
        for lid in sorted(conf.learners):
            options.append(("remove", lid))
        what, node = self.rng.choice(options)
        if what == "add":
            node = self.next_id
            cc = ConfChange(ConfChangeType.ADD_LEARNER, node)
        elif what == "promote":
            cc = ConfChange(ConfChangeType.ADD_VOTER, node)
        else:
            cc = ConfChange(ConfChangeType.REMOVE, node)
        try:
            leader.raw.propose_conf_change(cc)
        except (ProposalDropped, ConfChangeError) as e:
            self.note(f"nemesis: {what} {node} refused: {e}")
            return
        self.stats["conf_changes"] += 1
        self.note(f"nemesis: leader {leader.id} proposes {what} {node}")
        if what == "add":
            self.next_id += 1
            self._add_node(node, ConfState())  # joins with no configuration
        self._process(leader)

    # -- recovery ------------------------------------------------------------------

    def _heal(self) -> None:
        self.recovering = True
        self.faults.heal()
        self.note("recovery: network healed, every member restarted")
        for n in self.nodes.values():
            if n.raw is None:
                n.start()
        self._probe()

    def _probe(self) -> None:
        """Propose a probe write at each new leader until one commits."""
        if self.liveness_ok_at is not None:
            return
        leader = self._leader()
        if leader is not None and leader.raw is not None:
            who = (leader.id, leader.raw.term, leader.incarnation)
            if who != self._probed or self._liveness_req not in self.writes:
                self._probed = who
                self._liveness_req = self._write(leader)
        self.at(self.now + 50, self._probe)

    def _final_members(self) -> list[SimNode]:
        leader = self._leader()
        if leader is None or leader.raw is None:
            return []
        return [self.nodes[i] for i in sorted(leader.raw.raft.conf.members())]

    def _converged(self) -> bool:
        if self.liveness_ok_at is None:
            return False
        members = self._final_members()
        if not members or any(m.sm is None for m in members):
            return False
        states = {(m.sm.applied, m.sm.chain) for m in members}  # type: ignore[union-attr]
        return len(states) == 1 and members[0].sm.applied >= self.max_acked  # type: ignore[union-attr]

    def _final_checks(self) -> None:
        if self.liveness_ok_at is None:
            self.check.fail(
                "liveness",
                f"no proposal committed within {self.p.liveness_ms}ms after healing",
            )
        if not self._converged():
            states = {m.id: (m.sm.applied if m.sm else None) for m in self._final_members()}
            self.check.fail(
                "convergence",
                f"members did not reach the same state after healing: applied {states}",
            )


def run_seed(seed: int, params: SimParams | None = None) -> SimResult:
    return Simulation(seed, params).run()

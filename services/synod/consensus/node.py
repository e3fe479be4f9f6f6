"""The member's engine: drives the Raft core's Ready loop on the asyncio loop.

One task owns the RawNode. Everything else talks to it through cheap calls
that append to a list and set an event: `deliver` (peer messages), `propose`
(client writes, awaited until applied) and `read_barrier` (linearizable reads).
Each turn of the loop takes *everything* that arrived since the last turn:

    step all messages, count ticks, propose all new entries in one call,
    ask one ReadIndex for all new reads (unless one is in flight)  ->  ready()
    send what does not wait for the disk (a leader's appends: thesis §10.2.1)
    apply committed entries (resolving their waiters), serve reads: they are
        on a quorum's disks already, so this need not wait for our own write
    persist (one fsync, in a worker thread; new requests keep queueing meanwhile)
    send the rest, advance

(A follower's small write is the exception: it is fsynced on the loop and
acknowledged before the apply; see `_handle_ready`.)

so the cost of a Ready — an fsync, an append message per follower, a
heartbeat round — is shared by every request in the batch. That is group
commit: the more concurrent requests, the more share each fsync.

A leader's new commit index travels on the next appends; when none follow
within `commit_broadcast_delay` (Config.lazy_commit), `flush_commit` sends it
on its own. A sequential client's next write usually comes sooner, so each of
its writes costs two peer messages fewer on every member (each one is a
wake-up of the receiving loop, ~250 us of CPU here).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import structlog

from synod.consensus.raft import (
    ConfChange,
    Entry,
    Message,
    ProposalDropped,
    RaftSafetyError,
    RawNode,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)

log = structlog.get_logger("synod.node")


def _call_safely(fn: Callable[..., None], *args: Any) -> None:
    """A listener's bug must not stop the member's Raft loop: log it and go on."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        log.error("listener_failed", listener=getattr(fn, "__qualname__", repr(fn)), error=repr(e))


#: a Ready at most this large is fsynced on the loop rather than in the WAL thread
INLINE_SYNC_MAX_ENTRIES = 4
INLINE_SYNC_MAX_BYTES = 64 * 1024


def _small(entries: Sequence[Entry]) -> bool:
    return len(entries) <= INLINE_SYNC_MAX_ENTRIES and (
        sum(len(e.data) for e in entries) <= INLINE_SYNC_MAX_BYTES
    )


def next_tick(due: float, now: float, period: float) -> float:
    """When the tick after the one due at `due` is due, the clock now reading `now`.

    Ticks stay on a fixed grid, so a callback that runs a little late does not
    push every later tick back (that once made ticks come every two periods:
    heartbeats half as often, elections twice as late). After a blocked loop
    the missed ticks are skipped rather than burst: Raft counts ticks, and a
    burst would look like an election timeout that never happened.
    """
    nxt = due + period
    if nxt <= now:
        nxt = now + period
    return nxt


class NotLeaderError(Exception):
    """No leader is known, so the request cannot be served now (UNAVAILABLE)."""


class StateMachine(Protocol):
    """What the node applies committed entries to (see apply.py)."""

    def apply(self, entry: Entry, term: int) -> tuple[int, Any] | None:
        """Apply one committed entry; return (request id, result) when it answers a request."""

    def snapshot_data(self) -> bytes: ...

    def restore(self, snapshot: Snapshot) -> None: ...


class Storage(Protocol):
    def persist_ready(self, rd: Ready) -> None: ...

    def compact(self, snapshot: Snapshot) -> None: ...


class Sender(Protocol):
    def send(self, msgs: Sequence[Message]) -> None: ...


class NodeMetrics(Protocol):
    def observe_ready(self, node: Node, rd: Ready) -> None: ...

    def observe_apply(self, seconds: float) -> None: ...

    def proposal_failed(self, n: int) -> None: ...

    def read_round_started(self) -> None: ...


class Node:
    def __init__(
        self,
        raw: RawNode,
        storage: Storage,
        state_machine: StateMachine,
        tick_seconds: float,
        snapshot_count: int,
        metrics: NodeMetrics | None = None,
        commit_broadcast_delay: float = 0.0,
        snapshot_catchup_entries: int = 0,
    ):
        self.raw = raw
        self.storage = storage
        self.sm = state_machine
        self.sender: Sender | None = None
        self.tick_seconds = tick_seconds
        self.snapshot_count = snapshot_count
        self.snapshot_catchup_entries = snapshot_catchup_entries
        self.metrics = metrics
        self.commit_broadcast_delay = commit_broadcast_delay
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_due = False
        self.applied = raw.raft.log.applied
        self.leader = 0
        self.role = Role.FOLLOWER
        self.term = raw.term
        #: called after each Ready with the entries just applied (watchers, member lists)
        self.on_applied: list[Callable[[], None]] = []
        #: called when the known leader changes
        self.on_leader_change: list[Callable[[int], None]] = []

        self._messages: list[Message] = []
        self._proposals: list[bytes] = []
        self._proposal_futures: list[tuple[int, asyncio.Future[Any]]] = []
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._new_reads: list[asyncio.Future[None]] = []
        self._reads_in_flight: dict[bytes, list[asyncio.Future[None]]] = {}
        self._reads_ready: list[tuple[int, list[asyncio.Future[None]]]] = []
        self._calls: list[Callable[[], None]] = []
        self._apply_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._ticks = 0
        self._wake = asyncio.Event()
        # Contexts must not repeat across restarts: a late answer to a read sent
        # by an earlier process must never match a new read.
        self._read_ids = itertools.count(int.from_bytes(os.urandom(7), "big") << 8)
        #: when (loop time) each in-flight read context was sent, to re-ask lost ones
        self._read_sent: dict[bytes, float] = {}
        self._io = ThreadPoolExecutor(1, thread_name_prefix="wal")
        self._stopped = False
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: BaseException | None = None
        self.done = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._run(), name="raft-ready-loop"))
        self._schedule_tick(loop, loop.time() + self.tick_seconds)

    def _schedule_tick(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        """Tick at loop time `at`, and from then on every tick_seconds."""

        def tick() -> None:
            if self._stopped:
                return
            self._ticks += 1
            self._wake.set()
            self._schedule_tick(loop, next_tick(at, loop.time(), self.tick_seconds))

        loop.call_at(at, tick)

    async def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._fail_all(NotLeaderError("member is shutting down"))
        self._io.shutdown(wait=True)

    # -- inputs (called from other coroutines on the same loop) --------------------

    def deliver(self, msgs: Sequence[Message]) -> None:
        self._messages.extend(msgs)
        self._wake.set()

    def call(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the node's loop turn (e.g. a report from the transport)."""
        self._calls.append(fn)
        self._wake.set()

    def report_snapshot(self, to: int, ok: bool) -> None:
        self.call(lambda: self.raw.report_snapshot(to, ok))

    def report_unreachable(self, to: int) -> None:
        self.call(lambda: self.raw.report_unreachable(to))

    def propose(self, request_id: int, data: bytes) -> asyncio.Future[Any]:
        """Propose an entry; the future resolves with the state machine's result once applied."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals.append(data)
        self._proposal_futures.append((request_id, fut))
        self._wake.set()
        return fut

    def forget(self, request_id: int) -> None:
        """The caller gave up waiting (deadline): stop tracking the request."""
        self._waiters.pop(request_id, None)

    def read_barrier(self) -> asyncio.Future[None]:
        """Resolves when local state reflects every write committed before this call."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._new_reads.append(fut)
        self._wake.set()
        return fut

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Propose a membership change on the leader; returns the index of its entry.

        Raises ProposalDropped (not leader, another change pending) or ConfChangeError.
        """
        self.raw.propose_conf_change(cc)
        self._wake.set()
        return self.raw.raft.log.last_index()

    def wait_applied(self, index: int) -> asyncio.Future[None]:
        """Resolves once this member has applied `index`."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.applied >= index:
            fut.set_result(None)
        else:
            self._apply_waiters.append((index, fut))
        return fut

    def transfer_leadership(self, to: int) -> None:
        self.raw.transfer_leadership(to)
        self._wake.set()

    # -- the loop ------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._stopped:
                await self._wake.wait()
                self._wake.clear()
                self._take_inputs()
                while self.raw.has_ready() and not self._stopped:
                    await self._handle_ready(self.raw.ready())
                self._schedule_commit_flush()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # a safety error or a storage failure: stop this member
            self.failure = e
            log.critical("raft_loop_failed", error=repr(e))
            self._fail_all(NotLeaderError(f"member failed: {e}"))
        finally:
            self.done.set()

    def _schedule_commit_flush(self) -> None:
        if self.raw.commit_due:
            if self._flush_timer is None:
                self._flush_timer = asyncio.get_running_loop().call_later(
                    self.commit_broadcast_delay, self._commit_flush_timer
                )
        elif self._flush_timer is not None:
            # The next appends carried it: no wake-up for nothing.
            self._flush_timer.cancel()
            self._flush_timer = None

    def _commit_flush_timer(self) -> None:
        self._flush_timer = None
        self._flush_due = True
        self._wake.set()

    def _take_inputs(self) -> None:
        raw = self.raw
        if self._flush_due:
            self._flush_due = False
            raw.flush_commit()
        calls, self._calls = self._calls, []
        for fn in calls:
            fn()
        msgs, self._messages = self._messages, []
        for m in msgs:
            try:
                raw.step(m)
            except RaftSafetyError:
                raise
            except ValueError as e:
                log.warning("message_dropped", sender=f"{m.sender:x}", reason=str(e))
        ticks, self._ticks = self._ticks, 0
        for _ in range(min(ticks, 10)):
            raw.tick()
        if self._proposals:
            props, self._proposals = self._proposals, []
            futs, self._proposal_futures = self._proposal_futures, []
            try:
                raw.propose(props)
            except ProposalDropped as e:
                err = NotLeaderError(str(e))
                for _, f in futs:
                    if not f.done():
                        f.set_exception(err)
                if self.metrics:
                    self.metrics.proposal_failed(len(futs))
            else:
                for rid, f in futs:
                    self._waiters[rid] = f
        if self._new_reads and not self._reads_in_flight:
            # One ReadIndex in flight at a time: reads that arrive meanwhile wait
            # for the next, so a busy member asks once per round trip, not once
            # per loop turn (a heartbeat round, or a forward to the leader, each).
            reads, self._new_reads = self._new_reads, []
            ctx = next(self._read_ids).to_bytes(8, "big")
            try:
                raw.read_index(ctx)
            except ProposalDropped as e:
                err = NotLeaderError(str(e))
                for f in reads:
                    if not f.done():
                        f.set_exception(err)
            else:
                self._reads_in_flight[ctx] = reads
                self._read_sent[ctx] = asyncio.get_running_loop().time()
                if self.metrics:
                    self.metrics.read_round_started()
        if self._reads_in_flight and ticks:
            self._retry_lost_reads()

    async def _handle_ready(self, rd: Ready) -> None:
        raw = self.raw
        if rd.soft_state is not None:
            self._on_soft_state(rd)
        early, late = rd.split_messages()
        if early and self.sender is not None:
            # A leader's appends leave now, so followers write while we do.
            self.sender.send(early)
        # Committed entries are on a quorum's disks already, so they may be
        # applied (and their clients answered) while this Ready's new entries
        # are written, as etcd does: a busy member then answers a batch one
        # fsync sooner. A snapshot keeps the plain order: it must be installed
        # before anything after it is applied.
        apply_first = rd.snapshot is None
        if rd.sync and apply_first and not early and _small(rd.entries):
            # A follower's small write (what a sequential client causes): fsync
            # on the loop, acknowledge, then apply. Handing a write this small to
            # the WAL thread and back costs more than the fsync itself (two
            # thread hand-offs, ~200 us each here), and the acknowledgement is
            # what the leader, and the client, wait for. A leader keeps the
            # thread: its loop takes new requests while its disk works, and
            # fsyncing on it measured no better (docs/performance.md, seventh round).
            self.storage.persist_ready(rd)
            if late and self.sender is not None:
                self.sender.send(late)
            late = ()
            self._apply_ready(rd)
        elif rd.sync:
            # An fsync: off the loop, so requests keep queueing for the next batch.
            # It starts before the apply below, so the disk works while we do.
            written = asyncio.get_running_loop().run_in_executor(
                self._io, self.storage.persist_ready, rd
            )
            try:
                if apply_first:
                    self._apply_ready(rd)
            finally:
                await written
        else:
            if apply_first:
                self._apply_ready(rd)
            if rd.must_sync():
                self.storage.persist_ready(rd)  # a small write, no fsync: not worth a thread hop
        if late and self.sender is not None:
            self.sender.send(late)
        if not apply_first:
            self._apply_ready(rd)
        if self.metrics is not None and (
            rd.soft_state is not None or rd.hard_state is not None or rd.committed_entries
        ):
            self.metrics.observe_ready(self, rd)
        raw.advance(rd)
        await self._maybe_snapshot()

    def _apply_ready(self, rd: Ready) -> None:
        """Ready step 3: install the snapshot, apply committed entries, serve reads."""
        t0 = time.perf_counter()
        if rd.snapshot is not None and rd.snapshot.meta.index > self.applied:
            self.sm.restore(rd.snapshot)
            self.applied = rd.snapshot.meta.index
            log.info("snapshot_installed", index=self.applied)
        if rd.committed_entries:
            self._apply(rd.committed_entries)
        for rs in rd.read_states:
            self._read_sent.pop(rs.context, None)
            futs = self._reads_in_flight.pop(rs.context, None)
            if futs:
                self._reads_ready.append((rs.index, futs))
        if rd.read_states and self._new_reads and not self._reads_in_flight:
            self._wake.set()  # the reads that waited for this answer go next
        if self._reads_ready:
            self._serve_reads()
        if self._apply_waiters:
            self._wake_apply_waiters()
        if rd.committed_entries or rd.snapshot is not None:
            # Only Readies that applied something: most turns of a busy member
            # carry just messages, and each observation takes a lock.
            if self.metrics is not None:
                self.metrics.observe_apply(time.perf_counter() - t0)
            for fn in self.on_applied:
                _call_safely(fn)

    def _apply(self, entries: Sequence[Entry]) -> None:
        term = self.raw.term
        waiters = self._waiters
        for e in entries:
            if e.index <= self.applied:
                continue
            out = self.sm.apply(e, term)
            self.applied = e.index
            if out is not None:
                fut = waiters.pop(out[0], None)
                if fut is not None and not fut.done():
                    result = out[1]
                    if isinstance(result, BaseException):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)

    def _serve_reads(self) -> None:
        keep = []
        for index, futs in self._reads_ready:
            if index <= self.applied:
                for f in futs:
                    if not f.done():
                        f.set_result(None)
            else:
                keep.append((index, futs))
        self._reads_ready = keep

    def _retry_lost_reads(self) -> None:
        """Ask again for reads unanswered for an election timeout (the request or the
        answer was lost: a broken peer stream, a leader that stepped down and back)."""
        now = asyncio.get_running_loop().time()
        limit = self.tick_seconds * self.raw.raft.cfg.election_tick
        for ctx in [c for c, t in self._read_sent.items() if now - t > limit]:
            del self._read_sent[ctx]
            futs = [f for f in self._reads_in_flight.pop(ctx, []) if not f.done()]
            self._new_reads.extend(futs)
        if self._new_reads:
            self._wake.set()

    def _wake_apply_waiters(self) -> None:
        keep = []
        for index, fut in self._apply_waiters:
            if index <= self.applied:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((index, fut))
        self._apply_waiters = keep

    def _on_soft_state(self, rd: Ready) -> None:
        s = rd.soft_state
        assert s is not None
        # A leader that stepped down and was re-elected keeps its id but not
        # its pending reads: compare the term too.
        changed = (s.leader, s.term) != (self.leader, self.term)
        self.leader, self.role, self.term = s.leader, s.role, s.term
        if not changed:
            return
        log.info("leader_changed", leader=f"{s.leader:x}", term=s.term, role=s.role.name)
        # ReadIndex requests in flight die with the old leader: ask the new one.
        if self._reads_in_flight:
            for futs in self._reads_in_flight.values():
                self._new_reads.extend(futs)
            self._reads_in_flight.clear()
            self._read_sent.clear()
            self._wake.set()
        for fn in self.on_leader_change:
            _call_safely(fn, s.leader)

    async def _maybe_snapshot(self) -> None:
        log_ = self.raw.raft.log
        if self.applied - log_.snapshot.meta.index < self.snapshot_count:
            return
        index = self.applied
        term = log_.term(index)
        if term is None:
            return
        snap = Snapshot(
            SnapshotMeta(index, term, self.raw.raft.conf_state_at(index)), self.sm.snapshot_data()
        )
        await asyncio.get_running_loop().run_in_executor(self._io, self.storage.compact, snap)
        # The WAL drops everything the snapshot covers; the log in memory keeps
        # the last entries behind it, so a follower trailing by less than that
        # gets appends. Without them it needs the whole snapshot, and a proposal
        # it forwarded that lands inside the snapshot is never applied there as
        # an entry: its client would wait out the deadline.
        self.raw.compact(snap, keep=self.snapshot_catchup_entries)
        log.info("snapshot_taken", index=index, bytes=len(snap.data))

    def _fail_all(self, err: Exception) -> None:
        pending: list[asyncio.Future[Any]] = list(self._waiters.values())
        pending += [f for _, f in self._proposal_futures]
        pending += self._new_reads
        for futs in self._reads_in_flight.values():
            pending += futs
        for _, futs in self._reads_ready:
            pending += futs
        pending += [f for _, f in self._apply_waiters]
        self._apply_waiters.clear()
        for f in pending:
            if not f.done():
                f.set_exception(err)
        self._waiters.clear()
        self._proposal_futures.clear()
        self._new_reads.clear()
        self._reads_in_flight.clear()
        self._reads_ready.clear()

"""The Ready/Advance interface: the whole API a caller needs to drive a member.

The loop a caller runs (see docs/raft.md):

    node.tick() / node.step(msg) / node.propose([...]) / node.read_index(ctx)
    node.flush_commit()           # with Config.lazy_commit, a moment after commit_due
    ready = node.ready()          # everything to do, in one batch
    early, late = ready.split_messages()
    send(early)                   # a leader's appends go out while it writes (thesis §10.2.1)
    persist(ready)                # snapshot, entries, hard state; one fsync
    send(late)                    # only now: they may depend on what was persisted
    apply(ready)                  # snapshot, committed entries, then read states
    node.advance(ready)           # acknowledge; the next ready() may follow

Between ready() and advance() the caller may keep stepping messages and
proposals in; they land in the next Ready. Only one Ready is out at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

from .confchange import ConfChange
from .log import RaftSafetyError
from .messages import Entry, HardState, Message, ReadState, Ready, Role, Snapshot, SoftState
from .raft import Config, Raft


class RawNode:
    def __init__(
        self,
        config: Config,
        hard_state: HardState,
        snapshot: Snapshot,
        entries: Sequence[Entry] = (),
        applied: int = 0,
    ):
        self.raft = Raft(config, hard_state, snapshot, entries, applied)
        self._prev_hard = self.raft.hard_state()
        self._prev_soft: SoftState | None = None
        self._outstanding: Ready | None = None

    # -- inputs ----------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def step(self, m: Message) -> None:
        if m.to != self.raft.id:
            raise ValueError(f"message for {m.to} stepped into {self.raft.id}")
        self.raft.step(m)

    def campaign(self) -> None:
        self.raft.campaign()

    def propose(self, data: Sequence[bytes]) -> None:
        """Propose entries; raises ProposalDropped if they cannot go anywhere now."""
        self.raft.propose(data)

    def propose_conf_change(self, cc: ConfChange) -> None:
        self.raft.propose_conf_change(cc)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; a ReadState with `context` comes back in a Ready."""
        self.raft.read_index(context)

    def transfer_leadership(self, to: int) -> None:
        self.raft.transfer_leadership(to)

    def report_snapshot(self, to: int, ok: bool) -> None:
        self.raft.report_snapshot(to, ok)

    def flush_commit(self) -> None:
        """Config.lazy_commit: send followers the commit index now, if they lack it."""
        self.raft.flush_commit()

    @property
    def commit_due(self) -> bool:
        """Config.lazy_commit: followers have not been told the latest commit index."""
        return self.raft.commit_due

    def report_unreachable(self, to: int) -> None:
        self.raft.report_unreachable(to)

    def compact(self, snapshot: Snapshot, keep: int = 0) -> None:
        self.raft.compact(snapshot, keep)

    # -- outputs ---------------------------------------------------------------

    def soft_state(self) -> SoftState:
        r = self.raft
        return SoftState(r.lead, r.role, r.term)

    def has_ready(self) -> bool:
        r = self.raft
        if self._outstanding is not None:
            return False
        if (
            r.msgs
            or r.read_states
            or r.append_due
            or r.reads.round_may_start()
            or r.log.has_unstable()
            or r.log.pending_snapshot is not None
            or r.log.committed > r.log.applied
        ):
            return True
        # Asked on every turn of the caller's loop: compare the fields rather
        # than build a HardState and a SoftState to compare.
        hard, soft = self._prev_hard, self._prev_soft
        if soft is None or (r.lead, r.role, r.term) != (soft.leader, soft.role, soft.term):
            return True  # the first Ready always tells the soft state
        return (r.term, r.vote, r.log.committed) != (hard.term, hard.vote, hard.commit)

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise RaftSafetyError("ready() called again before advance()")
        r = self.raft
        # Work deferred until now so that it is shared by everything stepped in
        # since the last Ready: one append per follower for all new proposals,
        # one heartbeat round for all new reads.
        if r.append_due:
            r.bcast_append()
        r.start_read_round()

        soft = self.soft_state()
        hard = r.hard_state()
        prev = self._prev_hard
        entries = r.log.unstable_entries()
        snapshot = r.log.pending_snapshot
        term_changed = (hard.term, hard.vote) != (prev.term, prev.vote)
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != prev else None,
            entries=entries,
            snapshot=snapshot,
            messages=tuple(r.msgs),
            committed_entries=r.log.next_committed_entries(),
            read_states=tuple(r.read_states),
            sync=bool(entries) or snapshot is not None or term_changed,
            term_changed=term_changed,
        )
        r.msgs = []
        r.read_states = []
        self._prev_soft = soft
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        if rd is not self._outstanding:
            raise RaftSafetyError("advance() with a Ready that is not the outstanding one")
        self._outstanding = None
        r = self.raft
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            if r.log.pending_snapshot is rd.snapshot:
                r.log.pending_snapshot = None
            r.log.applied_to(max(r.log.applied, min(rd.snapshot.meta.index, r.log.committed)))
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)
        if rd.entries:
            last = rd.entries[-1]
            r.persisted(last.index, last.term)

    # -- introspection -----------------------------------------------------------

    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def role(self) -> Role:
        return self.raft.role

    @property
    def leader(self) -> int:
        return self.raft.lead

    @property
    def term(self) -> int:
        return self.raft.term


__all__ = ["RawNode", "ReadState"]

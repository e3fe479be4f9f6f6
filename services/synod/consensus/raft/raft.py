"""The Raft state machine: one member's protocol logic, with no I/O at all.

It reacts to three kinds of input — a tick of the logical clock, a message from
a peer, a request from the local application — by changing its state and
queueing messages in `self.msgs`. It never reads a clock, a socket or a disk,
and its only randomness comes from the `rng` in its Config. `rawnode.py` turns
its state into Ready batches for the caller.

Each role has its own step function (`_step_follower`, `_step_candidate`,
`_step_leader`), held in `self._step_role`; what is common to all roles (term
handling, votes) is in `step`.

References: the Raft paper (§ numbers below) and Ongaro's thesis (thesis §).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from . import confchange, quorum
from .confchange import ConfChange, ConfChangeError
from .log import RaftLog, RaftSafetyError
from .messages import (
    NONE,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Role,
    Snapshot,
)
from .progress import Progress, ProgressState
from .readindex import ReadIndexQueue

log = structlog.get_logger("synod.raft")

MT = MessageType


class ProposalDropped(Exception):
    """The request could not be taken (no leader known, a transfer under way, ...).

    Nothing was appended; the caller may retry, typically on the leader.
    """


@dataclass(frozen=True)
class Config:
    #: this member's id (> 0)
    id: int
    #: the seeded source of the randomized election timeouts
    rng: random.Random
    #: ticks without hearing from a leader before an election (randomized in [n, 2n))
    election_tick: int = 10
    #: ticks between heartbeats; must be smaller than election_tick
    heartbeat_tick: int = 1
    #: bytes of entry data per append message (at least one entry is always sent)
    max_size_per_msg: int = 1 << 20
    #: append messages in flight per follower before waiting for acknowledgements
    max_inflight_msgs: int = 256
    #: run a pre-election first, so a member that cannot win does not raise terms (thesis §9.6)
    pre_vote: bool = True
    #: leaders step down without a quorum; voters ignore elections while they hear a leader
    check_quorum: bool = True
    #: a leader whose commit index moves while it has no new entries to send does not
    #: tell its followers at once: the caller calls `flush_commit` a moment later,
    #: unless the next proposals' appends have carried the news already. Followers
    #: that forwarded the committed proposals are told at once, and heartbeats
    #: carry the commit index anyway. Off: every commit is broadcast at once.
    lazy_commit: bool = False
    #: a follower told by its transport that the leader cannot be reached (the
    #: connection broke: the process died or closed it) stops waiting for it: it
    #: forgets the leader, so it grants votes, and campaigns within two ticks
    #: instead of a whole election timeout. A follower that still hears the
    #: leader, and so rejects the (pre-)votes, keeps a live leader in place.
    campaign_on_leader_loss: bool = False
    #: a follower keeps at most one forward (PROPOSE) on its way to the leader;
    #: proposals made meanwhile are held and go together when the next append
    #: or heartbeat from the leader arrives, or at the next tick. An idle
    #: follower forwards at once; a busy one sends one batch per round trip
    #: instead of one small message per turn of its loop.
    batch_forwards: bool = False

    def __post_init__(self) -> None:
        if self.id <= 0:
            raise ValueError("id must be > 0")
        if not 0 < self.heartbeat_tick < self.election_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight_msgs < 1:
            raise ValueError("max_inflight_msgs must be >= 1")


class Raft:
    def __init__(
        self,
        config: Config,
        hard_state: HardState,
        snapshot: Snapshot,
        entries: Sequence[Entry] = (),
        applied: int = 0,
    ):
        """Start (or restart) from what the caller persisted.

        A brand-new cluster passes a Snapshot at index 0 whose `meta.conf` lists
        the initial voters; a member joining an existing cluster passes an empty
        configuration and learns it from the leader.
        """
        self.cfg = config
        self.id = config.id
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.log = RaftLog(snapshot, entries, hard_state.commit, applied)
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.prs: dict[int, Progress] = {}
        #: the configuration in force: the newest in the log, else the snapshot's
        self.conf: ConfState = snapshot.meta.conf
        #: index of the entry that set `conf` (or of the snapshot)
        self.conf_index = snapshot.meta.index
        self._refresh_conf_from(self.log.first_index())
        self.votes: dict[int, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self.lead_transferee = NONE
        self.reads = ReadIndexQueue()
        self.read_states: list[ReadState] = []
        self.msgs: list[Message] = []
        #: proposals (or, without lazy_commit, a commit) arrived since the last broadcast
        self.append_due = False
        #: lazy_commit: the commit index moved and followers have not been told
        self.commit_due = False
        #: leader, lazy_commit: for each follower with forwarded proposals (PROPOSE)
        #: not yet committed, (first, last) index of them; it hears of a commit at once
        self.forwarded: dict[int, tuple[int, int]] = {}
        #: batch_forwards: a PROPOSE went to the leader and no word from it since
        self.forward_in_flight = False
        #: batch_forwards: proposals held until that word comes
        self.forward_held: list[Entry] = []
        self._step_role: Callable[[Message], None] = self._step_follower
        self._reset_randomized_timeout()

    # -- configuration -------------------------------------------------------

    def promotable(self) -> bool:
        """Whether this member may campaign: only voters may."""
        return self.id in self.conf.voters

    def _refresh_conf_from(self, lowest_changed: int) -> None:
        """Re-derive `conf` after the log changed at or above `lowest_changed`."""
        if lowest_changed > self.conf_index and not self._has_conf_entry_from(lowest_changed):
            return
        for e in reversed(self.log.entries):
            if e.type == EntryType.CONF_CHANGE:
                _, conf = confchange.decode(e.data)
                self._set_conf(conf, e.index)
                return
        self._set_conf(self.log.snapshot.meta.conf, self.log.snapshot.meta.index)

    def _has_conf_entry_from(self, index: int) -> bool:
        off = self.log.offset()
        return any(
            e.type == EntryType.CONF_CHANGE for e in self.log.entries[max(index - off - 1, 0) :]
        )

    def _set_conf(self, conf: ConfState, index: int) -> None:
        changed = conf != self.conf
        self.conf, self.conf_index = conf, index
        if changed and self.role == Role.LEADER:
            self._sync_progress()
            if self.lead_transferee not in self.conf.voters:
                self.lead_transferee = NONE

    def _sync_progress(self) -> None:
        """Track exactly the current members (a leader's duty)."""
        members = self.conf.members()
        for node in list(self.prs):
            if node not in members:
                del self.prs[node]
        for node in members:
            pr = self.prs.get(node)
            if pr is None:
                pr = self.prs[node] = Progress(
                    self.log.last_index() + 1, self.cfg.max_inflight_msgs
                )
                pr.recent_active = True  # give a new member one check-quorum round
            pr.learner = node in self.conf.learners

    # -- role changes ----------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.votes = {}
        self.lead_transferee = NONE
        self.reads.clear()
        self.append_due = False
        self.commit_due = False
        self.forwarded = {}

    def _reset_randomized_timeout(self) -> None:
        et = self.cfg.election_tick
        self.randomized_election_timeout = et + self.cfg.rng.randrange(et)

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        self._step_role = self._step_follower
        self.prs = {}
        log.debug("became_follower", id=self.id, term=term, lead=lead)

    def _become_pre_candidate(self) -> None:
        # A pre-candidate changes neither its term nor its vote (thesis §9.6).
        self.role = Role.PRE_CANDIDATE
        self._step_role = self._step_candidate
        self.votes = {}
        self.lead = NONE
        self.prs = {}
        log.debug("became_pre_candidate", id=self.id, term=self.term)

    def _become_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise RaftSafetyError("a leader cannot become a candidate")
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._step_role = self._step_candidate
        self.prs = {}
        log.debug("became_candidate", id=self.id, term=self.term)

    def _become_leader(self) -> None:
        if self.role == Role.FOLLOWER:
            raise RaftSafetyError("a follower cannot become leader without an election")
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self._step_role = self._step_leader
        self.prs = {}
        self._sync_progress()
        me = self.prs.get(self.id)
        if me is not None:
            me.match = self.log.stable
            me.become_replicate()
        # A no-op entry of the new term: committing it commits everything before
        # it (§5.4.2) and lets ReadIndex and configuration changes proceed.
        self._append([Entry(self.term, 0)])
        log.info("became_leader", id=self.id, term=self.term)
        self._release_forwards()  # what we held for the old leader is ours to append

    # -- elections -------------------------------------------------------------

    def campaign(self, skip_pre_vote: bool = False, transfer: bool = False) -> None:
        """Start an election: a pre-election first unless pre-vote is off or skipped.

        `transfer` marks an election the old leader asked for (TIMEOUT_NOW):
        voters then grant even while they still hear from that leader.
        """
        if not self.promotable() or self.role == Role.LEADER:
            return
        if self.cfg.pre_vote and not (skip_pre_vote or transfer):
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        self.votes[self.id] = True
        if self._tally() is True:
            # We are the only voter.
            self._won_election()
            return
        for node in sorted(self.conf.voters):
            if node == self.id:
                continue
            self._send(
                Message(
                    vote_type,
                    to=node,
                    sender=self.id,
                    term=term,
                    index=self.log.last_index(),
                    log_term=self.log.last_term(),
                    transfer=transfer,
                )
            )

    def _tally(self) -> bool | None:
        return quorum.vote_result(self.conf.voters, self.votes)

    def _won_election(self) -> None:
        if self.role == Role.PRE_CANDIDATE:
            self.campaign(skip_pre_vote=True)  # the real election; the pre-election is won
        else:
            self._become_leader()

    # -- ticks -----------------------------------------------------------------

    def tick(self) -> None:
        if self.forward_in_flight or self.forward_held:
            # No word from the leader for a tick: the forward may be lost, so
            # stop waiting for its answer (held proposals go to whoever leads).
            self._release_forwards()
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.campaign()

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        stall_limit = max(2, self.cfg.election_tick // 2)
        for node, pr in self.prs.items():
            if node != self.id and pr.stalled_tick(self.log.last_index(), stall_limit):
                # Half an election timeout without an acknowledgement while it
                # lags: the appends we streamed were lost. Probe from its match.
                pr.become_probe()
                self._send_append(node, pr)
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                log.info("leader_lost_quorum", id=self.id, term=self.term)
                self.become_follower(self.term, NONE)
                return
            if self.lead_transferee != NONE:
                log.info("leader_transfer_aborted", id=self.id, to=self.lead_transferee)
                self.lead_transferee = NONE
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def _quorum_active(self) -> bool:
        """Did a quorum talk to us since the last check? Resets the marks for the next round."""
        active = {self.id: True}
        for node, pr in self.prs.items():
            if node != self.id:
                active[node] = pr.recent_active
                pr.recent_active = False
        return quorum.vote_result(self.conf.voters, active) is True

    # -- the message entry point -------------------------------------------------

    def step(self, m: Message) -> None:
        if m.type in (MT.PROPOSE, MT.READ_INDEX):
            # Requests forwarded by a peer carry no term of consequence.
            self._step_role(m)
            return
        if m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE) and not m.transfer and self._in_lease():
                # We heard from a leader within the election timeout: ignore
                # the election (thesis §4.2.3), so a member that was removed or
                # partitioned cannot disrupt a working cluster.
                return
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change our term
            elif m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
                self.become_follower(m.term, m.sender)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if m.type in (MT.APPEND, MT.HEARTBEAT):
                # A stale leader: tell it our term so that it steps down. With
                # check-quorum and pre-vote this is how it learns, since we
                # will not raise terms through elections it can see.
                self._send(Message(MT.APPEND_RESP, to=m.sender, sender=self.id, term=self.term))
            elif m.type == MT.PRE_VOTE:
                self._send(
                    Message(
                        MT.PRE_VOTE_RESP, to=m.sender, sender=self.id, term=self.term, reject=True
                    )
                )
            return

        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        else:
            self._step_role(m)

    def _in_lease(self) -> bool:
        return (
            self.cfg.check_quorum
            and self.lead != NONE
            and self.election_elapsed < self.cfg.election_tick
        )

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.sender
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # The response carries the candidate's term; for a pre-vote that is
            # a term we have not entered, which is the point.
            self._send(Message(resp, to=m.sender, sender=self.id, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.sender
        else:
            self._send(Message(resp, to=m.sender, sender=self.id, term=self.term, reject=True))

    # -- followers -------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.PROPOSE:
            return  # only the proposer's own node forwards; never forward twice
        if t in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            self.election_elapsed = 0
            self.lead = m.sender
            if t == MT.APPEND:
                self._handle_append(m)
            elif t == MT.HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
            if self.forward_in_flight or self.forward_held:
                self._release_forwards()  # the leader is sending: the next batch may go
        elif t == MT.TIMEOUT_NOW:
            log.info("transfer_timeout_now", id=self.id, term=self.term)
            self.campaign(transfer=True)
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(
                Message(
                    MT.APPEND_RESP,
                    to=m.sender,
                    sender=self.id,
                    term=self.term,
                    index=self.log.committed,
                )
            )
            return
        last_before = self.log.last_index()
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            if m.entries:
                self._refresh_conf_from(min(m.entries[0].index, last_before + 1))
            elif m.no_ack:
                return  # only a commit index, for a leader that knows our match
            self._send(
                Message(MT.APPEND_RESP, to=m.sender, sender=self.id, term=self.term, index=last_new)
            )
            return
        hint_index, hint_term = self.log.find_conflict_by_term(m.index, m.log_term)
        self._send(
            Message(
                MT.APPEND_RESP,
                to=m.sender,
                sender=self.id,
                term=self.term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                hint_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        # The leader sends commit <= our match, so every index up to it agrees with its log.
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self._send(
            Message(
                MT.HEARTBEAT_RESP,
                to=m.sender,
                sender=self.id,
                term=self.term,
                read_round=m.read_round,
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            raise RaftSafetyError(f"snapshot message without a snapshot from {m.sender}")
        idx, term = snap.meta.index, snap.meta.term
        if idx <= self.log.committed:
            pass  # nothing new in it
        elif self.log.match_term(idx, term):
            # We already hold the entry it ends at: just commit up to there.
            self.log.commit_to(idx)
        else:
            log.info("snapshot_restore", id=self.id, index=idx, term=term)
            self.log.restore(snap)
            self._set_conf(snap.meta.conf, idx)
        self._send(
            Message(
                MT.APPEND_RESP,
                to=m.sender,
                sender=self.id,
                term=self.term,
                index=self.log.committed,
            )
        )

    # -- candidates ------------------------------------------------------------

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            # Someone won this term (§5.2): follow it.
            self.become_follower(m.term, m.sender)
            self._step_follower(m)
            return
        my_resp = MT.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MT.VOTE_RESP
        if t != my_resp:
            return
        self.votes.setdefault(m.sender, not m.reject)
        result = self._tally()
        if result is True:
            self._won_election()
        elif result is False:
            self.become_follower(self.term, NONE)

    # -- leaders ---------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.PROPOSE:
            if self.lead_transferee == NONE:
                before = self.log.last_index()
                self._append([e for e in m.entries if e.type == EntryType.NORMAL])
                last = self.log.last_index()
                if self.cfg.lazy_commit and last > before:
                    first, _ = self.forwarded.get(m.sender, (before + 1, 0))
                    self.forwarded[m.sender] = (first, last)
            return
        if t == MT.READ_INDEX:
            self._read_index(m.context, m.sender)
            return
        pr = self.prs.get(m.sender)
        if pr is None:
            return  # not (or no longer) a member
        if t == MT.APPEND_RESP:
            pr.recent_active = True
            self._handle_append_resp(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            self._handle_heartbeat_resp(m, pr)

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        if m.reject:
            hint = m.reject_hint
            if m.hint_term > 0:
                hint, _ = self.log.find_conflict_by_term(m.reject_hint, m.hint_term)
            if pr.maybe_decr_to(m.index, hint):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.sender, pr)
            return
        updated = pr.maybe_update(m.index)
        if not updated and not (pr.state == ProgressState.PROBE and pr.match == m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        if self._maybe_commit():
            self._commit_advanced()
        if self.role == Role.LEADER:
            # Entries it still lacks (they carry the commit index too); with
            # lazy_commit off, a commit has just scheduled a broadcast instead.
            if not self.append_due:
                self._send_append(m.sender, pr, send_empty=False)
        else:
            return  # our own removal committed: we stepped down
        if m.sender == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.sender)

    def _handle_heartbeat_resp(self, m: Message, pr: Progress) -> None:
        behind = pr.match < self.log.last_index()
        if pr.state == ProgressState.PROBE:
            pr.probe_sent = False
        elif pr.state == ProgressState.REPLICATE and pr.is_paused():
            # It answers heartbeats but its window stays full: an acknowledgement
            # may have been lost with a broken stream. Free one slot so that the
            # next append goes now (a gap in its log turns into a rejection and a
            # probe), rather than after stalled_tick's half election timeout.
            # etcd-raft does the same.
            pr.free_first()
        if behind:
            self._send_append(m.sender, pr, send_empty=pr.state == ProgressState.PROBE)
        if m.read_round > pr.read_ack:
            pr.read_ack = m.read_round
            self._release_reads()

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum has persisted, if it is of our term.

        Entries of earlier terms are never committed by counting replicas
        (§5.4.2): they commit when an entry of the current term above them does.
        """
        acked = {node: pr.match for node, pr in self.prs.items()}
        acked[self.id] = self.log.stable
        index = quorum.committed_index(self.conf.voters, acked)
        if index <= self.log.committed or self.log.term(index) != self.term:
            return False
        first_in_term = self.log.term(self.log.committed) != self.term
        self.log.commit_to(index)
        if first_in_term:
            deferred, self.reads.deferred = self.reads.deferred, []
            for context, requester in deferred:
                self._read_index(context, requester)
        if self.conf_index <= index and self.id not in self.conf.voters:
            # Our own removal (or demotion) is committed: hand over by stepping down.
            log.info("leader_removed_steps_down", id=self.id, term=self.term)
            self.become_follower(self.term, NONE)
        return True

    def _commit_advanced(self) -> None:
        """The commit index moved: decide how followers hear of it."""
        if not self.cfg.lazy_commit:
            self.append_due = True
            return
        self.commit_due = True
        if self.forwarded:
            # A follower waiting to answer its client is told now.
            committed = self.log.committed
            for node, (first, last) in list(self.forwarded.items()):
                if first > committed:
                    continue
                if last > committed:
                    self.forwarded[node] = (committed + 1, last)
                else:
                    del self.forwarded[node]
                pr = self.prs.get(node)
                if pr is not None:
                    self._send_append(node, pr)

    def flush_commit(self) -> None:
        """lazy_commit: tell each follower the commit index, unless it was sent already.

        A follower that forwarded the committed proposals was told at once; a
        second message would only repeat it.
        """
        if not self.commit_due:
            return
        self.commit_due = False
        if self.role == Role.LEADER:
            committed = self.log.committed
            for node, pr in self.prs.items():
                if node != self.id and pr.sent_commit < committed:
                    self._send_append(node, pr)

    def _append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        last = self.log.last_index()
        numbered = [Entry(self.term, last + 1 + i, e.type, e.data) for i, e in enumerate(entries)]
        self.log.append(numbered)
        if any(e.type == EntryType.CONF_CHANGE for e in numbered):
            self._refresh_conf_from(numbered[0].index)
        self.append_due = True
        # With a single voter the entry commits as soon as it is persisted (see advance).

    def bcast_append(self) -> None:
        self.append_due = False
        self.commit_due = False  # the appends carry the commit index
        if self.role != Role.LEADER:
            return
        for node, pr in self.prs.items():
            if node != self.id:
                self._send_append(node, pr)

    def _send_append(self, to: int, pr: Progress, send_empty: bool = True) -> None:
        """Send `to` the entries it lacks; with none to send, only if `send_empty`.

        An empty append still carries the commit index and, in PROBE, asks
        whether the follower's log matches at `next - 1`.
        """
        paused = pr.is_paused()
        if paused and (pr.state != ProgressState.REPLICATE or self.log.committed <= pr.sent_commit):
            return
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None:
            self._send_snapshot(to, pr)
            return
        if paused:
            # A full window holds back entries, not the commit index: an append
            # that only carries it takes no slot (etcd-raft does the same), so a
            # follower waiting to answer its client is not held up by the window.
            entries: tuple[Entry, ...] = ()
        else:
            entries = self.log.slice(pr.next, self.log.last_index() + 1, self.cfg.max_size_per_msg)
        if not entries and not send_empty:
            return
        self._send(
            Message(
                MT.APPEND,
                to=to,
                sender=self.id,
                term=self.term,
                index=prev,
                log_term=prev_term,
                entries=entries,
                commit=self.log.committed,
                # Its answer would only repeat the match we know, or one the
                # appends in flight will bring: skip it.
                no_ack=not entries
                and pr.state == ProgressState.REPLICATE
                and (pr.match == prev or bool(pr.inflight)),
            )
        )
        pr.sent(entries[-1].index if entries else prev, len(entries))
        pr.sent_commit = max(pr.sent_commit, self.log.committed)

    def _send_snapshot(self, to: int, pr: Progress) -> None:
        snap = self.log.snapshot
        log.info("sending_snapshot", id=self.id, to=to, index=snap.meta.index)
        self._send(Message(MT.SNAPSHOT, to=to, sender=self.id, term=self.term, snapshot=snap))
        pr.become_snapshot(snap.meta.index)

    def _bcast_heartbeat(self) -> None:
        for node, pr in self.prs.items():
            if node == self.id:
                continue
            commit = min(pr.match, self.log.committed)
            self._send(
                Message(
                    MT.HEARTBEAT,
                    to=node,
                    sender=self.id,
                    term=self.term,
                    commit=commit,
                    read_round=self.reads.round,
                )
            )
            pr.sent_commit = max(pr.sent_commit, commit)

    def _send_timeout_now(self, to: int) -> None:
        log.info("transfer_send_timeout_now", id=self.id, to=to, term=self.term)
        self._send(Message(MT.TIMEOUT_NOW, to=to, sender=self.id, term=self.term))

    # -- ReadIndex ---------------------------------------------------------------

    def _read_index(self, context: bytes, requester: int) -> None:
        if self.log.term(self.log.committed) != self.term:
            # Until an entry of our term commits we do not know the true commit index.
            self.reads.deferred.append((context, requester))
            return
        if self.conf.voters == {self.id}:
            self._answer_read(self.log.committed, context, requester)
            return
        self.reads.add(self.log.committed, context, requester)

    def start_read_round(self) -> None:
        """Broadcast one heartbeat round confirming every read added since the last."""
        if self.role == Role.LEADER and self.reads.round_may_start():
            self.reads.start_round()
            self._bcast_heartbeat()
            self.heartbeat_elapsed = 0

    def _release_reads(self) -> None:
        acked = {node: pr.read_ack for node, pr in self.prs.items()}
        acked[self.id] = self.reads.round
        confirmed = quorum.committed_index(self.conf.voters, acked)
        for r in self.reads.release(confirmed):
            self._answer_read(r.index, r.context, r.requester)

    def _answer_read(self, index: int, context: bytes, requester: int) -> None:
        if requester == self.id:
            self.read_states.append(ReadState(index, context))
        else:
            self._send(
                Message(
                    MT.READ_INDEX_RESP,
                    to=requester,
                    sender=self.id,
                    term=self.term,
                    index=index,
                    context=context,
                )
            )

    # -- local requests ------------------------------------------------------------

    def propose(self, data: Sequence[bytes]) -> None:
        if self.role == Role.LEADER:
            if self.lead_transferee != NONE:
                raise ProposalDropped("leadership transfer in progress")
            self._append([Entry(0, 0, EntryType.NORMAL, d) for d in data])
        elif self.lead != NONE:
            entries = [Entry(0, 0, EntryType.NORMAL, d) for d in data]
            if self.forward_in_flight:
                self.forward_held.extend(entries)
            else:
                self._forward(entries)
        else:
            raise ProposalDropped("no leader")

    def _forward(self, entries: Sequence[Entry]) -> None:
        self._send(Message(MT.PROPOSE, to=self.lead, sender=self.id, entries=tuple(entries)))
        self.forward_in_flight = self.cfg.batch_forwards

    def _release_forwards(self) -> None:
        """batch_forwards: the leader answered (or a tick passed): send what was held.

        Held proposals go to the current leader, or into our own log if we
        lead now; with no leader known they wait for one.
        """
        self.forward_in_flight = False
        if not self.forward_held:
            return
        if self.role == Role.LEADER:
            held, self.forward_held = self.forward_held, []
            if self.lead_transferee == NONE:  # else dropped, as forwards are meanwhile
                self._append(held)
        elif self.lead != NONE:
            held, self.forward_held = self.forward_held, []
            self._forward(held)

    def propose_conf_change(self, cc: ConfChange) -> None:
        if self.role != Role.LEADER:
            raise ProposalDropped(
                "not the leader" if self.lead == NONE else f"leader is {self.lead}"
            )
        if self.lead_transferee != NONE:
            raise ProposalDropped("leadership transfer in progress")
        if self.conf_index > self.log.committed:
            raise ProposalDropped("another configuration change is not yet committed")
        if self.log.term(self.log.committed) != self.term:
            raise ProposalDropped("leader has not yet committed an entry in its term")
        new_conf = confchange.apply_change(self.conf, cc)  # raises ConfChangeError
        self._append([Entry(0, 0, EntryType.CONF_CHANGE, confchange.encode(cc, new_conf))])

    def read_index(self, context: bytes) -> None:
        if self.role == Role.LEADER:
            self._read_index(context, self.id)
        elif self.lead != NONE:
            self._send(Message(MT.READ_INDEX, to=self.lead, sender=self.id, context=context))
        else:
            raise ProposalDropped("no leader")

    def transfer_leadership(self, to: int) -> None:
        if self.role != Role.LEADER:
            raise ProposalDropped("not the leader")
        if to == self.id or to not in self.conf.voters:
            raise ConfChangeError(f"cannot transfer leadership to {to:x}: not another voter")
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        # The transfer must finish within an election timeout or it is abandoned.
        self.election_elapsed = 0
        log.info("leader_transfer_start", id=self.id, to=to, term=self.term)
        pr = self.prs[to]
        if pr.match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            # Catch it up from what it has acknowledged, not from what we
            # streamed optimistically (that may be lost).
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
            self._send_append(to, pr)

    def report_snapshot(self, to: int, ok: bool) -> None:
        """The transport finished (ok) or gave up (not ok) sending a snapshot to `to`."""
        pr = self.prs.get(to)
        if self.role != Role.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the follower's answer (or the next heartbeat) before probing.
        pr.probe_sent = True

    def report_unreachable(self, to: int) -> None:
        """The transport lost its connection to `to`.

        A leader stops streaming to it optimistically. A follower that lost its
        leader campaigns soon (Config.campaign_on_leader_loss).
        """
        pr = self.prs.get(to)
        if self.role == Role.LEADER and pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()
        elif self.cfg.campaign_on_leader_loss and self.role == Role.FOLLOWER and to == self.lead:
            log.info("leader_unreachable", id=self.id, leader=to, term=self.term)
            self.lead = NONE
            # The next tick or the one after, at random: two followers that saw
            # the same crash seldom campaign at once and split the vote (their
            # tick clocks are out of phase as well).
            soon = self.randomized_election_timeout - 1 - self.cfg.rng.randrange(2)
            self.election_elapsed = max(self.election_elapsed, soon)

    # -- output ------------------------------------------------------------------

    def persisted(self, index: int, term: int) -> None:
        """The caller has made entries up to (index, term) durable."""
        self.log.stable_to(index, term)
        if self.role == Role.LEADER and self._maybe_commit():
            self._commit_advanced()

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def compact(self, snapshot: Snapshot, keep: int = 0) -> None:
        """The application took `snapshot` at an index it has applied; drop the log before
        it, but for the last `keep` entries it covers (for followers a little behind)."""
        if snapshot.meta.conf != self._conf_at(snapshot.meta.index):
            raise RaftSafetyError("snapshot configuration does not match the log")
        self.log.compact(snapshot, keep)

    def _conf_at(self, index: int) -> ConfState:
        """The configuration at `index`, which is at or after the log's snapshot."""
        snap = self.log.snapshot.meta
        conf = snap.conf
        off = self.log.offset()
        for e in self.log.entries[snap.index - off : max(index - off, 0)]:
            if e.type == EntryType.CONF_CHANGE:
                conf = confchange.decode(e.data)[1]
        return conf

    def conf_state_at(self, index: int) -> ConfState:
        """The configuration in force at `index` (what a snapshot taken there must carry)."""
        return self._conf_at(index)

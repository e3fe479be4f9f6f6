"""What a leader knows about each follower's log, and how fast it may send to it.

A follower is in one of three states:
- PROBE: we do not know where its log matches ours; send one append at a time
  and wait for the answer (or the next heartbeat) before sending another.
- REPLICATE: its log matches up to `match`; stream appends optimistically, up to
  `max_inflight` messages not yet acknowledged (the flow-control window).
- SNAPSHOT: its log is behind our compacted log; a snapshot is on its way and
  nothing else is sent until it is acknowledged or fails.

Invariant: match < next.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Progress:
    def __init__(self, next_index: int, max_inflight: int, learner: bool = False):
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        #: in PROBE: an append is outstanding, so wait before sending another
        self.probe_sent = False
        self.pending_snapshot = 0
        #: heard from since the last check-quorum round
        self.recent_active = False
        self.learner = learner
        #: highest read round (see readindex.py) this follower has acknowledged
        self.read_ack = 0
        #: last index of each append message in flight, oldest first
        self.inflight: deque[int] = deque()
        self.max_inflight = max_inflight
        #: leader ticks since this follower last acknowledged anything new
        self.idle_ticks = 0
        #: highest commit index sent to this follower (lazy_commit: whether a
        #: flush has anything to tell it)
        self.sent_commit = 0

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"inflight={len(self.inflight)})"
        )

    def become_probe(self) -> None:
        # After a snapshot, resume right after it; otherwise right after the match.
        if self.state == ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        self.next = self.match + 1
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = index

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.idle_ticks = 0
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def maybe_update(self, index: int) -> bool:
        """The follower matches up to `index`; returns whether that is news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
            self.idle_ticks = 0
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def free_first(self) -> None:
        """Forget the oldest append in flight (its acknowledgement may be lost)."""
        if self.inflight:
            self.inflight.popleft()

    def maybe_decr_to(self, rejected: int, hint: int) -> bool:
        """The follower rejected an append at `rejected`; back off towards `hint`.

        Returns False when the rejection is stale (it answers an older message).
        """
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def stalled_tick(self, last_index: int, limit: int) -> bool:
        """Count a leader tick; true when streaming has made no progress for `limit` ticks."""
        if self.state != ProgressState.REPLICATE or self.match >= last_index:
            self.idle_ticks = 0
            return False
        self.idle_ticks += 1
        return self.idle_ticks >= limit

    def sent(self, last_index: int, count: int) -> None:
        """An append ending at `last_index` with `count` entries went out."""
        if self.state == ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflight.append(last_index)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

"""Bookkeeping for ReadIndex reads on the leader (thesis §6.4).

A read is safe at index `i` once the leader has (a) committed an entry of its
current term, so that `i` = its commit index covers every write acknowledged
before, and (b) heard from a quorum *after* the read arrived, proving it was
still the leader then. Step (b) is shared: every read that arrives before the
next heartbeat round waits for that round, so one round of heartbeats confirms
any number of reads.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PendingRead:
    round: int
    index: int
    context: bytes
    requester: int


class ReadIndexQueue:
    def __init__(self) -> None:
        #: the last round broadcast; heartbeats carry it and followers echo it
        self.round = 0
        #: reads waiting for a quorum to confirm their round, in round order
        self.pending: deque[PendingRead] = deque()
        #: reads waiting for the leader's first commit in its term: (context, requester)
        self.deferred: list[tuple[bytes, int]] = []
        #: reads were added since the last broadcast, so a new round is due
        self.round_due = False

    def add(self, index: int, context: bytes, requester: int) -> None:
        self.pending.append(PendingRead(self.round + 1, index, context, requester))
        self.round_due = True

    def start_round(self) -> int:
        self.round += 1
        self.round_due = False
        return self.round

    def release(self, confirmed_round: int) -> list[PendingRead]:
        """Reads whose round a quorum has now confirmed."""
        out = []
        while self.pending and self.pending[0].round <= confirmed_round:
            out.append(self.pending.popleft())
        return out

    def clear(self) -> None:
        """Leadership is lost: outstanding reads are dropped (their callers time out and retry)."""
        self.pending.clear()
        self.deferred.clear()
        self.round_due = False

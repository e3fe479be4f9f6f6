"""Bookkeeping for ReadIndex reads on the leader (thesis §6.4).

A read is safe at index `i` once the leader has (a) committed an entry of its
current term, so that `i` = its commit index covers every write acknowledged
before, and (b) heard from a quorum *after* the read arrived, proving it was
still the leader then. Step (b) is shared: every read that arrives before the
next heartbeat round waits for that round, so one round of heartbeats confirms
any number of reads. And one round at a time: reads that arrive while a round
is on its way wait for it to be confirmed and share the next, so a busy leader
confirms reads once per round trip, not once per turn of its loop.
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
        #: the highest round a quorum has confirmed
        self.confirmed = 0

    def add(self, index: int, context: bytes, requester: int) -> None:
        self.pending.append(PendingRead(self.round + 1, index, context, requester))
        self.round_due = True

    def round_may_start(self) -> bool:
        """A round is due and none is on its way.

        A round whose heartbeats were lost is confirmed by the next regular
        heartbeat, which carries the latest round too.
        """
        return self.round_due and self.confirmed >= self.round

    def start_round(self) -> int:
        self.round += 1
        self.round_due = False
        return self.round

    def release(self, confirmed_round: int) -> list[PendingRead]:
        """Reads whose round a quorum has now confirmed."""
        self.confirmed = max(self.confirmed, confirmed_round)
        out = []
        while self.pending and self.pending[0].round <= confirmed_round:
            out.append(self.pending.popleft())
        return out

    def clear(self) -> None:
        """Leadership is lost: outstanding reads are dropped (their callers time out and retry)."""
        self.pending.clear()
        self.deferred.clear()
        self.round_due = False
        self.confirmed = self.round  # nothing on its way for a later term to wait on

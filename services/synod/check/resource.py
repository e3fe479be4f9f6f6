"""The fenced resource the mutex workload's holders write to.

It lives in the harness process (not in the consensus store), so what it
accepted is known for certain and in order: it keeps the highest fencing token
it has accepted and refuses any write carrying a lower one, as a storage
service that honours fencing tokens would (docs/locks.md, *Fencing*). A holder
that lost its lock without knowing (its session expired during a partition or
a pause) and writes after a newer holder did is refused; one that writes
before any newer holder does is accepted, which is exactly what fencing
allows. Whether two holders were ever accepted with overlapping grants is for
the mutex checker to decide from the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FencedResource:
    highest: int = 0
    #: every write attempt in order: (token, accepted)
    writes: list[tuple[int, bool]] = field(default_factory=list)

    def write(self, token: int) -> bool:
        """Accept the write if ``token`` is no older than any accepted before."""
        accepted = token >= self.highest
        if accepted:
            self.highest = token
        self.writes.append((token, accepted))
        return accepted

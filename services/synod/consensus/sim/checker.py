"""The safety properties checked after every step of a simulation.

- Election Safety: at most one leader per term.
- Log Matching: two logs holding an entry with the same index and term hold
  the same entries up to it (checked on what members persist, by hash chain).
- Leader Completeness: a new leader holds every entry committed before it.
- State Machine Safety: no two members apply different entries at one index.
- Durability: a committed entry is never lost or replaced, across crashes.
- Linearizable reads: a ReadIndex read reflects every write acknowledged
  before the read began.
"""

from __future__ import annotations

from dataclasses import dataclass

from synod.consensus.raft import Entry, Role


@dataclass(frozen=True)
class Violation:
    time: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"t={self.time}ms {self.rule}: {self.detail}"


class SafetyViolation(Exception):
    def __init__(self, v: Violation):
        super().__init__(str(v))
        self.violation = v


class Checker:
    def __init__(self) -> None:
        self.now = 0
        self.leaders: dict[int, int] = {}
        #: (index, term) -> hash chain up to that entry, from any member's disk
        self.chains: dict[tuple[int, int], int] = {}
        #: index -> term of every entry known to be committed
        self.committed: dict[int, int] = {}
        self.max_committed = 0
        #: index -> (term, data) of every entry applied anywhere
        self.applied: dict[int, tuple[int, bytes]] = {}
        self.checks = 0

    def fail(self, rule: str, detail: str) -> None:
        raise SafetyViolation(Violation(self.now, rule, detail))

    def role(self, node: int, role: Role, term: int) -> None:
        self.checks += 1
        if role != Role.LEADER:
            return
        other = self.leaders.setdefault(term, node)
        if other != node:
            self.fail("election safety", f"nodes {other} and {node} both lead term {term}")

    def new_leader(self, node: int, term_at: dict[int, int | None], snapshot_index: int) -> None:
        """`term_at` maps committed indexes above the leader's snapshot to its log's terms."""
        self.checks += 1
        for index, term in term_at.items():
            if term != self.committed[index]:
                self.fail(
                    "leader completeness",
                    f"leader {node} of a new term has term {term} at committed index "
                    f"{index}, committed with term {self.committed[index]}",
                )

    def persisted(self, node: int, index: int, term: int, chain: int) -> None:
        self.checks += 1
        seen = self.chains.setdefault((index, term), chain)
        if seen != chain:
            self.fail(
                "log matching",
                f"node {node} holds entry ({index}, term {term}) after a prefix that "
                "differs from another member's",
            )

    def commit(self, node: int, index: int, term: int | None) -> None:
        self.checks += 1
        if term is None:
            return
        old = self.committed.setdefault(index, term)
        if old != term:
            self.fail(
                "durability",
                f"node {node} committed term {term} at index {index}, "
                f"where term {old} was committed before",
            )
        self.max_committed = max(self.max_committed, index)

    def apply(self, node: int, e: Entry) -> None:
        self.checks += 1
        old = self.applied.setdefault(e.index, (e.term, e.data))
        if old != (e.term, e.data):
            self.fail(
                "state machine safety",
                f"node {node} applied (term {e.term}, {e.data!r}) at {e.index}, "
                f"another member applied (term {old[0]}, {old[1]!r})",
            )

    def read(self, node: int, served_at: int, required: int) -> None:
        self.checks += 1
        if served_at < required:
            self.fail(
                "linearizable read",
                f"node {node} served a read at applied index {served_at}, but a write at "
                f"index {required} was acknowledged before the read began",
            )

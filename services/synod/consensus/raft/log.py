"""The replicated log as one member holds it in memory.

Indexes: the log holds entries `first_index() .. last_index()`; everything up to
and including `snapshot.meta.index` has been folded into the snapshot. The
entries the snapshot covers may stay for a while after it (`compact`'s `keep`),
so that a follower a little behind still gets appends and not a whole snapshot;
`offset()` is the index just before the first entry held, and never above the
snapshot's.

Invariants:
    offset() <= snapshot.meta.index <= applied <= committed <= last_index()
    stable <= last_index()       (entries above `stable` are not yet on disk)
    committed entries are never truncated (a conflict there is a safety bug).
"""

from __future__ import annotations

from collections.abc import Sequence

from .messages import Entry, Snapshot


class RaftSafetyError(AssertionError):
    """The core caught itself (or a peer) breaking a Raft invariant."""


class RaftLog:
    def __init__(self, snapshot: Snapshot, entries: Sequence[Entry], committed: int, applied: int):
        self.snapshot = snapshot
        #: the index and term just before entries[0] (entries[i] has index _offset + 1 + i)
        self._offset, self._offset_term = snapshot.meta.index, snapshot.meta.term
        self.entries: list[Entry] = list(entries)
        # A snapshot holds only committed entries, so its index is committed
        # even if the hard state saying so was lost (it is written unsynced).
        self.committed = max(committed, snapshot.meta.index)
        self.applied = max(applied, snapshot.meta.index)
        #: last index known to be persisted by the caller
        self.stable = self.last_index()
        #: a snapshot received from the leader that the caller has not persisted yet
        self.pending_snapshot: Snapshot | None = None
        if self.entries and self.entries[0].index != snapshot.meta.index + 1:
            raise RaftSafetyError(
                f"log starts at {self.entries[0].index}, snapshot ends at {snapshot.meta.index}"
            )
        if not (self.applied <= self.committed <= self.last_index()):
            raise RaftSafetyError(
                f"applied {self.applied} <= committed {committed} <= last "
                f"{self.last_index()} does not hold"
            )

    # -- reading -------------------------------------------------------------

    def offset(self) -> int:
        return self._offset

    def first_index(self) -> int:
        return self._offset + 1

    def last_index(self) -> int:
        return self._offset + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self._offset_term

    def term(self, index: int) -> int | None:
        """The term of `index`, or None when it is compacted away or not there yet."""
        off = self._offset
        if index == off:
            return self._offset_term
        if off < index <= off + len(self.entries):
            return self.entries[index - off - 1].term
        return None

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as new as ours (§5.4.1)."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries lo..hi-1, at least one, then as many as fit in `max_bytes` of data."""
        off = self._offset
        if lo <= off:
            raise RaftSafetyError(f"slice from {lo} reaches below the log's start at {off + 1}")
        hi = min(hi, self.last_index() + 1)
        out: list[Entry] = []
        size = 0
        for e in self.entries[lo - off - 1 : hi - off - 1]:
            size += len(e.data) + 16
            if out and size > max_bytes:
                break
            out.append(e)
        return tuple(out)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose term is <= `term`, and that term.

        Used on both sides of a rejected append to skip a whole term at a time
        instead of one entry at a time (the "fast backtracking" of §5.3).
        """
        index = min(index, self.last_index())
        off = self._offset
        if index < off:
            return index, 0  # compacted away: its term is unknown here
        while index > off:
            t = self.entries[index - off - 1].term
            if t <= term:
                return index, t
            index -= 1
        return off, self._offset_term

    def unstable_entries(self) -> tuple[Entry, ...]:
        off = self._offset
        start = max(self.stable, off) - off
        return tuple(self.entries[start:])

    def has_unstable(self) -> bool:
        return self.stable < self.last_index()

    def next_committed_entries(self) -> tuple[Entry, ...]:
        """Committed entries not yet handed out for applying (all are on disk or in this Ready)."""
        off = self._offset
        lo = max(self.applied, off)
        return tuple(self.entries[lo - off : self.committed - off])

    # -- writing -------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that follow on from, or overwrite part of, the log."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise RaftSafetyError(
                f"overwriting committed entry {first} (committed {self.committed})"
            )
        off = self._offset
        if first > self.last_index() + 1:
            raise RaftSafetyError(f"gap: appending {first} after {self.last_index()}")
        del self.entries[first - off - 1 :]
        self.entries.extend(entries)
        self.stable = min(self.stable, first - 1)

    def maybe_append(
        self, index: int, log_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """Follower side of AppendEntries; returns the last new index, or None on mismatch."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self._find_conflict(entries)
        if conflict:
            self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(commit, last_new))
        return last_new

    def _find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry we lack or hold with another term; 0 if none."""
        for e in entries:
            t = self.term(e.index)
            if t is None:
                if e.index <= self._offset:
                    continue  # compacted: committed, so it matches
                return e.index
            if t != e.term:
                return e.index
        return 0

    def commit_to(self, index: int) -> bool:
        if index <= self.committed:
            return False
        if index > self.last_index():
            raise RaftSafetyError(f"commit {index} beyond last index {self.last_index()}")
        self.committed = index
        return True

    def stable_to(self, index: int, term: int) -> None:
        """The caller persisted entries up to `index`; ignore it if the log changed since."""
        if self.term(index) == term and index > self.stable:
            self.stable = index

    def applied_to(self, index: int) -> None:
        if index > self.committed:
            raise RaftSafetyError(f"applied {index} beyond committed {self.committed}")
        self.applied = max(self.applied, index)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a snapshot from the leader (to be persisted)."""
        self.snapshot = snapshot
        self._offset, self._offset_term = snapshot.meta.index, snapshot.meta.term
        self.entries = []
        self.committed = snapshot.meta.index
        self.stable = snapshot.meta.index
        self.pending_snapshot = snapshot

    def compact(self, snapshot: Snapshot, keep: int = 0) -> None:
        """The application took a snapshot at an applied index: drop the log up to it,
        but for the last `keep` entries it covers."""
        idx = snapshot.meta.index
        if idx <= self.snapshot.meta.index:
            return
        if idx > self.applied:
            raise RaftSafetyError(f"snapshot at {idx} is beyond applied {self.applied}")
        if self.term(idx) != snapshot.meta.term:
            raise RaftSafetyError(f"snapshot term {snapshot.meta.term} does not match log at {idx}")
        self.snapshot = snapshot
        new_offset = idx - max(keep, 0)
        if new_offset <= self._offset:
            return
        new_offset_term = self.term(new_offset)
        assert new_offset_term is not None  # between the old offset and idx, so held
        del self.entries[: new_offset - self._offset]
        self._offset, self._offset_term = new_offset, new_offset_term

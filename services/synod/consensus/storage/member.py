"""MemberStorage: one member's WAL and snapshot files, as the Raft core needs them.

Layout of a member's data directory::

    <data-dir>/wal/   WAL segments (see wal.py)
    <data-dir>/snap/  snapshot files (see snapshots.py)

Invariants (what makes a restart return exactly what was acknowledged):

1. A snapshot file is durable before the WAL marker that refers to it is written,
   so the newest snapshot file is never older than the WAL's marker.
2. The WAL marker is durable before the segments it covers are deleted
   (``WAL.release_to`` syncs first and refuses indexes beyond the marker).
3. A Ready's step 1 — snapshot (file, then marker), entries, hard state — goes into
   the WAL with one write and one fsync; the caller sends messages only afterwards.
4. A snapshot file newer than the WAL's marker means a crash between storing the
   snapshot and writing its marker. Nothing depending on it was acknowledged, but
   the snapshot itself is committed state, so it is adopted on open: the log is cut
   after it exactly as the marker would have cut it, and the marker is written then.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import structlog

from ..raft.messages import Entry, HardState, Ready, Snapshot
from .errors import StorageError
from .snapshots import SnapshotStore
from .wal import DEFAULT_SEGMENT_BYTES, WAL

__all__ = ["MemberStorage", "Restored"]


class Restored(NamedTuple):
    """What the Raft core needs to restart: ``RawNode(config, *restored)``-compatible order."""

    hard_state: HardState
    #: the newest snapshot, or an empty Snapshot at index 0
    snapshot: Snapshot
    #: the log after the snapshot, contiguous from snapshot.meta.index + 1
    entries: list[Entry]


class MemberStorage:
    """A member's durable state. Create with :meth:`MemberStorage.open`; not thread-safe."""

    def __init__(self, data_dir: str, wal: WAL, snapshots: SnapshotStore, sync: bool):
        """Internal: use :meth:`MemberStorage.open`."""
        self.data_dir = data_dir
        self.wal = wal
        self.snapshots = snapshots
        self.sync = sync

    @classmethod
    def open(
        cls,
        data_dir: str,
        sync: bool = True,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        keep_snapshots: int = 3,
        on_fsync: Callable[[float], None] | None = None,
    ) -> tuple[MemberStorage, Restored]:
        """Open (creating if needed) `data_dir`; replay the WAL and load the newest snapshot.

        Raises StorageError when the two disagree (a snapshot the WAL refers to is
        missing, or the log does not continue after the snapshot), and the errors of
        WAL.open / SnapshotStore.load_latest on corruption.
        """
        os.makedirs(data_dir, exist_ok=True)
        wal, rp = WAL.open(
            os.path.join(data_dir, "wal"), segment_bytes=segment_bytes, on_fsync=on_fsync
        )
        try:
            snaps = SnapshotStore(os.path.join(data_dir, "snap"), keep=keep_snapshots, sync=sync)
            snap = snaps.load_latest()
            hs, entries = rp.hard_state, rp.entries
            if snap is None:
                if rp.snapshot_index > 0:
                    raise StorageError(
                        f"storage: the WAL in {wal.dir} starts after a snapshot at index "
                        f"{rp.snapshot_index} (term {rp.snapshot_term}) but {snaps.dir} "
                        "holds no snapshot"
                    )
                snap = Snapshot()
            else:
                si, st = snap.meta.index, snap.meta.term
                if si < rp.snapshot_index or (si == rp.snapshot_index and st != rp.snapshot_term):
                    raise StorageError(
                        f"storage: the newest snapshot in {snaps.dir} is at index {si} term {st}, "
                        f"but the WAL in {wal.dir} starts after index {rp.snapshot_index} "
                        f"term {rp.snapshot_term}"
                    )
                if si > rp.snapshot_index:
                    structlog.get_logger("synod.storage").warning(
                        "storage_adopting_unmarked_snapshot",
                        index=si,
                        term=st,
                        wal_marker=rp.snapshot_index,
                    )
                    if (
                        entries
                        and entries[0].index <= si <= entries[-1].index
                        and (entries[si - entries[0].index].term == st)
                    ):
                        entries = entries[si - entries[0].index + 1 :]
                    else:
                        entries = []
                    wal.mark_snapshot(si, st, sync)
                    if hs.commit < si:
                        hs = HardState(hs.term, hs.vote, si)
            first = snap.meta.index + 1
            if entries and entries[0].index != first:
                raise StorageError(
                    f"storage: the log starts at {entries[0].index} but the snapshot ends at "
                    f"{snap.meta.index}"
                )
            last = snap.meta.index + len(entries)
            if hs.commit > last:
                raise StorageError(
                    f"storage: hard state commits {hs.commit} but the log ends at {last}"
                )
        except BaseException:
            wal.close()
            raise
        return cls(data_dir, wal, snaps, sync), Restored(hs, snap, entries)

    def persist_ready(self, ready: Ready) -> None:
        """Ready step 1: snapshot (file, then WAL marker), entries, hard state; one WAL fsync.

        A received snapshot is written to its own file (fsynced, atomically) before
        the WAL records the marker; the marker, the entries and the hard state then
        go into the WAL in one write with one fsync. Only after this returns may the
        caller send `ready.messages`.
        """
        marker: tuple[int, int] | None = None
        if ready.snapshot is not None:
            self.snapshots.save(ready.snapshot)
            marker = (ready.snapshot.meta.index, ready.snapshot.meta.term)
        if ready.entries or ready.hard_state is not None or marker is not None:
            self.wal.save(
                ready.entries, ready.hard_state, self.sync and ready.sync, snapshot_marker=marker
            )

    def compact(self, snapshot: Snapshot) -> None:
        """Store a snapshot taken locally at an applied index, then release the WAL before it.

        The snapshot's (index, term) must match the log. Order: snapshot file
        (durable), WAL marker (durable), then deletion of covered segments. A
        snapshot not newer than the current one is ignored.
        """
        idx, term = snapshot.meta.index, snapshot.meta.term
        if idx <= self.wal.snapshot_index:
            return
        held = self.wal.term(idx)
        if held != term:
            raise ValueError(
                f"snapshot at index {idx} term {term} does not match the log (term {held} there)"
            )
        self.snapshots.save(snapshot)
        self.wal.mark_snapshot(idx, term, self.sync)
        self.wal.release_to(idx, self.sync)

    def close(self) -> None:
        self.wal.close()

    def __enter__(self) -> MemberStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

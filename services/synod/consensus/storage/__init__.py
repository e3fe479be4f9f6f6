"""Durable storage for a consensus member: the write-ahead log and snapshot files.

Public face:
    MemberStorage, Restored — open a member's data dir, persist Ready step 1, compact
    WAL, Replayed           — the segmented write-ahead log (see wal.py for the format)
    SnapshotStore           — atomic, checksummed snapshot files (see snapshots.py)
    StorageError, WALError, WALCorruptError, SnapshotCorruptError

Pure file I/O with the standard library; no asyncio. Call it from one worker
thread. The on-disk formats are documented in docs/storage.md.
"""

from .errors import SnapshotCorruptError, StorageError, WALCorruptError, WALError
from .member import MemberStorage, Restored
from .snapshots import SnapshotFile, SnapshotStore
from .wal import DEFAULT_SEGMENT_BYTES, WAL, RecordType, Replayed

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "MemberStorage",
    "RecordType",
    "Replayed",
    "Restored",
    "SnapshotCorruptError",
    "SnapshotFile",
    "SnapshotStore",
    "StorageError",
    "WAL",
    "WALCorruptError",
    "WALError",
]

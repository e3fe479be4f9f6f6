"""Errors raised by the storage layer.

Corruption errors always name the file and the byte offset where the problem
was found, so that an operator can inspect (and, if they must, repair) it.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class for everything the storage layer raises on purpose."""


class WALError(StorageError):
    """The write-ahead log cannot be used (misuse, or an earlier I/O failure)."""


class WALCorruptError(WALError):
    """A WAL segment holds something that a crash mid-write cannot explain.

    Attributes:
        path: the segment file (or the WAL directory, for directory-level problems).
        offset: byte offset of the offending record inside `path`.
    """

    def __init__(self, message: str, path: str, offset: int):
        super().__init__(message)
        self.path = path
        self.offset = offset


class SnapshotCorruptError(StorageError):
    """A snapshot file is damaged: bad magic/version, truncated, or checksum mismatch.

    Attributes:
        path: the snapshot file.
        offset: byte offset of the offending field inside `path`.
    """

    def __init__(self, message: str, path: str, offset: int):
        super().__init__(message)
        self.path = path
        self.offset = offset


__all__ = ["SnapshotCorruptError", "StorageError", "WALCorruptError", "WALError"]

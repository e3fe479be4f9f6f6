"""Snapshot files: one file per snapshot, written atomically, checksummed.

Files live in one directory (the member's ``<data-dir>/snap/``), named
``%016x-%016x.snap`` — the snapshot's term and index, in hex.

File format (integers little-endian)::

    offset  size
         0     8   magic b"SYNODSNP"
         8     4   u32 format version (1)
        12     4   u32 crc32 (zlib) of every byte from offset 16 to the end of the file
        16     8   u64 index
        24     8   u64 term
        32     4   u32 number of voters (V)
        36     4   u32 number of learners (L)
        40     8   u64 data length (D)
        48   8*V   u64 voter ids, ascending
         .   8*L   u64 learner ids, ascending
         .     D   data (the application's opaque state)

Atomicity: :meth:`SnapshotStore.save` writes ``<name>.tmp`` in the same
directory, fsyncs it, renames it to ``<name>`` and fsyncs the directory. A crash
leaves either no file or a complete one (plus, perhaps, a stray ``.tmp``, which
is deleted with a warning the next time the store is opened).

Only the newest `keep` snapshots (by index) are kept. :meth:`load_latest` never
falls back to an older snapshot when the newest is damaged: it raises
:class:`SnapshotCorruptError`, because the WAL may already have been released up
to the newest one.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass

import structlog

from ..raft.messages import ConfState, Snapshot, SnapshotMeta
from .errors import SnapshotCorruptError
from .wal import fsync_dir

__all__ = ["SNAPSHOT_MAGIC", "SnapshotFile", "SnapshotStore"]

SNAPSHOT_MAGIC = b"SYNODSNP"
SNAPSHOT_VERSION = 1

_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_PREFIX = struct.Struct("<8sII")  # magic, version, crc
_FIXED = struct.Struct("<QQIIQ")  # index, term, voters, learners, data length
_HEADER_LEN = _PREFIX.size + _FIXED.size  # 48
_CRC_FROM = _PREFIX.size  # 16


def _log() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("synod.storage")  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    term: int
    index: int
    path: str


def encode_snapshot(snapshot: Snapshot) -> tuple[bytes, bytes]:
    """The file's header and body (the data); header carries the crc of everything after it."""
    meta = snapshot.meta
    voters = sorted(meta.conf.voters)
    learners = sorted(meta.conf.learners)
    data = snapshot.data
    rest = _FIXED.pack(meta.index, meta.term, len(voters), len(learners), len(data))
    rest += struct.pack(f"<{len(voters) + len(learners)}Q", *voters, *learners)
    crc = zlib.crc32(data, zlib.crc32(rest))
    return _PREFIX.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, crc) + rest, data


def decode_snapshot(path: str, buf: bytes) -> Snapshot:
    def corrupt(msg: str, at: int, detail: str = "") -> SnapshotCorruptError:
        text = f"snapshot: {msg} in {path} at offset {at}" + (f": {detail}" if detail else "")
        return SnapshotCorruptError(text, path, at)

    if len(buf) < _HEADER_LEN:
        raise corrupt(f"file too short for a header ({len(buf)} bytes)", len(buf))
    magic, version, stored = _PREFIX.unpack_from(buf, 0)
    if magic != SNAPSHOT_MAGIC:
        raise corrupt(f"bad magic {magic!r} (not a synod snapshot)", 0)
    if version != SNAPSHOT_VERSION:
        raise corrupt(f"unsupported format version {version}", 8)
    index, term, nv, nl, dlen = _FIXED.unpack_from(buf, _CRC_FROM)
    ids_end = _HEADER_LEN + 8 * (nv + nl)
    if ids_end + dlen != len(buf):
        raise corrupt(
            f"header promises {ids_end + dlen} bytes ({nv} voters, {nl} learners, "
            f"{dlen} bytes of data) but the file has {len(buf)}",
            32,
        )
    computed = zlib.crc32(memoryview(buf)[_CRC_FROM:])
    if computed != stored:
        detail = f"stored 0x{stored:08x}, computed 0x{computed:08x}"
        raise corrupt("checksum mismatch", 12, detail)
    ids = struct.unpack_from(f"<{nv + nl}Q", buf, _HEADER_LEN)
    conf = ConfState(voters=frozenset(ids[:nv]), learners=frozenset(ids[nv:]))
    return Snapshot(SnapshotMeta(index, term, conf), buf[ids_end:])


class SnapshotStore:
    """The snapshot files of one member.

    Opening removes stray ``.tmp`` files (an interrupted :meth:`save`) with a warning.
    With ``sync=False`` nothing is fsynced (for ``--unsafe-no-fsync``).
    """

    def __init__(self, directory: str, keep: int = 3, sync: bool = True):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.dir = directory
        self.keep = keep
        self.sync = sync
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
            if sync:
                fsync_dir(os.path.dirname(os.path.abspath(directory)))
        for name in os.listdir(directory):
            if name.endswith(".tmp"):
                path = os.path.join(directory, name)
                _log().warning("snapshot_removing_temp_file", path=path)
                os.unlink(path)

    def list(self) -> list[SnapshotFile]:
        """The snapshot files, oldest (lowest index) first."""
        out: list[SnapshotFile] = []
        for name in os.listdir(self.dir):
            m = _NAME.match(name)
            if m is not None:
                term, index = int(m.group(1), 16), int(m.group(2), 16)
                out.append(SnapshotFile(term, index, os.path.join(self.dir, name)))
        out.sort(key=lambda f: (f.index, f.term))
        return out

    def save(self, snapshot: Snapshot) -> str:
        """Write `snapshot` atomically and durably; prune old files; return the path."""
        meta = snapshot.meta
        name = f"{meta.term:016x}-{meta.index:016x}.snap"
        path = os.path.join(self.dir, name)
        tmp = path + ".tmp"
        header, data = encode_snapshot(snapshot)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(tmp, flags, 0o644)
        try:
            try:
                _write_all(fd, header)
                _write_all(fd, data)
                if self.sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if self.sync:
            fsync_dir(self.dir)
        self._prune()
        return path

    def load(self, path: str) -> Snapshot:
        """Read and verify one snapshot file; check it against its name."""
        with open(path, "rb") as f:
            buf = f.read()
        snap = decode_snapshot(path, buf)
        m = _NAME.match(os.path.basename(path))
        if m is not None:
            term, index = int(m.group(1), 16), int(m.group(2), 16)
            if (term, index) != (snap.meta.term, snap.meta.index):
                raise SnapshotCorruptError(
                    f"snapshot: header says index {snap.meta.index} term {snap.meta.term} "
                    f"but the name says index {index} term {term} in {path} at offset 16",
                    path,
                    16,
                )
        return snap

    def load_latest(self) -> Snapshot | None:
        """The newest snapshot, or None if there is none. Raises if the newest is damaged."""
        files = self.list()
        if not files:
            return None
        return self.load(files[-1].path)

    def _prune(self) -> None:
        files = self.list()
        for f in files[: max(0, len(files) - self.keep)]:
            try:
                os.unlink(f.path)
            except FileNotFoundError:
                pass


def _write_all(fd: int, buf: bytes) -> None:
    view = memoryview(buf)
    n = 0
    while n < len(view):
        n += os.write(fd, view[n:])

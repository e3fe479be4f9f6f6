"""The write-ahead log: Raft entries, hard state and snapshot markers, in segment files.

Layout
------
Segments live in one directory (the member's ``<data-dir>/wal/``), named
``%016x-%016x.wal`` — the segment's sequence number and the index of the first
entry it was created for, both in hex. Sequence numbers are consecutive; a gap
means a segment went missing and is reported as corruption.

Record format (all integers little-endian)::

    u32 payload_length | u32 crc32 | u8 record_type | payload (payload_length bytes)

``crc32`` is ``zlib.crc32`` of the record-type byte followed by the payload.
Record types and their payloads:

    1 SEGMENT_HEADER  magic b"SYNODWAL" (8 bytes) | u32 format version (1) | u64 sequence
    2 ENTRY           u64 term | u64 index | u8 entry type | data (the rest of the payload)
    3 HARD_STATE      u64 term | u64 vote | u64 commit
    4 SNAPSHOT        u64 index | u64 term

Every segment starts with a SEGMENT_HEADER, immediately followed by the HARD_STATE
and SNAPSHOT marker current when the segment was created. So the oldest surviving
segment always lets replay find the hard state and where the log starts, and older
segments may be deleted once a snapshot covers them (:meth:`WAL.release_to`).

Replay semantics (the log the records describe)
-----------------------------------------------
* HARD_STATE: the last one wins.
* ENTRY at index ``i``: if ``i`` is at or below the last index seen, the tail from
  ``i`` on is dropped first (a Raft truncation is written as plain appends of the
  replacing entries), then the entry is appended.
* SNAPSHOT ``(i, t)``: the log now starts after ``i``. Entries ``<= i`` are dropped.
  If an entry at ``i`` is held with a term other than ``t``, the marker records a
  snapshot received from the leader that replaced a conflicting log, and *all*
  entries are dropped (the Raft core does the same in ``RaftLog.restore``).
  Markers never move backwards.

Durability and group commit
---------------------------
:meth:`WAL.save` encodes everything it is given into one buffer, writes it with
one ``os.write`` and, with ``sync=True``, makes it durable with one
``os.fdatasync`` (``os.fsync`` where fdatasync does not exist) before returning.
The caller acknowledges (sends messages that depend on the write) only after
``save`` returns, so a record torn by a crash was never acknowledged.

A save that starts a new segment also writes the segment's header records in the
same buffer and fsyncs the directory (and, if it was written with ``sync=False``,
the previous segment), so it costs more than one fsync; that happens once per
``segment_bytes``.

Recovery
--------
On open, a damaged record at the tail of the *last* segment — a header or payload
running past the end of the file, trailing zero bytes, or a checksum mismatch in
the final record with nothing but zeros after it — is a crash mid-write: the file
is truncated there (and fsynced) with a warning. Anything else that does not parse
(in an older segment, or in the last segment followed by more data) raises
:class:`WALCorruptError` naming the file and offset. Note that the length field is
not covered by the checksum: a corrupted length in the last segment that points
past the end of the file is indistinguishable from a torn write.

Any ``OSError`` during a write or fsync leaves the WAL unusable (every later call
raises :class:`WALError`): after a failed fsync the kernel may have dropped the
dirty pages, so the only safe way on is to reopen, which replays what is really
on disk.

The WAL is not thread-safe; use it from one thread at a time. Nothing here uses
asyncio: the service calls it from a worker thread.
"""

from __future__ import annotations

import bisect
import enum
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import structlog

from ..raft.messages import Entry, EntryType, HardState
from .errors import WALCorruptError, WALError

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "FORMAT_VERSION",
    "MAGIC",
    "RecordType",
    "Replayed",
    "WAL",
]

MAGIC = b"SYNODWAL"
FORMAT_VERSION = 1
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024


class RecordType(enum.IntEnum):
    SEGMENT_HEADER = 1
    ENTRY = 2
    HARD_STATE = 3
    SNAPSHOT = 4


_SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")

# u32 payload length, u32 crc; the record type byte follows and starts the crc'd part.
_LEN_CRC = struct.Struct("<II")
_REC_HEAD = struct.Struct("<IIB")
_HEAD_LEN = _REC_HEAD.size  # 9
# The crc'd parts, record type byte included (so crc32(packed [+ data]) is the crc).
_ENTRY = struct.Struct("<BQQB")
_HARD = struct.Struct("<BQQQ")
_SNAP = struct.Struct("<BQQ")
_SEG = struct.Struct("<B8sIQ")
# Payload sizes (crc'd part minus the type byte).
_ENTRY_FIXED = _ENTRY.size - 1  # 17
_HARD_LEN = _HARD.size - 1
_SNAP_LEN = _SNAP.size - 1
_SEG_LEN = _SEG.size - 1

_T_SEG = int(RecordType.SEGMENT_HEADER)
_T_ENTRY = int(RecordType.ENTRY)
_T_HARD = int(RecordType.HARD_STATE)
_T_SNAP = int(RecordType.SNAPSHOT)
_ENTRY_TYPES = {int(t): t for t in EntryType}


def _log() -> structlog.typing.FilteringBoundLogger:
    # A fresh proxy each time: warnings are rare, and this way tests can capture them
    # even though the service configures structlog to cache loggers on first use.
    return structlog.get_logger("synod.storage")  # type: ignore[no-any-return]


def _record(crcd: bytes) -> bytes:
    """A whole record from its crc'd part (type byte + payload)."""
    return _LEN_CRC.pack(len(crcd) - 1, zlib.crc32(crcd)) + crcd


def encode_hard_state(hs: HardState) -> bytes:
    return _record(_HARD.pack(_T_HARD, hs.term, hs.vote, hs.commit))


def encode_snapshot_marker(index: int, term: int) -> bytes:
    return _record(_SNAP.pack(_T_SNAP, index, term))


def encode_segment_header(seq: int) -> bytes:
    return _record(_SEG.pack(_T_SEG, MAGIC, FORMAT_VERSION, seq))


#: segment header + hard state + snapshot marker: what every segment starts with
_PROLOGUE_LEN = (
    (_LEN_CRC.size + _SEG.size) + (_LEN_CRC.size + _HARD.size) + (_LEN_CRC.size + _SNAP.size)
)


def _encode_entries(entries: Sequence[Entry], parts: list[bytes]) -> None:
    pack_head = _ENTRY.pack
    pack_lc = _LEN_CRC.pack
    crc = zlib.crc32
    append = parts.append
    for e in entries:
        d = e.data
        h = pack_head(_T_ENTRY, e.term, e.index, e.type)
        append(pack_lc(_ENTRY_FIXED + len(d), crc(d, crc(h))))
        append(h)
        append(d)


def _fdatasync(fd: int) -> None:
    # Looked up at call time so that tests can count calls by monkeypatching `os`.
    sync = getattr(os, "fdatasync", None)
    if sync is None:
        os.fsync(fd)
    else:
        sync(fd)


def fsync_dir(path: str) -> None:
    """fsync a directory, making creations, renames and removals in it durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, buf: bytes) -> None:
    n = os.write(fd, buf)
    if n == len(buf):
        return
    view = memoryview(buf)
    while n < len(view):  # short write (e.g. a signal, or a nearly full disk)
        n += os.write(fd, view[n:])


@dataclass(frozen=True, slots=True)
class Replayed:
    """What a WAL held when it was opened.

    `entries` are exactly the log after the last snapshot marker: in order,
    contiguous from `snapshot_index + 1`, with every truncation applied.
    """

    hard_state: HardState = field(default_factory=HardState)
    snapshot_index: int = 0
    snapshot_term: int = 0
    entries: list[Entry] = field(default_factory=list)


@dataclass(slots=True)
class _Segment:
    seq: int
    first_index: int
    path: str
    #: largest entry index written into the segment (0: none)
    max_index: int = 0
    size: int = 0


class _Replay:
    """Applies records in order to rebuild the log (see the module docstring)."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snap_index = 0
        self.snap_term = 0
        self.entries: list[Entry] = []
        # where the current first entry came from, for error messages
        self.first_loc: tuple[str, int] = ("", 0)

    def entry(self, e: Entry, path: str, off: int) -> None:
        ents = self.entries
        if e.index <= self.snap_index:
            raise WALCorruptError(
                f"wal: entry {e.index} at or below the snapshot marker {self.snap_index} "
                f"in {path} at offset {off}",
                path,
                off,
            )
        if ents:
            last = ents[-1].index
            if e.index <= last:
                first = ents[0].index
                if e.index >= first:
                    del ents[e.index - first :]
                else:
                    ents.clear()
            elif e.index != last + 1:
                raise WALCorruptError(
                    f"wal: entry {e.index} does not follow entry {last} in {path} at offset {off}",
                    path,
                    off,
                )
        if not ents:
            self.first_loc = (path, off)
        ents.append(e)

    def marker(self, index: int, term: int, path: str, off: int) -> None:
        if index < self.snap_index:
            raise WALCorruptError(
                f"wal: snapshot marker {index} goes back from {self.snap_index} "
                f"in {path} at offset {off}",
                path,
                off,
            )
        ents = self.entries
        if ents:
            first = ents[0].index
            if first <= index <= ents[-1].index and ents[index - first].term != term:
                ents.clear()  # a received snapshot replaced a conflicting log
            elif first <= index:
                del ents[: index - first + 1]
                if ents:
                    self.first_loc = (path, off)
        self.snap_index, self.snap_term = index, term


class WAL:
    """An open write-ahead log. Create with :meth:`WAL.open`."""

    def __init__(
        self,
        directory: str,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        on_fsync: Callable[[float], None] | None = None,
    ):
        """Internal: use :meth:`WAL.open`, which replays the directory first."""
        if segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be positive, not {segment_bytes}")
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.on_fsync = on_fsync
        self._segments: list[_Segment] = []
        self._next_seq = 0
        self._fd: int | None = None  # the current (last) segment, open for appending
        self._pending_fds: list[int] = []  # earlier segments with unsynced writes
        self._dirty = False  # unsynced writes in the current segment
        self._dir_dirty = False  # a segment was created and the directory not fsynced
        self._failed: BaseException | None = None
        self._closed = False
        self.hard_state = HardState()
        self.snapshot_index = 0
        self.snapshot_term = 0
        self.last_index = 0
        # Terms of the log after the snapshot, as runs: entries from _run_starts[k] on
        # have term _run_terms[k]. Lets us validate saves and answer term() cheaply.
        self._run_starts: list[int] = []
        self._run_terms: list[int] = []

    # -- opening ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        on_fsync: Callable[[float], None] | None = None,
    ) -> tuple[WAL, Replayed]:
        """Open (creating if needed) the WAL in `directory` and replay it.

        A torn tail of the last segment is truncated away with a warning; any other
        damage raises :class:`WALCorruptError`. `on_fsync(seconds)` is called after
        every fsync of a segment file (not of the directory).
        """
        wal = cls(directory, segment_bytes=segment_bytes, on_fsync=on_fsync)
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
            fsync_dir(os.path.dirname(os.path.abspath(directory)))
        replayed = wal._replay()
        return wal, replayed

    def _list_segments(self) -> list[_Segment]:
        segs: list[_Segment] = []
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            m = _SEGMENT_NAME.match(name)
            if m is None:
                if name.endswith(".wal"):
                    raise WALCorruptError(f"wal: unexpected segment name {path}", path, 0)
                _log().warning("wal_ignoring_file", path=path)
                continue
            segs.append(_Segment(int(m.group(1), 16), int(m.group(2), 16), path))
        segs.sort(key=lambda s: s.seq)
        for prev, s in zip(segs, segs[1:], strict=False):
            if s.seq != prev.seq + 1:
                raise WALCorruptError(
                    f"wal: segment sequence gap: {prev.path} is followed by {s.path}", s.path, 0
                )
        return segs

    def _replay(self) -> Replayed:
        segs = self._list_segments()
        rp = _Replay()
        kept: list[_Segment] = []
        for n, seg in enumerate(segs):
            is_last = n == len(segs) - 1
            with open(seg.path, "rb") as f:
                data = f.read()
            end = _scan(seg, data, is_last, rp)
            seg.size = end
            if end < len(data):
                _truncate(seg.path, end, len(data))
            if end < _PROLOGUE_LEN:
                # Only possible for the last segment: the crash came while it was being
                # created, before its first write (prologue + data) was complete.
                _log().warning("wal_removing_headless_segment", path=seg.path)
                os.unlink(seg.path)
                fsync_dir(self.dir)
                continue
            kept.append(seg)

        if rp.entries and rp.entries[0].index != rp.snap_index + 1:
            path, off = rp.first_loc
            raise WALCorruptError(
                f"wal: the log starts at entry {rp.entries[0].index} but the snapshot marker "
                f"is at {rp.snap_index} ({path} at offset {off}; is a segment missing?)",
                path,
                off,
            )
        self._segments = kept
        # A removed headless last segment's sequence number is reused.
        self._next_seq = kept[-1].seq + 1 if kept else (segs[-1].seq if segs else 0)
        self.hard_state = rp.hard_state
        self.snapshot_index, self.snapshot_term = rp.snap_index, rp.snap_term
        self.last_index = rp.entries[-1].index if rp.entries else rp.snap_index
        self._reset_runs(rp.entries)
        if kept:
            last = kept[-1]
            self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        return Replayed(rp.hard_state, rp.snap_index, rp.snap_term, rp.entries)

    def _reset_runs(self, entries: Sequence[Entry]) -> None:
        self._run_starts, self._run_terms = [], []
        self._add_runs(entries)

    def _add_runs(self, entries: Sequence[Entry]) -> None:
        starts, terms = self._run_starts, self._run_terms
        for e in entries:
            if not terms or terms[-1] != e.term:
                starts.append(e.index)
                terms.append(e.term)

    # -- reading state -----------------------------------------------------------

    def term(self, index: int) -> int | None:
        """The term of the entry at `index` (or of the snapshot marker), if held."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if not (self.snapshot_index < index <= self.last_index):
            return None
        k = bisect.bisect_right(self._run_starts, index) - 1
        return self._run_terms[k] if k >= 0 else None

    def segment_paths(self) -> list[str]:
        """The segment files, oldest first."""
        return [s.path for s in self._segments]

    # -- writing -----------------------------------------------------------------

    def save(
        self,
        entries: Sequence[Entry],
        hard_state: HardState | None = None,
        sync: bool = True,
        *,
        snapshot_marker: tuple[int, int] | None = None,
    ) -> None:
        """Append a snapshot marker (optional), `entries`, then `hard_state`, durably.

        Everything is written with one ``os.write``; with `sync` it is on disk (one
        fdatasync, plus the directory when a new segment was started) before this
        returns. `entries` must be contiguous and start after the snapshot marker and
        at most one past the last index; starting at or below the last index replaces
        the tail from there (Raft truncation). `snapshot_marker=(index, term)` has the
        meaning of :meth:`mark_snapshot` and is applied before the entries.
        """
        self._check_usable()
        snap_index, snap_term = self.snapshot_index, self.snapshot_term
        last = self.last_index
        clear_runs = False
        if snapshot_marker is not None:
            mi, mt = snapshot_marker
            if mi < snap_index:
                raise ValueError(f"snapshot marker {mi} is before the current one {snap_index}")
            if mi == snap_index and mt != snap_term:
                raise ValueError(f"snapshot marker {mi} with term {mt}, already marked {snap_term}")
            held = self.term(mi) if mi > snap_index else None
            if held is not None and held != mt:
                last, clear_runs = mi, True
            else:
                clear_runs = mi >= last
                last = max(last, mi)
            snap_index, snap_term = mi, mt
        if entries:
            first = entries[0].index
            if not (snap_index < first <= last + 1):
                raise ValueError(
                    f"entries start at {first}; expected {snap_index + 1}..{last + 1} "
                    f"(snapshot {snap_index}, last index {last})"
                )
            if entries[-1].index != first + len(entries) - 1:
                raise ValueError("entries are not contiguous")
        elif hard_state is None and snapshot_marker is None:
            if sync:
                self._sync()
            return

        parts: list[bytes] = []
        new_seg: _Segment | None = None
        if self._fd is None or self._segments[-1].size >= self.segment_bytes:
            first_index = entries[0].index if entries else last + 1
            new_seg = _Segment(
                self._next_seq,
                first_index,
                os.path.join(self.dir, f"{self._next_seq:016x}-{first_index:016x}.wal"),
            )
            parts.append(encode_segment_header(new_seg.seq))
            parts.append(encode_hard_state(self.hard_state))
            parts.append(encode_snapshot_marker(self.snapshot_index, self.snapshot_term))
        if snapshot_marker is not None:
            parts.append(encode_snapshot_marker(snap_index, snap_term))
        if entries:
            _encode_entries(entries, parts)
        if hard_state is not None:
            parts.append(encode_hard_state(hard_state))
        buf = b"".join(parts)

        if new_seg is not None:
            self._start_segment(new_seg)
        seg = self._segments[-1]
        fd = self._fd
        assert fd is not None
        try:
            _write_all(fd, buf)
        except OSError as exc:
            self._failed = exc
            try:  # do not leave a torn record in front of later appends
                os.ftruncate(fd, seg.size)
            except OSError:
                pass
            raise
        seg.size += len(buf)
        self._dirty = True

        # The write is in; bring the in-memory view along.
        if snapshot_marker is not None:
            if clear_runs:
                self._run_starts, self._run_terms = [], []
            else:
                k = bisect.bisect_right(self._run_starts, snap_index + 1) - 1
                if k > 0:
                    del self._run_starts[:k], self._run_terms[:k]
            self.snapshot_index, self.snapshot_term = snap_index, snap_term
            self.last_index = last
        if entries:
            first = entries[0].index
            k = bisect.bisect_left(self._run_starts, first)
            del self._run_starts[k:], self._run_terms[k:]
            self._add_runs(entries)
            self.last_index = entries[-1].index
            seg.max_index = max(seg.max_index, self.last_index)
        if hard_state is not None:
            self.hard_state = hard_state
        if sync:
            self._sync()

    def mark_snapshot(self, index: int, term: int, sync: bool = True) -> None:
        """Record that a snapshot at (index, term) is safely stored; the log starts after it.

        Store the snapshot itself first. If the WAL holds an entry at `index` with a
        different term, the whole log is dropped (a received snapshot replacing a
        conflicting log); otherwise only entries up to `index`.
        """
        self.save((), None, sync, snapshot_marker=(index, term))

    def sync(self) -> None:
        """Make everything written so far durable (useful after ``sync=False`` saves)."""
        self._check_usable()
        self._sync()

    def release_to(self, index: int, sync: bool = True) -> list[str]:
        """Delete the oldest segments all of whose entries are <= `index`; return their paths.

        `index` must not exceed the snapshot marker (the marker is what lets replay
        skip the deleted entries). The segment being written is never deleted, and
        segments are deleted oldest first so no sequence gap can appear. Pending
        writes are made durable before anything is deleted.
        """
        self._check_usable()
        if index > self.snapshot_index:
            raise ValueError(
                f"release_to({index}) beyond the snapshot marker {self.snapshot_index}"
            )
        removed: list[str] = []
        while len(self._segments) > 1 and self._segments[0].max_index <= index:
            if sync and not removed:
                self._sync()  # the marker must be on disk before what it covers goes
            seg = self._segments.pop(0)
            os.unlink(seg.path)
            if sync:
                fsync_dir(self.dir)  # deletions must not be reordered into a gap
            removed.append(seg.path)
        return removed

    def close(self) -> None:
        """Close the files. Does not fsync: call :meth:`sync` first after unsynced saves."""
        if self._closed:
            return
        self._closed = True
        for fd in self._pending_fds:
            os.close(fd)
        self._pending_fds = []
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise WALError("wal: closed")
        if self._failed is not None:
            raise WALError(
                f"wal: unusable after an earlier I/O error ({self._failed}); reopen to recover"
            ) from self._failed

    def _start_segment(self, seg: _Segment) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(seg.path, flags, 0o644)
        except OSError as exc:
            self._failed = exc
            raise
        if self._fd is not None:
            if self._dirty:
                self._pending_fds.append(self._fd)
            else:
                os.close(self._fd)
        self._fd = fd
        self._dirty = False
        self._dir_dirty = True
        self._segments.append(seg)
        self._next_seq = seg.seq + 1

    def _sync(self) -> None:
        try:
            while self._pending_fds:
                fd = self._pending_fds[0]
                self._timed_sync(fd)
                os.close(fd)
                self._pending_fds.pop(0)
            if self._dirty and self._fd is not None:
                self._timed_sync(self._fd)
                self._dirty = False
            if self._dir_dirty:
                fsync_dir(self.dir)
                self._dir_dirty = False
        except OSError as exc:
            self._failed = exc
            raise

    def _timed_sync(self, fd: int) -> None:
        t0 = time.perf_counter()
        _fdatasync(fd)
        if self.on_fsync is not None:
            self.on_fsync(time.perf_counter() - t0)


def _truncate(path: str, end: int, size: int) -> None:
    _log().warning("wal_truncating_torn_tail", path=path, offset=end, dropped_bytes=size - end)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, end)
        os.fsync(fd)
    finally:
        os.close(fd)


def _torn(data: bytes, off: int, length: int | None) -> bool:
    """Whether damage at `off` in the last segment looks like a crash mid-write.

    It does when nothing but zeros follow `off`, when the record (header or
    payload) runs past the end of the file, or when it is the final record, or is
    followed only by zeros. `length` is None when the header itself is incomplete.
    """
    size = len(data)
    if length is None or data.count(b"\x00", off) == size - off:
        return True
    end = off + _HEAD_LEN + length
    return end >= size or data.count(b"\x00", end) == size - end


def _scan(seg: _Segment, data: bytes, is_last: bool, rp: _Replay) -> int:
    """Parse one segment into `rp`; return where its valid records end.

    For the last segment, a torn tail ends the scan early (the caller truncates);
    anything else that does not parse raises WALCorruptError.
    """
    path = seg.path
    size = len(data)
    off = 0
    unpack_head = _REC_HEAD.unpack_from
    unpack_entry = _ENTRY.unpack_from
    crc32 = zlib.crc32
    entry_types = _ENTRY_TYPES
    max_index = 0

    def corrupt(msg: str, at: int, detail: str = "") -> WALCorruptError:
        text = f"wal: {msg} in {path} at offset {at}" + (f": {detail}" if detail else "")
        return WALCorruptError(text, path, at)

    head = encode_segment_header(seg.seq)
    if data[: len(head)] != head:
        if is_last and (head.startswith(data) or data.count(b"\x00") == size):
            return 0  # the crash came while the segment was being created
        _check_segment_header(seg, data, head)
    off = len(head)
    while off < size:
        if size - off < _HEAD_LEN:
            if is_last and _torn(data, off, None):
                break
            raise corrupt(f"truncated record header ({size - off} bytes)", off)
        length, stored, rtype = unpack_head(data, off)
        end = off + _HEAD_LEN + length
        if end > size:
            if is_last:
                break
            raise corrupt(f"record length {length} runs past the end of the file ({size})", off)
        computed = crc32(data[off + 8 : end])
        if computed != stored:
            if is_last and _torn(data, off, length):
                break
            detail = f"stored 0x{stored:08x}, computed 0x{computed:08x}"
            raise corrupt("checksum mismatch", off, detail)
        p = off + _HEAD_LEN
        if rtype == _T_ENTRY:
            if length < _ENTRY_FIXED:
                raise corrupt(f"malformed ENTRY record ({length} bytes)", off)
            _, term, index, etype = unpack_entry(data, off + 8)
            et = entry_types.get(etype)
            if et is None:
                raise corrupt(f"unknown entry type {etype}", off)
            rp.entry(Entry(term, index, et, data[p + _ENTRY_FIXED : end]), path, off)
            if index > max_index:
                max_index = index
        elif rtype == _T_HARD:
            if length != _HARD_LEN:
                raise corrupt(f"malformed HARD_STATE record ({length} bytes)", off)
            _, term, vote, commit = _HARD.unpack_from(data, off + 8)
            rp.hard_state = HardState(term, vote, commit)
        elif rtype == _T_SNAP:
            if length != _SNAP_LEN:
                raise corrupt(f"malformed SNAPSHOT record ({length} bytes)", off)
            _, index, term = _SNAP.unpack_from(data, off + 8)
            rp.marker(index, term, path, off)
        elif rtype == _T_SEG:
            raise corrupt("segment header in the middle of a segment", off)
        else:
            raise corrupt(f"unknown record type {rtype}", off)
        off = end
    seg.max_index = max_index
    return off


def _check_segment_header(seg: _Segment, data: bytes, head: bytes) -> NoReturn:
    """Raise WALCorruptError saying what is wrong with a segment's first record."""
    path = seg.path

    def corrupt(msg: str, at: int = 0, detail: str = "") -> WALCorruptError:
        text = f"wal: {msg} in {path} at offset {at}" + (f": {detail}" if detail else "")
        return WALCorruptError(text, path, at)

    if len(data) < len(head):
        raise corrupt(f"truncated segment header ({len(data)} bytes)")
    length, stored, rtype = _REC_HEAD.unpack_from(data, 0)
    if rtype != _T_SEG or length != _SEG_LEN:
        raise corrupt("segment does not start with a segment header")
    _, magic, version, seq = _SEG.unpack_from(data, 8)
    if magic != MAGIC:
        raise corrupt(f"bad magic {magic!r} (not a synod WAL segment)", _HEAD_LEN)
    if version != FORMAT_VERSION:
        raise corrupt(f"unsupported format version {version}", _HEAD_LEN + 8)
    if seq != seg.seq:
        msg = f"segment header says sequence {seq}, the name says {seg.seq}"
        raise corrupt(msg, _HEAD_LEN + 12)
    computed = zlib.crc32(data[8 : len(head)])
    raise corrupt("checksum mismatch", 0, f"stored 0x{stored:08x}, computed 0x{computed:08x}")

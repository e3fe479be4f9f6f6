"""Deterministic binary snapshot format for the MVCC store (no pickle: snapshots cross the network).

Layout (all integers big-endian)::

    header (52 bytes)
      0  8s  magic            b"SYNMVCC\\x01"
      8  I   format version   1
     12  q   current revision
     20  q   compacted revision (-1 = never compacted)
     28  Q   record count
     36  Q   body length in bytes
     44  I   CRC-32 (zlib) of the body
     48  I   CRC-32 (zlib) of header bytes 0..48
    body: ``record count`` records, in (main, sub) revision order
      q main revision, q sub revision, B flags (bit 0: tombstone), I key length, key
      live records only: q create_revision, q version, q lease, I value length, value

The mod_revision of every record is its main revision, so it is not repeated.
The same record encoding feeds ``hash_kv`` (see ``encode_record``), so equal
histories hash equal regardless of how they were built.

``decode_snapshot`` validates everything (magic, version, both checksums, lengths,
revision order, per-key version/create_revision chains) and raises
``SnapshotCorruptError`` naming the byte offset where decoding failed.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import NamedTuple

from synod.consensus.mvcc.errors import SnapshotCorruptError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "SnapshotRecord",
    "decode_snapshot",
    "encode_record",
    "encode_snapshot",
]

MAGIC = b"SYNMVCC\x01"
FORMAT_VERSION = 1

_HEADER = struct.Struct(">8sIqqQQI")  # 48 bytes, followed by the header CRC
_HEADER_CRC = struct.Struct(">I")
HEADER_SIZE = _HEADER.size + _HEADER_CRC.size
_REC_HEAD = struct.Struct(">qqBI")
_REC_LIVE = struct.Struct(">qqqI")
_TOMBSTONE = 1


class SnapshotRecord(NamedTuple):
    """One history record. ``create_revision == version == lease == 0`` and
    ``value == b""`` for tombstones."""

    main: int
    sub: int
    key: bytes
    tombstone: bool
    create_revision: int
    version: int
    lease: int
    value: bytes


def encode_record(
    main: int,
    sub: int,
    key: bytes,
    tombstone: bool,
    create_revision: int,
    version: int,
    lease: int,
    value: bytes,
) -> bytes:
    """The canonical encoding of one record (used by snapshots and ``hash_kv``)."""
    if tombstone:
        return _REC_HEAD.pack(main, sub, _TOMBSTONE, len(key)) + key
    return b"".join(
        (
            _REC_HEAD.pack(main, sub, 0, len(key)),
            key,
            _REC_LIVE.pack(create_revision, version, lease, len(value)),
            value,
        )
    )


def encode_snapshot(current_rev: int, compact_rev: int, records: Iterable[bytes]) -> bytes:
    """Assemble a snapshot from already-encoded records (``encode_record`` output)."""
    body_parts = list(records)
    body = b"".join(body_parts)
    head = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        current_rev,
        compact_rev,
        len(body_parts),
        len(body),
        zlib.crc32(body),
    )
    return head + _HEADER_CRC.pack(zlib.crc32(head)) + body


class DecodedSnapshot(NamedTuple):
    current_rev: int
    compact_rev: int
    records: list[SnapshotRecord]


def decode_snapshot(data: bytes) -> DecodedSnapshot:
    """Parse and validate a snapshot; raises ``SnapshotCorruptError`` on any defect."""
    mv = memoryview(data)
    n = len(mv)
    if n < HEADER_SIZE:
        raise SnapshotCorruptError(f"truncated header ({n} of {HEADER_SIZE} bytes)", n)
    magic, version, current_rev, compact_rev, count, body_len, body_crc = _HEADER.unpack_from(mv)
    if magic != MAGIC:
        raise SnapshotCorruptError(f"bad magic {magic!r}", 0)
    (head_crc,) = _HEADER_CRC.unpack_from(mv, _HEADER.size)
    if zlib.crc32(mv[: _HEADER.size]) != head_crc:
        raise SnapshotCorruptError("header checksum mismatch", _HEADER.size)
    if version != FORMAT_VERSION:
        raise SnapshotCorruptError(f"unsupported format version {version}", 8)
    if current_rev < 1:
        raise SnapshotCorruptError(f"current revision {current_rev} < 1", 12)
    if compact_rev < -1 or compact_rev > current_rev:
        raise SnapshotCorruptError(
            f"compacted revision {compact_rev} outside [-1, {current_rev}]", 20
        )
    if HEADER_SIZE + body_len != n:
        raise SnapshotCorruptError(
            f"body length {body_len} does not match blob size {n - HEADER_SIZE}", 36
        )
    body = mv[HEADER_SIZE:]
    if zlib.crc32(body) != body_crc:
        raise SnapshotCorruptError("body checksum mismatch", HEADER_SIZE)

    records: list[SnapshotRecord] = []
    last: dict[bytes, SnapshotRecord] = {}
    pos = HEADER_SIZE
    prev_rev = (0, 0)
    head_size, live_size = _REC_HEAD.size, _REC_LIVE.size
    for _ in range(count):
        start = pos
        if pos + head_size > n:
            raise SnapshotCorruptError("truncated record header", pos)
        main, sub, flags, klen = _REC_HEAD.unpack_from(mv, pos)
        pos += head_size
        if flags & ~_TOMBSTONE:
            raise SnapshotCorruptError(f"unknown record flags {flags:#x}", start)
        if (main, sub) <= prev_rev or sub < 0:
            raise SnapshotCorruptError(f"revision ({main}, {sub}) out of order", start)
        if main > current_rev:
            raise SnapshotCorruptError(
                f"revision {main} beyond current revision {current_rev}", start
            )
        prev_rev = (main, sub)
        if klen == 0 or pos + klen > n:
            raise SnapshotCorruptError(f"bad key length {klen}", pos - 4)
        key = bytes(mv[pos : pos + klen])
        pos += klen
        before = last.get(key)
        if main <= compact_rev and before is not None:
            raise SnapshotCorruptError("more than one record at or before compaction", start)
        if flags & _TOMBSTONE:
            if before is None or before.tombstone:
                raise SnapshotCorruptError("tombstone without a live record before it", start)
            rec = SnapshotRecord(main, sub, key, True, 0, 0, 0, b"")
        else:
            if pos + live_size > n:
                raise SnapshotCorruptError("truncated record body", pos)
            create, ver, lease, vlen = _REC_LIVE.unpack_from(mv, pos)
            pos += live_size
            if pos + vlen > n:
                raise SnapshotCorruptError(f"bad value length {vlen}", pos - 4)
            value = bytes(mv[pos : pos + vlen])
            pos += vlen
            if before is not None and not before.tombstone:
                ok = create == before.create_revision and ver == before.version + 1
            elif before is not None:
                ok = create == main and ver == 1
            elif main <= compact_rev:  # kept by compaction: its predecessors are gone
                ok = 1 <= create <= main and ver >= 1
            else:  # first record of the key since compaction starts a generation
                ok = create == main and ver == 1
            if not ok:
                raise SnapshotCorruptError(
                    f"inconsistent create_revision {create} / version {ver}", start
                )
            rec = SnapshotRecord(main, sub, key, False, create, ver, lease, value)
        last[key] = rec
        records.append(rec)
    if pos != n:
        raise SnapshotCorruptError(f"{n - pos} trailing bytes after {count} records", pos)
    return DecodedSnapshot(current_rev, compact_rev, records)

"""The backup file: what `Maintenance.Snapshot` streams and `synod snapshot restore` reads.

Layout (all integers big-endian):

    magic      8 bytes  b"SYNODBAK"
    version    u32      1
    index      u64      Raft index the state was taken at
    term       u64      Raft term of that index
    length     u64      length of the state that follows
    state      bytes    ConsensusState.snapshot_data() (members, leases, MVCC history)
    padding    zeros    up to a multiple of 512 bytes from the start of the file
    sha256     32 bytes of everything before it

The padding and trailing SHA-256 make the file look like etcd's backups to
etcd's tools: `etcdctl snapshot save` accepts a stream only if its size is a
multiple of 512 plus a 32-byte digest.
"""

from __future__ import annotations

import hashlib
import struct

MAGIC = b"SYNODBAK"
VERSION = 1
_HEADER = struct.Struct(">8sIQQQ")
_PAGE = 512


class BackupFormatError(ValueError):
    """A backup file that is not one, or is damaged (the message names the offset)."""


def encode(state: bytes, index: int, term: int) -> bytes:
    body = _HEADER.pack(MAGIC, VERSION, index, term, len(state)) + state
    body += b"\0" * (-len(body) % _PAGE)
    return body + hashlib.sha256(body).digest()


def decode(blob: bytes) -> tuple[bytes, int, int]:
    """(state, index, term) from a backup file, after checking it whole."""
    if len(blob) < _HEADER.size + 32:
        raise BackupFormatError(
            f"backup is only {len(blob)} bytes: truncated at offset {len(blob)}"
        )
    body, digest = blob[:-32], blob[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise BackupFormatError(f"backup checksum mismatch (sha256 at offset {len(body)})")
    magic, version, index, term, length = _HEADER.unpack_from(body)
    if magic != MAGIC:
        raise BackupFormatError(f"not a Synod backup: magic {magic!r} at offset 0")
    if version != VERSION:
        raise BackupFormatError(f"backup format version {version} at offset 8 is not supported")
    end = _HEADER.size + length
    if end > len(body):
        raise BackupFormatError(f"backup state runs past the end of the file (offset {end})")
    return body[_HEADER.size : end], index, term

"""Wire codec between the Raft core's messages and the peer protocol (synod.raft.v1).

Pure functions and one small stateful reassembler; no I/O. The contract itself
(what each field means, why snapshots are chunked) is documented in
``protos/synod/raft/v1/raft.proto``.

- ``message_to_proto`` / ``message_from_proto``: one core ``Message`` <-> one
  ``raft_pb2.Message``. Lossless, except that a Message never carries snapshot
  *data*: only the snapshot's metadata travels inside it, so encoding a Message
  whose snapshot has data is refused (send it with ``snapshot_chunks``).
- ``batch_to_proto`` / ``batch_from_proto``: the unit of the ``Raft.Stream`` RPC.
- ``snapshot_chunks`` / ``SnapshotAssembler`` / ``assemble_snapshot``: the
  ``Raft.InstallSnapshot`` RPC's chunk sequence, checked with CRC-32 (zlib).

This sits on the hot path of every message, so encoding fills protobuf
messages in one constructor call each (``RepeatedCompositeFieldContainer.add``
with keyword arguments, which benchmarks faster than building sub-messages and
``extend``-ing them), and decoding builds the frozen dataclasses positionally.

Every malformed input raises ``ValueError`` (or a subclass) naming the problem.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields
from typing import Any, NamedTuple

from synod.consensus.raft.messages import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from synod.raft.v1 import raft_pb2

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "Batch",
    "SnapshotAssembler",
    "SnapshotChecksumError",
    "assemble_snapshot",
    "batch_from_proto",
    "batch_to_proto",
    "message_from_proto",
    "message_to_proto",
    "snapshot_chunks",
]

#: A sensible chunk size: well below gRPC's default 4 MiB message limit.
DEFAULT_CHUNK_SIZE = 1 << 20

# -- enum mapping ---------------------------------------------------------------
# Built by name (MessageType.APPEND <-> MESSAGE_TYPE_APPEND, EntryType.NORMAL <->
# ENTRY_TYPE_NORMAL). A core value with no wire counterpart is simply absent
# here and fails at encode time; tests/test_peer_codec.py checks both enums are
# in one-to-one correspondence, so that never ships.


def _enum_map(core: Iterable[Any], pb_enum: Any, prefix: str) -> dict[Any, int]:
    names = set(pb_enum.keys())
    return {t: pb_enum.Value(prefix + t.name) for t in core if prefix + t.name in names}


_MT_TO_PB: dict[MessageType, int] = _enum_map(MessageType, raft_pb2.MessageType, "MESSAGE_TYPE_")
_MT_FROM_PB: dict[int, MessageType] = {v: k for k, v in _MT_TO_PB.items()}
_ET_TO_PB: dict[EntryType, int] = _enum_map(EntryType, raft_pb2.EntryType, "ENTRY_TYPE_")
_ET_FROM_PB: dict[int, EntryType] = {v: k for k, v in _ET_TO_PB.items()}

# message_from_proto builds Message and Entry positionally (measurably faster
# than keywords on this path); refuse to import if the core's field order moved.
_MESSAGE_FIELDS = (
    "type",
    "to",
    "sender",
    "term",
    "log_term",
    "index",
    "entries",
    "commit",
    "reject",
    "reject_hint",
    "hint_term",
    "snapshot",
    "context",
    "transfer",
    "read_round",
    "no_ack",
)
if tuple(f.name for f in fields(Message)) != _MESSAGE_FIELDS:  # pragma: no cover
    raise ImportError("peer_codec: core Message fields changed; update the codec and raft.proto")
if tuple(f.name for f in fields(Entry)) != ("term", "index", "type", "data"):  # pragma: no cover
    raise ImportError("peer_codec: core Entry fields changed; update the codec and raft.proto")


def _pb_message_type(t: MessageType) -> int:
    try:
        return _MT_TO_PB[t]
    except KeyError:
        raise ValueError(f"message type {t!r} has no wire encoding in raft.proto") from None


# -- messages ---------------------------------------------------------------------


def _meta_to_proto(meta: SnapshotMeta) -> raft_pb2.SnapshotMeta:
    conf = meta.conf
    return raft_pb2.SnapshotMeta(
        index=meta.index,
        term=meta.term,
        conf=raft_pb2.ConfState(voters=sorted(conf.voters), learners=sorted(conf.learners)),
    )


def _meta_from_proto(pb: raft_pb2.SnapshotMeta) -> SnapshotMeta:
    conf = pb.conf
    return SnapshotMeta(
        pb.index, pb.term, ConfState(frozenset(conf.voters), frozenset(conf.learners))
    )


def _encode(new: Callable[..., raft_pb2.Message], m: Message) -> raft_pb2.Message:
    """Encode `m` into the message `new(**fields)` creates; the snapshot's data is ignored.

    `new` is ``raft_pb2.Message`` or a repeated field's ``add``, so a batch's
    messages are filled in place instead of being built and copied.
    """
    snap = m.snapshot
    pb = new(
        type=_pb_message_type(m.type),
        to=m.to,
        sender=m.sender,
        term=m.term,
        log_term=m.log_term,
        index=m.index,
        commit=m.commit,
        snapshot_meta=None if snap is None else _meta_to_proto(snap.meta),
    )
    # Rarely set fields: testing in Python is cheaper than passing zeros to C.
    if m.reject:
        pb.reject = True
    if m.reject_hint:
        pb.reject_hint = m.reject_hint
    if m.hint_term:
        pb.hint_term = m.hint_term
    if m.context:
        pb.context = m.context
    if m.transfer:
        pb.transfer = True
    if m.read_round:
        pb.read_round = m.read_round
    if m.no_ack:
        pb.no_ack = True
    if m.entries:
        add = pb.entries.add
        et = _ET_TO_PB
        try:
            for e in m.entries:
                add(term=e.term, index=e.index, type=et[e.type], data=e.data)
        except KeyError as exc:
            raise ValueError(
                f"entry type {exc.args[0]!r} has no wire encoding in raft.proto"
            ) from None
    return pb


def message_to_proto(m: Message) -> raft_pb2.Message:
    """Encode one core Message. Refuses a snapshot with data (use `snapshot_chunks`)."""
    if m.snapshot is not None and m.snapshot.data:
        raise ValueError(
            f"{m.type.name} message to {m.to} carries {len(m.snapshot.data)} bytes of snapshot "
            "data, which a Message never carries on the wire; send it with snapshot_chunks()"
        )
    return _encode(raft_pb2.Message, m)


def message_from_proto(pb: raft_pb2.Message) -> Message:
    """Decode one wire Message. A snapshot, if present, comes back with empty data."""
    try:
        mtype = _MT_FROM_PB[pb.type]
    except KeyError:
        raise ValueError(
            f"message from {pb.sender} to {pb.to} has invalid type {pb.type} "
            f"({_enum_name(raft_pb2.MessageType, pb.type)})"
        ) from None
    if pb.entries:
        et = _ET_FROM_PB
        try:
            entries = tuple([Entry(e.term, e.index, et[e.type], e.data) for e in pb.entries])
        except KeyError:
            bad = next(e for e in pb.entries if e.type not in et)
            raise ValueError(
                f"{mtype.name} message from {pb.sender}: entry {bad.index} has invalid type "
                f"{bad.type} ({_enum_name(raft_pb2.EntryType, bad.type)})"
            ) from None
    else:
        entries = ()
    snapshot = (
        Snapshot(_meta_from_proto(pb.snapshot_meta)) if pb.HasField("snapshot_meta") else None
    )
    # Positional, in _MESSAGE_FIELDS order (checked at import).
    return Message(
        mtype,
        pb.to,
        pb.sender,
        pb.term,
        pb.log_term,
        pb.index,
        entries,
        pb.commit,
        pb.reject,
        pb.reject_hint,
        pb.hint_term,
        snapshot,
        pb.context,
        pb.transfer,
        pb.read_round,
        pb.no_ack,
    )


def _enum_name(pb_enum: Any, value: int) -> str:
    try:
        return str(pb_enum.Name(value))
    except ValueError:
        return "unknown value"


# -- batches ----------------------------------------------------------------------


class Batch(NamedTuple):
    """A decoded MessageBatch."""

    cluster_id: int
    sender: int
    messages: tuple[Message, ...]


def batch_to_proto(cluster_id: int, sender: int, msgs: Sequence[Message]) -> raft_pb2.MessageBatch:
    """Encode the messages `sender` has queued for one peer as one Stream frame.

    Every message must come from `sender` and none may be a snapshot (those
    travel by InstallSnapshot).
    """
    batch = raft_pb2.MessageBatch(cluster_id=cluster_id, sender=sender)
    add = batch.messages.add
    for m in msgs:
        if m.sender != sender:
            raise ValueError(f"batch from {sender} contains a {m.type.name} from {m.sender}")
        if m.snapshot is not None:
            raise ValueError(
                f"{m.type.name} message to {m.to} carries a snapshot; snapshots travel by "
                "InstallSnapshot (snapshot_chunks), never in a MessageBatch"
            )
        _encode(add, m)
    return batch


def batch_from_proto(pb: raft_pb2.MessageBatch) -> Batch:
    """Decode a Stream frame, checking that every message comes from the batch's sender."""
    sender = pb.sender
    out = []
    for p in pb.messages:
        if p.sender != sender:
            raise ValueError(f"batch from {sender} contains a message from {p.sender}")
        if p.HasField("snapshot_meta"):
            raise ValueError(
                f"batch from {sender} contains a message with snapshot metadata; "
                "snapshots travel by InstallSnapshot, never in a MessageBatch"
            )
        out.append(message_from_proto(p))
    return Batch(pb.cluster_id, sender, tuple(out))


# -- snapshots --------------------------------------------------------------------


class SnapshotChecksumError(ValueError):
    """The reassembled snapshot data does not match the sender's CRC-32."""


def snapshot_chunks(
    m: Message, chunk_size: int = DEFAULT_CHUNK_SIZE, *, cluster_id: int = 0
) -> Iterator[raft_pb2.SnapshotChunk]:
    """Split a core SNAPSHOT Message into InstallSnapshot chunks of <= `chunk_size` data bytes.

    The first chunk carries the Message (with the snapshot's metadata), the
    cluster id and the data's total size; the last is flagged `done` and carries
    the CRC-32 of the whole data. An empty snapshot is a single chunk.
    """
    snap = m.snapshot
    if m.type != MessageType.SNAPSHOT or snap is None:
        raise ValueError(
            f"snapshot_chunks needs a SNAPSHOT message with a snapshot, got {m.type.name}"
            + ("" if snap is not None else " without one")
        )
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    # Encode (and so validate) the header now, not on the first next().
    header = _encode(raft_pb2.Message, m)
    return _chunks(header, snap.data, chunk_size, cluster_id)


def _chunks(
    header: raft_pb2.Message, data: bytes, chunk_size: int, cluster_id: int
) -> Iterator[raft_pb2.SnapshotChunk]:
    total = len(data)
    crc = zlib.crc32(data)
    last = total <= chunk_size
    yield raft_pb2.SnapshotChunk(
        header=header,
        cluster_id=cluster_id,
        total_size=total,
        data=data[:chunk_size],
        done=last,
        crc32=crc if last else 0,
    )
    view = memoryview(data)
    for off in range(chunk_size, total, chunk_size):
        end = off + chunk_size
        if end >= total:
            yield raft_pb2.SnapshotChunk(offset=off, data=bytes(view[off:]), done=True, crc32=crc)
        else:
            yield raft_pb2.SnapshotChunk(offset=off, data=bytes(view[off:end]))


class SnapshotAssembler:
    """Reassembles one InstallSnapshot call's chunks into the core's SNAPSHOT Message.

    Feed chunks in arrival order; `feed` returns the Message once the final
    chunk has arrived and verified, None before. Any deviation from the contract
    in raft.proto (missing, repeated or reordered chunks, size or checksum
    mismatch, chunks after the last) raises ValueError naming it, after which
    the assembler is unusable. `finish` checks that the stream did not end early.

    `cluster_id`, if given, must match the first chunk's; `max_size`, if given,
    bounds the declared total size so a peer cannot make us buffer without limit.
    """

    __slots__ = ("_cluster_id", "_max_size", "_header", "_total", "_buf", "_crc", "_result")

    def __init__(self, *, cluster_id: int | None = None, max_size: int | None = None) -> None:
        self._cluster_id = cluster_id
        self._max_size = max_size
        self._header: Message | None = None
        self._total = 0
        self._buf = bytearray()
        self._crc = 0
        self._result: Message | None = None

    @property
    def received(self) -> int:
        """Snapshot data bytes received so far."""
        return len(self._buf)

    @property
    def total_size(self) -> int | None:
        """The declared data size, once the first chunk has arrived."""
        return None if self._header is None else self._total

    @property
    def done(self) -> bool:
        return self._result is not None

    def feed(self, chunk: raft_pb2.SnapshotChunk) -> Message | None:
        if self._result is not None:
            raise ValueError("snapshot chunk after the final (done) chunk")
        if self._header is None:
            self._start(chunk)
        else:
            if chunk.HasField("header"):
                raise ValueError(
                    f"snapshot chunk at offset {chunk.offset} carries a header; only the first "
                    "chunk may (a second snapshot in one stream?)"
                )
            if chunk.total_size or chunk.cluster_id:
                raise ValueError(
                    f"snapshot chunk at offset {chunk.offset} sets total_size/cluster_id; "
                    "only the first chunk may"
                )
        received = len(self._buf)
        if chunk.offset != received:
            raise ValueError(
                f"snapshot chunk at offset {chunk.offset}, expected offset {received} "
                "(missing, duplicated or out-of-order chunk)"
            )
        data = chunk.data
        end = received + len(data)
        if end > self._total:
            raise ValueError(
                f"snapshot chunk at offset {chunk.offset} with {len(data)} bytes overruns the "
                f"declared total_size {self._total}"
            )
        self._buf += data
        self._crc = zlib.crc32(data, self._crc)
        if not chunk.done:
            return None
        if end != self._total:
            raise ValueError(
                f"final snapshot chunk ends at byte {end} but total_size is {self._total} "
                "(missing chunks)"
            )
        if chunk.crc32 != self._crc:
            raise SnapshotChecksumError(
                f"snapshot data checksum mismatch: received data has CRC-32 {self._crc:#010x}, "
                f"final chunk says {chunk.crc32:#010x} (corrupted chunk)"
            )
        header = self._header
        assert header is not None and header.snapshot is not None
        self._result = Message(
            header.type,
            header.to,
            header.sender,
            header.term,
            header.log_term,
            header.index,
            header.entries,
            header.commit,
            header.reject,
            header.reject_hint,
            header.hint_term,
            Snapshot(header.snapshot.meta, bytes(self._buf)),
            header.context,
            header.transfer,
            header.read_round,
            header.no_ack,
        )
        self._buf = bytearray()
        return self._result

    def _start(self, chunk: raft_pb2.SnapshotChunk) -> None:
        if not chunk.HasField("header"):
            raise ValueError(
                f"first snapshot chunk (offset {chunk.offset}) has no header "
                "(missing or out-of-order chunk)"
            )
        header = message_from_proto(chunk.header)
        if header.type != MessageType.SNAPSHOT or header.snapshot is None:
            raise ValueError(
                f"snapshot header must be a SNAPSHOT message with snapshot_meta, got "
                f"{header.type.name}" + ("" if header.snapshot else " without snapshot_meta")
            )
        if self._cluster_id is not None and chunk.cluster_id != self._cluster_id:
            raise ValueError(
                f"snapshot from {header.sender} is for cluster {chunk.cluster_id}, "
                f"we are cluster {self._cluster_id}"
            )
        total = chunk.total_size
        if self._max_size is not None and total > self._max_size:
            raise ValueError(
                f"snapshot from {header.sender} declares {total} bytes, more than the "
                f"{self._max_size} this member accepts"
            )
        self._header = header
        self._total = total

    def finish(self) -> Message:
        """The reassembled Message; raises if the stream ended before the final chunk."""
        if self._result is not None:
            return self._result
        if self._header is None:
            raise ValueError("snapshot stream ended before its first chunk")
        raise ValueError(
            f"snapshot stream ended after {len(self._buf)} of {self._total} bytes without a "
            "final (done) chunk (missing chunks)"
        )


def assemble_snapshot(
    chunks: Iterable[raft_pb2.SnapshotChunk],
    *,
    cluster_id: int | None = None,
    max_size: int | None = None,
) -> Message:
    """Reassemble a complete InstallSnapshot chunk sequence (see SnapshotAssembler)."""
    asm = SnapshotAssembler(cluster_id=cluster_id, max_size=max_size)
    for chunk in chunks:
        asm.feed(chunk)
    return asm.finish()

"""The peer wire codec: core dataclasses <-> synod.raft.v1 protobuf, losslessly."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.consensus import peer_codec
from synod.consensus.peer_codec import (
    SnapshotAssembler,
    SnapshotChecksumError,
    assemble_snapshot,
    batch_from_proto,
    batch_to_proto,
    message_from_proto,
    message_to_proto,
    snapshot_chunks,
)
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

U64 = 2**64 - 1

# -- strategies ---------------------------------------------------------------------

u64 = st.integers(min_value=0, max_value=U64)
small_bytes = st.binary(max_size=64)
entries = st.builds(Entry, u64, u64, st.sampled_from(EntryType), small_bytes)
conf_states = st.builds(ConfState, st.frozensets(u64, max_size=6), st.frozensets(u64, max_size=4))
metas = st.builds(SnapshotMeta, u64, u64, conf_states)


#: Snapshots as a Message carries them on the wire: metadata only, no data.
meta_only_snapshots = st.builds(Snapshot, metas, st.just(b""))
no_snapshot: st.SearchStrategy[Snapshot | None] = st.none()


def messages(
    sender: st.SearchStrategy[int] = u64,
    snapshot: st.SearchStrategy[Snapshot | None] = no_snapshot | meta_only_snapshots,
) -> st.SearchStrategy[Message]:
    """Messages of every type with every field drawn (so usually all non-default)."""
    return st.builds(
        Message,
        type=st.sampled_from(MessageType),
        to=u64,
        sender=sender,
        term=u64,
        log_term=u64,
        index=u64,
        entries=st.lists(entries, max_size=6).map(tuple),
        commit=u64,
        reject=st.booleans(),
        reject_hint=u64,
        hint_term=u64,
        snapshot=snapshot,
        context=small_bytes,
        transfer=st.booleans(),
        read_round=u64,
        no_ack=st.booleans(),
    )


def over_the_wire(pb: raft_pb2.Message) -> raft_pb2.Message:
    return raft_pb2.Message.FromString(pb.SerializeToString())


def full_message(t: MessageType, snapshot_data: bytes = b"") -> Message:
    """A message of type `t` with every field set to a non-default value."""
    return Message(
        t,
        to=2,
        sender=1,
        term=7,
        log_term=6,
        index=41,
        entries=(
            Entry(6, 42, EntryType.NORMAL, b"put x 1"),
            Entry(7, 43, EntryType.CONF_CHANGE, b"\x00\x01add 4"),
            Entry(7, 44, EntryType.NORMAL, b""),
        ),
        commit=40,
        reject=True,
        reject_hint=30,
        hint_term=5,
        snapshot=Snapshot(
            SnapshotMeta(29, 5, ConfState(frozenset({1, 2, 3}), frozenset({U64}))), snapshot_data
        ),
        context=b"req-1",
        transfer=True,
        read_round=U64,
        no_ack=True,
    )


# -- single messages ----------------------------------------------------------------


@given(messages())
def test_message_round_trip(m: Message) -> None:
    assert message_from_proto(message_to_proto(m)) == m
    assert message_from_proto(over_the_wire(message_to_proto(m))) == m


@pytest.mark.parametrize("t", list(MessageType), ids=lambda t: t.name)
def test_every_type_with_every_field_set(t: MessageType) -> None:
    m = full_message(t)
    pb = message_to_proto(m)
    # Every proto field is populated: the codec fills all of them, and the
    # proto has no field the core lacks (nor the other way round).
    assert {f.name for f, _ in pb.ListFields()} == {f.name for f in pb.DESCRIPTOR.fields}
    assert len(pb.DESCRIPTOR.fields) == len(peer_codec._MESSAGE_FIELDS)
    assert message_from_proto(over_the_wire(pb)) == m


def test_default_message_is_minimal_on_the_wire() -> None:
    m = Message(MessageType.HEARTBEAT, to=2, sender=1)
    pb = message_to_proto(m)
    assert {f.name for f, _ in pb.ListFields()} == {"type", "to", "sender"}
    assert not pb.HasField("snapshot_meta")
    assert message_from_proto(over_the_wire(pb)) == m


def test_empty_snapshot_presence_is_kept() -> None:
    m = Message(MessageType.SNAPSHOT, to=2, sender=1, term=3, snapshot=Snapshot())
    pb = message_to_proto(m)
    assert pb.HasField("snapshot_meta")
    assert message_from_proto(over_the_wire(pb)) == m


def test_message_never_carries_snapshot_data() -> None:
    with pytest.raises(ValueError, match="snapshot_chunks"):
        message_to_proto(full_message(MessageType.SNAPSHOT, snapshot_data=b"state"))


def test_out_of_range_ids_rejected() -> None:
    with pytest.raises(ValueError):
        message_to_proto(Message(MessageType.APPEND, to=-1, sender=1))
    with pytest.raises(ValueError):
        message_to_proto(Message(MessageType.APPEND, to=2, sender=1, term=U64 + 1))


@pytest.mark.parametrize("bad", [raft_pb2.MESSAGE_TYPE_UNSPECIFIED, 99])
def test_invalid_message_type_rejected(bad: int) -> None:
    pb = raft_pb2.Message(type=raft_pb2.MESSAGE_TYPE_APPEND, to=2, sender=1)
    pb.type = bad  # type: ignore[assignment]
    with pytest.raises(ValueError, match=f"invalid type {bad}"):
        message_from_proto(over_the_wire(pb))


@pytest.mark.parametrize("bad", [raft_pb2.ENTRY_TYPE_UNSPECIFIED, 7])
def test_invalid_entry_type_rejected(bad: int) -> None:
    pb = message_to_proto(full_message(MessageType.APPEND))
    pb.entries[1].type = bad  # type: ignore[assignment]
    with pytest.raises(ValueError, match=f"entry 43 has invalid type {bad}"):
        message_from_proto(over_the_wire(pb))


# -- enums stay in step ---------------------------------------------------------------


def test_message_type_enum_matches_core_one_to_one() -> None:
    wire = dict(raft_pb2.MessageType.items())
    assert wire.pop("MESSAGE_TYPE_UNSPECIFIED") == 0
    core = {"MESSAGE_TYPE_" + t.name: t.value for t in MessageType}
    # Same names, and (as raft.proto documents) the same numbers.
    assert wire == core
    assert peer_codec._MT_TO_PB == {t: t.value for t in MessageType}


def test_entry_type_enum_matches_core_one_to_one() -> None:
    wire = dict(raft_pb2.EntryType.items())
    assert wire.pop("ENTRY_TYPE_UNSPECIFIED") == 0
    core = {"ENTRY_TYPE_" + t.name: t.value + 1 for t in EntryType}
    # Same names; numbers are the core's + 1 (the core's NORMAL is 0).
    assert wire == core
    assert peer_codec._ET_TO_PB == {t: t.value + 1 for t in EntryType}


# -- batches --------------------------------------------------------------------------


@given(
    u64,
    st.integers(min_value=1, max_value=U64).flatmap(
        lambda s: st.tuples(st.just(s), st.lists(messages(sender=st.just(s), snapshot=no_snapshot)))
    ),
)
def test_batch_round_trip(cluster_id: int, sender_msgs: tuple[int, list[Message]]) -> None:
    sender, msgs = sender_msgs
    pb = batch_to_proto(cluster_id, sender, msgs)
    wire = raft_pb2.MessageBatch.FromString(pb.SerializeToString())
    batch = batch_from_proto(wire)
    assert batch.cluster_id == cluster_id
    assert batch.sender == sender
    assert batch.messages == tuple(msgs)


def test_batch_rejects_foreign_sender_and_snapshots() -> None:
    ok = Message(MessageType.HEARTBEAT, to=2, sender=1, term=3)
    with pytest.raises(ValueError, match="batch from 1 contains a HEARTBEAT from 5"):
        batch_to_proto(9, 1, [ok, Message(MessageType.HEARTBEAT, to=2, sender=5)])
    snap = Message(MessageType.SNAPSHOT, to=2, sender=1, snapshot=Snapshot())
    with pytest.raises(ValueError, match="never in a MessageBatch"):
        batch_to_proto(9, 1, [ok, snap])

    pb = batch_to_proto(9, 1, [ok])
    pb.messages.add(type=raft_pb2.MESSAGE_TYPE_HEARTBEAT, to=2, sender=5)
    with pytest.raises(ValueError, match="batch from 1 contains a message from 5"):
        batch_from_proto(pb)
    pb = batch_to_proto(9, 1, [ok])
    pb.messages[0].snapshot_meta.index = 4
    with pytest.raises(ValueError, match="never in a MessageBatch"):
        batch_from_proto(pb)


# -- snapshots ------------------------------------------------------------------------

CHUNK = 16


def snapshot_message(data: bytes) -> Message:
    return Message(
        MessageType.SNAPSHOT,
        to=3,
        sender=1,
        term=9,
        snapshot=Snapshot(SnapshotMeta(100, 8, ConfState(frozenset({1, 2, 3}))), data),
    )


def chunks_of(data: bytes, chunk_size: int = CHUNK, **kw: int) -> list[raft_pb2.SnapshotChunk]:
    # Through serialization, as a transport would.
    return [
        raft_pb2.SnapshotChunk.FromString(c.SerializeToString())
        for c in snapshot_chunks(snapshot_message(data), chunk_size, **kw)
    ]


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 10 * CHUNK + 3], ids=str
)
def test_snapshot_chunk_round_trip(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    chunks = chunks_of(data, cluster_id=77)
    assert len(chunks) == max(1, -(-size // CHUNK))
    first, last = chunks[0], chunks[-1]
    assert first.HasField("header") and first.total_size == size and first.cluster_id == 77
    assert not any(c.HasField("header") for c in chunks[1:])
    assert all(len(c.data) <= CHUNK for c in chunks)
    assert [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert last.crc32 == zlib.crc32(data)
    assert first.header.HasField("snapshot_meta")
    assert assemble_snapshot(chunks, cluster_id=77) == snapshot_message(data)


@settings(max_examples=50)
@given(st.builds(Snapshot, metas, st.binary(max_size=300)), st.integers(min_value=1, max_value=64))
def test_snapshot_chunk_round_trip_property(snap: Snapshot, chunk_size: int) -> None:
    m = Message(MessageType.SNAPSHOT, to=2, sender=1, term=4, snapshot=snap)
    asm = SnapshotAssembler()
    results = [asm.feed(c) for c in snapshot_chunks(m, chunk_size)]
    assert results[-1] == m and all(r is None for r in results[:-1])
    assert asm.done and asm.finish() == m


def test_snapshot_chunks_validates_eagerly() -> None:
    with pytest.raises(ValueError, match="needs a SNAPSHOT message"):
        snapshot_chunks(Message(MessageType.APPEND, to=2, sender=1))
    with pytest.raises(ValueError, match="needs a SNAPSHOT message"):
        snapshot_chunks(Message(MessageType.SNAPSHOT, to=2, sender=1))
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        snapshot_chunks(snapshot_message(b"x"), 0)


DATA = bytes(range(256))[: 5 * CHUNK + 5]  # 6 chunks


def test_corrupted_chunk_rejected() -> None:
    chunks = chunks_of(DATA)
    chunks[2].data = b"\xff" + chunks[2].data[1:]
    with pytest.raises(SnapshotChecksumError, match="checksum mismatch"):
        assemble_snapshot(chunks)
    chunks = chunks_of(DATA)
    chunks[-1].crc32 ^= 1
    with pytest.raises(ValueError, match="checksum mismatch"):
        assemble_snapshot(chunks)


def test_missing_chunk_rejected() -> None:
    chunks = chunks_of(DATA)
    with pytest.raises(ValueError, match=r"offset 48, expected offset 32 \(missing"):
        assemble_snapshot(chunks[:2] + chunks[3:])
    with pytest.raises(ValueError, match="first snapshot chunk .* has no header"):
        assemble_snapshot(chunks[1:])
    with pytest.raises(ValueError, match=r"ended after 80 of 85 bytes .*missing chunks"):
        assemble_snapshot(chunks[:-1])
    with pytest.raises(ValueError, match="ended before its first chunk"):
        assemble_snapshot([])


def test_out_of_order_and_duplicate_chunks_rejected() -> None:
    chunks = chunks_of(DATA)
    swapped = [chunks[0], chunks[2], chunks[1], *chunks[3:]]
    with pytest.raises(ValueError, match="out-of-order"):
        assemble_snapshot(swapped)
    with pytest.raises(ValueError, match="duplicated"):
        assemble_snapshot([chunks[0], chunks[1], chunks[1], *chunks[2:]])
    with pytest.raises(ValueError, match="after the final"):
        assemble_snapshot([*chunks, chunks[-1]])
    with pytest.raises(ValueError, match="carries a header"):
        assemble_snapshot([chunks[0], chunks[0]])


def test_size_mismatches_rejected() -> None:
    chunks = chunks_of(DATA)
    chunks[-1].data += b"!"
    with pytest.raises(ValueError, match="overruns the declared total_size 85"):
        assemble_snapshot(chunks)
    chunks = chunks_of(DATA)
    chunks[-1].data = chunks[-1].data[:-1]
    with pytest.raises(ValueError, match="ends at byte 84 but total_size is 85"):
        assemble_snapshot(chunks)
    chunks = chunks_of(DATA)
    chunks[1].total_size = 5
    with pytest.raises(ValueError, match="only the first chunk may"):
        assemble_snapshot(chunks)


def test_bad_header_cluster_and_size_limit_rejected() -> None:
    chunks = chunks_of(DATA, cluster_id=5)
    with pytest.raises(ValueError, match="for cluster 5, we are cluster 6"):
        assemble_snapshot(chunks, cluster_id=6)
    with pytest.raises(ValueError, match="declares 85 bytes, more than the 84"):
        assemble_snapshot(chunks, max_size=84)
    assert assemble_snapshot(chunks, max_size=85) == snapshot_message(DATA)

    chunks[0].header.type = raft_pb2.MESSAGE_TYPE_APPEND
    with pytest.raises(ValueError, match="must be a SNAPSHOT message"):
        assemble_snapshot(chunks)
    chunks = chunks_of(DATA)
    chunks[0].header.ClearField("snapshot_meta")
    with pytest.raises(ValueError, match="without snapshot_meta"):
        assemble_snapshot(chunks)


def test_assembler_reports_progress() -> None:
    asm = SnapshotAssembler()
    assert asm.total_size is None and asm.received == 0 and not asm.done
    chunks = chunks_of(DATA)
    for c in chunks[:3]:
        assert asm.feed(c) is None
    assert asm.total_size == len(DATA) and asm.received == 3 * CHUNK and not asm.done

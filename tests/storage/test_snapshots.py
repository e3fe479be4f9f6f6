"""Snapshot files, and MemberStorage (WAL + snapshots) as the Raft core uses it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from synod.consensus.raft.messages import (
    ConfState,
    Entry,
    HardState,
    Ready,
    Snapshot,
    SnapshotMeta,
)
from synod.consensus.storage import (
    MemberStorage,
    SnapshotCorruptError,
    SnapshotStore,
    StorageError,
)


def snap(
    index: int, term: int, data: bytes = b"state", voters: tuple[int, ...] = (1, 2, 3)
) -> Snapshot:
    return Snapshot(
        SnapshotMeta(index, term, ConfState(frozenset(voters), frozenset({9}))),
        data + b"@%d" % index,
    )


def ent(index: int, term: int = 1) -> Entry:
    return Entry(term, index, data=b"v%d/%d" % (index, term))


def ents(lo: int, hi: int, term: int = 1) -> tuple[Entry, ...]:
    return tuple(ent(i, term) for i in range(lo, hi + 1))


# -- SnapshotStore ---------------------------------------------------------------


def test_round_trip_and_name(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "snap"))
    assert store.load_latest() is None
    s = snap(42, 3, b"x" * 100_000)
    path = store.save(s)
    assert os.path.basename(path) == f"{3:016x}-{42:016x}.snap"
    assert store.load_latest() == s
    empty = Snapshot(SnapshotMeta(43, 3), b"")
    store.save(empty)
    assert SnapshotStore(str(tmp_path / "snap")).load_latest() == empty


def test_keeps_only_the_newest(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path), keep=3)
    for i in range(1, 7):
        store.save(snap(i * 10, 1 + i // 3))
    assert [(f.index, f.term) for f in store.list()] == [(40, 2), (50, 2), (60, 3)]
    assert store.load_latest() == snap(60, 3)


def test_leftover_temp_file_is_removed(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path))
    store.save(snap(5, 1))
    tmp = tmp_path / f"{1:016x}-{9:016x}.snap.tmp"
    tmp.write_bytes(b"half a snapshot")
    assert store.load_latest() == snap(5, 1)  # never mistaken for a snapshot
    with capture_logs() as logs:
        SnapshotStore(str(tmp_path))
    assert not tmp.exists()
    assert [(x["event"], x["path"]) for x in logs] == [("snapshot_removing_temp_file", str(tmp))]


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync the temp file, rename, fsync the directory — in that order."""
    store = SnapshotStore(str(tmp_path))
    calls: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        calls.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def rename(a: str, b: str) -> None:
        assert a.endswith(".tmp") and not b.endswith(".tmp")
        calls.append("rename")
        real_rename(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    store.save(snap(7, 1))
    assert calls == ["fsync-file", "rename", "fsync-dir"]


def test_failed_save_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SnapshotStore(str(tmp_path))

    def boom(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        store.save(snap(7, 1))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("where", "offset", "match"),
    [
        ("magic", 0, "bad magic"),
        ("version", 8, "unsupported format version"),
        ("data", 12, "checksum mismatch"),
        ("voters", 12, "checksum mismatch"),
        ("truncate", 32, "header promises"),
        ("short", 20, "too short"),
    ],
)
def test_corrupt_latest_snapshot_raises(
    tmp_path: Path, where: str, offset: int, match: str
) -> None:
    store = SnapshotStore(str(tmp_path))
    store.save(snap(5, 1))
    path = Path(store.save(snap(9, 2, b"y" * 1000)))
    data = bytearray(path.read_bytes())
    if where == "magic":
        data[0] ^= 1
    elif where == "version":
        data[8] = 7
    elif where == "data":
        data[-10] ^= 0x80
    elif where == "voters":
        data[50] ^= 0x01
    elif where == "truncate":
        del data[-1]
    else:
        del data[20:]
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorruptError, match=match) as ei:
        store.load_latest()  # no silent fallback to the older one
    assert ei.value.path == str(path) and ei.value.offset == offset
    assert path.name in str(ei.value) and f"offset {offset}" in str(ei.value)


def test_renamed_snapshot_is_detected(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path))
    path = Path(store.save(snap(9, 2)))
    path.rename(tmp_path / f"{2:016x}-{10:016x}.snap")
    with pytest.raises(SnapshotCorruptError, match="name says index 10"):
        store.load_latest()


# -- MemberStorage -----------------------------------------------------------------


def test_fresh_member(tmp_path: Path) -> None:
    ms, restored = MemberStorage.open(str(tmp_path / "m"))
    assert restored == (HardState(), Snapshot(), [])
    assert (tmp_path / "m" / "wal").is_dir() and (tmp_path / "m" / "snap").is_dir()
    ms.close()


def test_restart_equivalence(tmp_path: Path) -> None:
    """A sequence of Ready step-1 batches, with truncations and a received snapshot."""
    d = str(tmp_path)
    ms, _ = MemberStorage.open(d, segment_bytes=512)
    batches = [
        Ready(hard_state=HardState(1, 1, 0), entries=ents(1, 5)),
        Ready(hard_state=HardState(1, 1, 3), entries=ents(6, 10)),
        Ready(entries=ents(8, 12, 2), hard_state=HardState(2, 0, 3)),  # truncation at 8
        Ready(hard_state=HardState(2, 0, 7)),
    ]
    for rd in batches:
        ms.persist_ready(rd)
    ms.compact(snap(5, 1))
    ms.close()

    ms, (hs, s, log) = MemberStorage.open(d, segment_bytes=512)
    assert hs == HardState(2, 0, 7) and s == snap(5, 1)
    assert log == [*ents(6, 7), *ents(8, 12, 2)]

    # a leader sends a snapshot that conflicts with our log at 11: the log is replaced
    received = snap(11, 3, b"leader")
    ms.persist_ready(Ready(snapshot=received, hard_state=HardState(3, 0, 11)))
    ms.persist_ready(Ready(entries=ents(12, 14, 3), hard_state=HardState(3, 0, 12)))
    ms.persist_ready(Ready(entries=ents(14, 15, 4), hard_state=HardState(4, 0, 13)))
    ms.close()

    ms, restored = MemberStorage.open(d, segment_bytes=512)
    assert restored.hard_state == HardState(4, 0, 13)
    assert restored.snapshot == received
    assert restored.entries == [*ents(12, 13, 3), *ents(14, 15, 4)]
    # compaction releases old segments and old snapshots
    for i in range(16, 60):
        ms.persist_ready(Ready(entries=(ent(i, 4),), hard_state=HardState(4, 0, i)))
    before = len(os.listdir(tmp_path / "wal"))
    ms.compact(Snapshot(SnapshotMeta(50, 4, ConfState(frozenset({1}))), b"s50"))
    assert len(os.listdir(tmp_path / "wal")) < before
    ms.close()
    ms, (hs, s, log) = MemberStorage.open(d, segment_bytes=512)
    ms.close()
    assert (s.meta.index, s.data) == (50, b"s50")
    assert hs == HardState(4, 0, 59) and log == list(ents(51, 59, 4))


def test_commit_only_ready_is_written_without_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ms, _ = MemberStorage.open(str(tmp_path))
    ms.persist_ready(Ready(hard_state=HardState(1, 1, 0), entries=ents(1, 3), sync=True))
    calls: list[int] = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real_fdatasync(fd)))
    ms.persist_ready(Ready(hard_state=HardState(1, 1, 3)))  # only the commit index moved
    assert calls == []
    ms.close()
    _, restored = MemberStorage.open(str(tmp_path))
    assert restored.hard_state.commit == 3


def test_persist_ready_is_one_wal_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ms, _ = MemberStorage.open(str(tmp_path))
    ms.persist_ready(Ready(hard_state=HardState(1, 1, 0), entries=ents(1, 3), sync=True))
    syncs: list[float] = []
    ms.wal.on_fsync = syncs.append
    calls: list[str] = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        calls.append("d")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    ms.persist_ready(Ready(hard_state=HardState(1, 1, 3), entries=ents(4, 100), sync=True))
    assert calls == ["d"] and len(syncs) == 1
    ms.close()


def test_received_snapshot_stored_before_marker(tmp_path: Path) -> None:
    """Crash after the snapshot file but before the WAL marker: adopted on open."""
    d = str(tmp_path)
    ms, _ = MemberStorage.open(d)
    ms.persist_ready(Ready(hard_state=HardState(1, 0, 2), entries=ents(1, 6), sync=True))
    ms.snapshots.save(snap(9, 2))  # the WAL write never happened
    ms.close()
    with capture_logs() as logs:
        ms, (hs, s, log) = MemberStorage.open(d)
    assert any(x["event"] == "storage_adopting_unmarked_snapshot" for x in logs)
    assert s == snap(9, 2) and log == [] and hs == HardState(1, 0, 9)
    assert ms.wal.snapshot_index == 9  # the marker is written now
    ms.close()
    # a locally taken snapshot whose marker was lost: the log after it survives
    ms, _ = MemberStorage.open(d)
    ms.persist_ready(Ready(hard_state=HardState(2, 0, 12), entries=ents(10, 14, 2)))
    ms.snapshots.save(snap(12, 2))
    ms.close()
    ms, (hs, s, log) = MemberStorage.open(d)
    ms.close()
    assert s == snap(12, 2) and log == list(ents(13, 14, 2)) and hs == HardState(2, 0, 12)


def test_missing_snapshot_is_an_error(tmp_path: Path) -> None:
    d = str(tmp_path)
    ms, _ = MemberStorage.open(d)
    ms.persist_ready(Ready(hard_state=HardState(1, 0, 4), entries=ents(1, 6)))
    ms.compact(snap(4, 1))
    ms.close()
    for f in (tmp_path / "snap").iterdir():
        f.unlink()
    with pytest.raises(StorageError, match="holds no snapshot"):
        MemberStorage.open(d)


def test_compact_checks_the_term(tmp_path: Path) -> None:
    ms, _ = MemberStorage.open(str(tmp_path))
    ms.persist_ready(Ready(hard_state=HardState(1, 0, 4), entries=ents(1, 6)))
    with pytest.raises(ValueError, match="does not match the log"):
        ms.compact(snap(4, 2))
    ms.compact(snap(4, 1))
    ms.compact(snap(3, 1))  # older than what we have: ignored
    ms.close()
    ms, (_, s, log) = MemberStorage.open(str(tmp_path))
    ms.close()
    assert s == snap(4, 1) and log == list(ents(5, 6))


def test_unsafe_no_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ms, _ = MemberStorage.open(str(tmp_path / "m"), sync=False, segment_bytes=200)
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    monkeypatch.setattr(os, "fdatasync", lambda fd: calls.append(fd))
    for i in range(1, 30):
        ms.persist_ready(Ready(hard_state=HardState(1, 0, i - 1), entries=(ent(i),)))
    ms.persist_ready(Ready(snapshot=snap(40, 2), hard_state=HardState(2, 0, 40)))
    ms.compact(snap(40, 2))  # not newer: a no-op
    ms.close()
    assert calls == []

"""The write-ahead log: round trips, truncation, segments, recovery, fsync discipline."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from synod.consensus.raft.messages import Entry, EntryType, HardState
from synod.consensus.storage import WAL, Replayed, WALCorruptError, WALError

PROLOGUE = 29 + 33 + 25  # segment header, hard state, snapshot marker


def ent(index: int, term: int = 1, data: bytes | None = None) -> Entry:
    etype = EntryType.CONF_CHANGE if index % 7 == 0 else EntryType.NORMAL
    return Entry(term, index, etype, data if data is not None else b"e%d" % index)


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [ent(i, term) for i in range(lo, hi + 1)]


def reopen(d: Path, **kw: object) -> tuple[WAL, Replayed]:
    return WAL.open(str(d), **kw)  # type: ignore[arg-type]


def replay(d: Path, **kw: object) -> Replayed:
    w, rp = reopen(d, **kw)
    w.close()
    return rp


def segments(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.suffix == ".wal")


# -- round trips ---------------------------------------------------------------


def test_fresh_directory_is_created_and_empty(tmp_path: Path) -> None:
    d = tmp_path / "data" / "wal"
    w, rp = reopen(d)
    assert rp == Replayed(HardState(), 0, 0, [])
    assert d.is_dir() and segments(d) == []
    w.close()
    assert replay(d) == Replayed()


def test_round_trip_entries_hard_state_and_marker(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path)
    w.save(ents(1, 10), HardState(1, 1, 3))
    w.save([ent(11, 2, b"x" * 1000)], HardState(2, 0, 10))
    w.mark_snapshot(5, 1)
    w.save(ents(12, 13, 2), None)
    w.close()
    rp = replay(tmp_path)
    assert rp.hard_state == HardState(2, 0, 10)
    assert (rp.snapshot_index, rp.snapshot_term) == (5, 1)
    assert rp.entries == [*ents(6, 10), ent(11, 2, b"x" * 1000), *ents(12, 13, 2)]
    assert [e.type for e in rp.entries if e.index % 7 == 0] == [EntryType.CONF_CHANGE]


def test_hard_state_only_and_empty_save(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path)
    w.save([], None)  # nothing to do: no segment is created
    assert segments(tmp_path) == []
    w.save([], HardState(3, 2, 0))
    w.close()
    assert replay(tmp_path) == Replayed(HardState(3, 2, 0), 0, 0, [])


def test_truncation_replaces_the_tail(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path)
    w.save(ents(1, 10), HardState(1, 0, 2))
    w.save(ents(6, 8, 2), HardState(2, 0, 2))  # conflict at 6: 9 and 10 go too
    assert w.last_index == 8 and w.term(7) == 2 and w.term(5) == 1 and w.term(9) is None
    w.save(ents(9, 9, 2), None)
    w.save(ents(3, 3, 3), None)  # truncate again, further back
    w.close()
    assert replay(tmp_path).entries == [*ents(1, 2), ent(3, 3)]


def test_truncation_across_segments(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path, segment_bytes=200)
    for i in range(1, 21):
        w.save([ent(i)], HardState(1, 0, 0))
    assert len(segments(tmp_path)) > 3
    w.save(ents(4, 6, 2), None)
    w.close()
    assert replay(tmp_path, segment_bytes=200).entries == [*ents(1, 3), *ents(4, 6, 2)]


def test_marker_compaction_keeps_later_entries(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path)
    w.save(ents(1, 10), None)
    w.mark_snapshot(4, 1)
    assert w.term(4) == 1 and w.term(3) is None and w.last_index == 10
    w.close()
    rp = replay(tmp_path)
    assert rp.entries == ents(5, 10) and rp.snapshot_index == 4


def test_marker_with_other_term_drops_the_whole_log(tmp_path: Path) -> None:
    """A received snapshot replacing a conflicting log (RaftLog.restore) empties it."""
    w, _ = reopen(tmp_path)
    w.save(ents(1, 10), None)
    w.mark_snapshot(8, 2)
    assert w.last_index == 8
    with pytest.raises(ValueError):
        w.save([ent(10, 2)], None)  # the log now ends at 8
    w.save([ent(9, 2)], None)
    w.close()
    rp = replay(tmp_path)
    assert (rp.snapshot_index, rp.snapshot_term, rp.entries) == (8, 2, [ent(9, 2)])


def test_marker_beyond_the_log(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path)
    w.save(ents(1, 3), None)
    w.save(ents(21, 22, 5), None, snapshot_marker=(20, 4))  # one write: marker, entries
    w.close()
    rp = replay(tmp_path)
    assert (rp.snapshot_index, rp.entries) == (20, ents(21, 22, 5))


def test_save_validates_its_input(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path)
    w.save(ents(1, 5), None)
    w.mark_snapshot(3, 1)
    with pytest.raises(ValueError, match="entries start at 7"):
        w.save([ent(7)], None)
    with pytest.raises(ValueError, match="entries start at 3"):
        w.save([ent(3)], None)
    with pytest.raises(ValueError, match="contiguous"):
        w.save([ent(6), ent(8)], None)
    with pytest.raises(ValueError, match="before the current"):
        w.mark_snapshot(2, 1)
    with pytest.raises(ValueError):
        w.release_to(4)  # beyond the marker
    w.close()
    with pytest.raises(WALError, match="closed"):
        w.save([ent(6)], None)


def test_restart_and_continue(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path)
    w.save(ents(1, 5), HardState(1, 1, 0))
    w.close()
    w, rp = reopen(tmp_path)
    assert rp.entries == ents(1, 5) and w.last_index == 5 and w.hard_state == HardState(1, 1, 0)
    w.save(ents(6, 7), HardState(1, 1, 7))
    w.close()
    assert replay(tmp_path) == Replayed(HardState(1, 1, 7), 0, 0, ents(1, 7))
    assert len(segments(tmp_path)) == 1


# -- segments --------------------------------------------------------------------


def test_rollover_names_and_headers(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path, segment_bytes=300)
    for i in range(1, 31):
        w.save([ent(i, 1, b"d" * 20)], HardState(1, 0, i - 1))
    w.close()
    segs = segments(tmp_path)
    assert len(segs) >= 5
    seqs = [int(p.name[:16], 16) for p in segs]
    assert seqs == list(range(len(segs)))
    firsts = [int(p.name[17:33], 16) for p in segs]
    assert firsts[0] == 1 and firsts == sorted(firsts)
    for p in segs[:-1]:  # each segment overflows by at most one save
        assert 300 <= p.stat().st_size < 300 + 100
    rp = replay(tmp_path)
    assert rp.entries == [ent(i, 1, b"d" * 20) for i in range(1, 31)]
    assert rp.hard_state == HardState(1, 0, 29)


def test_release_to_deletes_covered_segments(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path, segment_bytes=200)
    for i in range(1, 41):
        w.save([ent(i)], HardState(1, 0, i))
    w.mark_snapshot(25, 1)  # (may itself start a new segment)
    before = segments(tmp_path)
    removed = w.release_to(25)
    after = segments(tmp_path)
    assert removed and [Path(p) for p in removed] == before[: len(removed)]
    assert after == before[len(removed) :]
    assert [Path(p) for p in w.segment_paths()] == after
    # the oldest survivor still holds an entry above 25
    w.close()
    rp = replay(tmp_path)
    assert rp.entries == ents(26, 40)
    assert rp.hard_state == HardState(1, 0, 40)
    assert (rp.snapshot_index, rp.snapshot_term) == (25, 1)


def test_release_everything_but_the_current_segment(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path, segment_bytes=150)
    for i in range(1, 21):
        w.save([ent(i)], HardState(2, 1, i))
    w.mark_snapshot(20, 1)
    w.release_to(20)
    assert len(segments(tmp_path)) == 1  # the current one is never deleted
    w.save([], HardState(3, 0, 20))
    w.close()
    assert replay(tmp_path) == Replayed(HardState(3, 0, 20), 20, 1, [])
    # with an old hard state only in the header of the surviving segment
    w, _ = reopen(tmp_path, segment_bytes=150)
    for i in range(21, 40):
        w.save([ent(i)], None)
    w.mark_snapshot(39, 1)
    w.release_to(39)
    w.close()
    assert replay(tmp_path) == Replayed(HardState(3, 0, 20), 39, 1, [])


def test_release_keeps_segments_with_later_entries(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path, segment_bytes=200)
    for i in range(1, 21):
        w.save([ent(i)], None)
    w.save(ents(3, 4, 2), None)  # index 3 rewritten in the newest segment
    w.mark_snapshot(2, 1)
    assert w.release_to(2) == []  # segment 0 holds entries above 2
    w.close()
    assert replay(tmp_path).entries == ents(3, 4, 2)


# -- recovery ----------------------------------------------------------------------


def _build(d: Path, n: int = 6) -> list[int]:
    """n single-entry saves; returns the segment size after each save."""
    w, _ = reopen(d)
    sizes = []
    for i in range(1, n + 1):
        w.save([ent(i, 1, bytes(range(i, i + 40)))], None)
        sizes.append(os.path.getsize(segments(d)[-1]))
    w.close()
    return sizes


def test_torn_last_record_at_every_offset(tmp_path: Path) -> None:
    d = tmp_path / "w"
    sizes = _build(d)
    seg = segments(d)[-1]
    full = seg.read_bytes()
    start, end = sizes[-2], sizes[-1]
    for cut in range(start, end + 1):
        seg.write_bytes(full[:cut])
        with capture_logs() as logs:
            w, rp = reopen(d)
        torn = start < cut < end
        want = 5 if cut < end else 6
        assert [e.index for e in rp.entries] == list(range(1, want + 1)), cut
        warnings = [x for x in logs if x["event"] == "wal_truncating_torn_tail"]
        if torn:
            assert warnings and warnings[0]["path"] == str(seg), cut
            assert warnings[0]["offset"] == start and warnings[0]["log_level"] == "warning"
            assert seg.stat().st_size == start
        else:
            assert not warnings
        # the WAL goes on appending cleanly after the cut
        w.save([ent(want + 1, 2)], None)
        w.close()
        assert replay(d).entries[-1] == ent(want + 1, 2)


@pytest.mark.parametrize("zeros", [1, 8, 9, 100, 5000])
def test_trailing_zeros_are_truncated(tmp_path: Path, zeros: int) -> None:
    sizes = _build(tmp_path)
    seg = segments(tmp_path)[-1]
    with seg.open("ab") as f:
        f.write(b"\x00" * zeros)
    with capture_logs() as logs:
        rp = replay(tmp_path)
    assert len(rp.entries) == 6
    assert [x["offset"] for x in logs if x["event"] == "wal_truncating_torn_tail"] == [sizes[-1]]
    assert seg.stat().st_size == sizes[-1]


def test_bad_checksum_in_the_final_record_is_a_torn_tail(tmp_path: Path) -> None:
    sizes = _build(tmp_path)
    seg = segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[sizes[-1] - 3] ^= 0xFF
    seg.write_bytes(bytes(data) + b"\x00" * 10)  # garbage then zeros: still a torn write
    with capture_logs() as logs:
        rp = replay(tmp_path)
    assert len(rp.entries) == 5 and logs[0]["offset"] == sizes[-2]


def test_flipped_byte_mid_last_segment_is_corruption(tmp_path: Path) -> None:
    sizes = _build(tmp_path)
    seg = segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[sizes[2] + 20] ^= 0x01  # in the payload of entry 4, followed by entries 5 and 6
    seg.write_bytes(bytes(data))
    with pytest.raises(WALCorruptError) as ei:
        replay(tmp_path)
    err = ei.value
    assert err.path == str(seg) and err.offset == sizes[2]
    assert f"checksum mismatch in {seg} at offset {sizes[2]}: stored 0x" in str(err)
    assert seg.read_bytes() == bytes(data)  # nothing was truncated


def test_zeros_followed_by_data_is_corruption(tmp_path: Path) -> None:
    sizes = _build(tmp_path)
    seg = segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[sizes[1] : sizes[3]] = bytes(sizes[3] - sizes[1])
    seg.write_bytes(bytes(data))
    with pytest.raises(WALCorruptError) as ei:
        replay(tmp_path)
    assert ei.value.offset == sizes[1]


def test_flipped_byte_in_older_segment_is_corruption(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path, segment_bytes=200)
    for i in range(1, 21):
        w.save([ent(i)], HardState(1, 0, i))
    w.close()
    segs = segments(tmp_path)
    older = segs[1]
    data = bytearray(older.read_bytes())
    data[-2] ^= 0x40  # the final record of a non-last segment: no torn-tail excuse
    older.write_bytes(bytes(data))
    with pytest.raises(WALCorruptError, match="checksum mismatch") as ei:
        replay(tmp_path)
    assert ei.value.path == str(older)
    assert ei.value.offset == len(data) - 33  # where that final (hard state) record starts
    assert f"{older} at offset {len(data) - 33}" in str(ei.value)


def test_truncated_older_segment_is_corruption(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path, segment_bytes=200)
    for i in range(1, 21):
        w.save([ent(i)], None)
    w.close()
    older = segments(tmp_path)[0]
    size = older.stat().st_size
    os.truncate(older, size - 5)
    with pytest.raises(WALCorruptError, match="runs past the end") as ei:
        replay(tmp_path)
    assert ei.value.path == str(older)


def test_sequence_gap_is_corruption(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path, segment_bytes=200)
    for i in range(1, 21):
        w.save([ent(i)], None)
    w.close()
    segs = segments(tmp_path)
    segs[1].unlink()
    with pytest.raises(WALCorruptError, match="sequence gap") as ei:
        replay(tmp_path)
    assert ei.value.path == str(segs[2])


def test_missing_oldest_segment_is_detected(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path, segment_bytes=200)
    for i in range(1, 21):
        w.save([ent(i)], None)
    w.close()
    segments(tmp_path)[0].unlink()  # no marker covers it
    with pytest.raises(WALCorruptError, match="log starts at entry"):
        replay(tmp_path)


def test_foreign_and_misnamed_segments(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path)
    w.save(ents(1, 3), None)
    w.close()
    seg = segments(tmp_path)[0]
    # a segment renamed out of order: the header's sequence number gives it away
    moved = tmp_path / f"{7:016x}-{1:016x}.wal"
    seg.rename(moved)
    with pytest.raises(WALCorruptError, match="sequence 0, the name says 7"):
        replay(tmp_path)
    moved.rename(seg)
    # a foreign file under a valid name
    (tmp_path / f"{1:016x}-{4:016x}.wal").write_bytes(b"hello world, this is not a WAL!")
    with pytest.raises(WALCorruptError) as ei:
        replay(tmp_path)
    assert ei.value.offset == 0 and ei.value.path.endswith("0000000000000001-0000000000000004.wal")
    (tmp_path / f"{1:016x}-{4:016x}.wal").unlink()
    (tmp_path / "junk.wal").write_bytes(b"")
    with pytest.raises(WALCorruptError, match="unexpected segment name"):
        replay(tmp_path)


def test_torn_segment_prologue_removes_the_new_segment(tmp_path: Path) -> None:
    w, _ = reopen(tmp_path, segment_bytes=100)
    w.save(ents(1, 5), HardState(1, 0, 5))
    w.save([ent(6)], None)  # starts segment 1: prologue and entry 6 in one write
    w.close()
    segs = segments(tmp_path)
    assert len(segs) == 2
    full = segs[1].read_bytes()
    for cut in (0, 5, 20, 29, 57, PROLOGUE - 1):
        segs[1].write_bytes(full[:cut])
        with capture_logs() as logs:
            w, rp = reopen(tmp_path, segment_bytes=100)
        assert rp.entries == ents(1, 5) and rp.hard_state == HardState(1, 0, 5)
        assert any(x["event"] == "wal_removing_headless_segment" for x in logs), cut
        assert segments(tmp_path) == segs[:1]
        w.save([ent(6)], None)  # recreates segment 1
        w.close()
        assert segments(tmp_path) == segs
        assert segs[1].read_bytes() == full
    # a complete prologue with a torn entry after it: the segment stays
    segs[1].write_bytes(full[: PROLOGUE + 3])
    w, rp = reopen(tmp_path, segment_bytes=100)
    w.close()
    assert rp.entries == ents(1, 5) and segs[1].stat().st_size == PROLOGUE


# -- fsync discipline ----------------------------------------------------------------


class SyncCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        real_fsync, real_fdatasync = os.fsync, getattr(os, "fdatasync", os.fsync)

        def fsync(fd: int) -> None:
            self.calls.append("fsync")
            real_fsync(fd)

        def fdatasync(fd: int) -> None:
            self.calls.append("fdatasync")
            real_fdatasync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", fdatasync, raising=False)

    def take(self) -> list[str]:
        out, self.calls = self.calls, []
        return out


def test_one_fsync_per_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w, _ = reopen(tmp_path)
    seen: list[float] = []
    w.on_fsync = seen.append
    counter = SyncCounter(monkeypatch)
    w.save(ents(1, 100), HardState(1, 1, 0))  # creates the segment: file + directory
    assert counter.take() == ["fdatasync", "fsync"]
    for i in range(101, 111):
        w.save([ent(i)], HardState(1, 1, i - 1))
        assert counter.take() == ["fdatasync"]
    w.mark_snapshot(50, 1)
    assert counter.take() == ["fdatasync"]
    assert len(seen) == 12 and all(isinstance(s, float) and s >= 0 for s in seen)
    w.close()


def test_one_write_per_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w, _ = reopen(tmp_path)
    writes: list[int] = []
    real = os.write

    def write(fd: int, buf: bytes) -> int:
        writes.append(len(buf))
        return real(fd, buf)

    monkeypatch.setattr(os, "write", write)
    w.save(ents(1, 100), HardState(1, 1, 0), snapshot_marker=(0, 0))
    w.save(ents(101, 200), HardState(1, 1, 100))
    assert len(writes) == 2
    w.close()


def test_sync_false_never_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = SyncCounter(monkeypatch)
    w, _ = reopen(tmp_path, segment_bytes=300)
    for i in range(1, 30):
        w.save([ent(i)], HardState(1, 0, i), sync=False)
    w.mark_snapshot(10, 1, sync=False)
    w.release_to(10, sync=False)
    assert counter.take() == []
    assert len(segments(tmp_path)) > 1
    w.sync()  # everything at once: unsynced older segments, the current one, the directory
    calls = counter.take()
    assert calls.count("fsync") == 1 and calls[-1] == "fsync" and "fdatasync" in calls
    w.sync()
    assert counter.take() == []
    w.close()
    assert replay(tmp_path).entries == ents(11, 29)


def test_rollover_syncs_unsynced_previous_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, _ = reopen(tmp_path, segment_bytes=100)
    w.save(ents(1, 5), None, sync=False)
    counter = SyncCounter(monkeypatch)
    w.save([ent(6)], None)  # new segment: previous file, this file, directory
    assert counter.take() == ["fdatasync", "fdatasync", "fsync"]
    w.close()


def test_io_error_poisons_the_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w, _ = reopen(tmp_path)
    w.save(ents(1, 3), None)
    real = os.write

    def failing(fd: int, buf: bytes) -> int:
        real(fd, buf[: len(buf) // 2])  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(OSError):
        w.save(ents(4, 6), None)
    monkeypatch.setattr(os, "write", real)
    with pytest.raises(WALError, match="unusable"):
        w.save(ents(4, 6), None)
    w.close()
    assert replay(tmp_path).entries == ents(1, 3)  # the partial write was cut off again


# -- a model ---------------------------------------------------------------------------


class Model:
    """The log as the Raft core would hold it."""

    def __init__(self) -> None:
        self.hs = HardState()
        self.snap = (0, 0)
        self.log: list[Entry] = []

    def last(self) -> int:
        return self.log[-1].index if self.log else self.snap[0]

    def term(self, i: int) -> int | None:
        if i == self.snap[0]:
            return self.snap[1]
        for e in self.log:
            if e.index == i:
                return e.term
        return None

    def replayed(self) -> Replayed:
        return Replayed(self.hs, self.snap[0], self.snap[1], list(self.log))


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("save"),
            st.integers(0, 12),  # how far back from last+1 to start
            st.integers(0, 6),  # how many entries
            st.integers(0, 2),  # term bump
            st.booleans(),  # with a hard state
            st.booleans(),  # sync
        ),
        st.tuples(st.just("compact"), st.integers(0, 10)),
        st.tuples(st.just("receive"), st.integers(1, 8), st.integers(0, 3)),
        st.tuples(st.just("release")),
        st.tuples(st.just("reopen")),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, segment_bytes=st.sampled_from([120, 400, 1 << 20]))
def test_random_operations_match_a_model(ops: list[tuple], segment_bytes: int) -> None:
    d = tempfile.mkdtemp(prefix="synod-wal-")
    try:
        m = Model()
        w, rp = WAL.open(d, segment_bytes=segment_bytes)
        term = 1
        for op in ops:
            kind = op[0]
            if kind == "save":
                _, back, n, bump, with_hs, sync = op
                first = max(m.last() + 1 - back, m.snap[0] + 1, m.hs.commit + 1)
                term += bump
                new = [ent(i, term, b"%d/%d" % (i, term)) for i in range(first, first + n)]
                if first > m.last() + 1:
                    new = []  # the commit guard pushed us past the end
                hs = HardState(term, 0, min(m.hs.commit + 1, first - 1)) if with_hs else None
                w.save(new, hs, sync=sync)
                if new:
                    m.log = [e for e in m.log if e.index < first] + new
                if hs is not None:
                    m.hs = hs
            elif kind == "compact":
                idx = min(m.snap[0] + op[1], m.last())
                if idx > m.snap[0]:
                    t = m.term(idx)
                    assert t is not None and w.term(idx) == t
                    w.mark_snapshot(idx, t)
                    m.snap = (idx, t)
                    m.log = [e for e in m.log if e.index > idx]
                    w.release_to(idx)
            elif kind == "receive":
                idx = m.last() + op[1] - 4
                t = term + op[2]
                if idx <= max(m.snap[0], m.hs.commit) or m.term(idx) == t:
                    continue  # the core would not restore this snapshot
                term = t
                w.save([], HardState(t, 0, idx), snapshot_marker=(idx, t))
                m.log, m.snap, m.hs = [], (idx, t), HardState(t, 0, idx)
            elif kind == "release":
                w.release_to(m.snap[0])
            else:
                w.close()
                w, rp = WAL.open(d, segment_bytes=segment_bytes)
                assert rp == m.replayed()
            assert w.last_index == m.last()
        w.close()
        w, rp = WAL.open(d, segment_bytes=segment_bytes)
        w.close()
        assert rp == m.replayed()
    finally:
        shutil.rmtree(d)

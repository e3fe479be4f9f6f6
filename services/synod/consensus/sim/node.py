"""A simulated member: the real RawNode, a disk that survives crashes, a toy state machine."""

from __future__ import annotations

import json
import random
import struct
import zlib
from dataclasses import dataclass, field

from synod.consensus.raft import (
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    RawNode,
    Ready,
    Snapshot,
    SnapshotMeta,
)


def link(prev: int, e: Entry) -> int:
    """One step of a hash chain over (term, type, data): equal chains mean equal prefixes."""
    return zlib.crc32(struct.pack(">QB", e.term, e.type) + e.data, prev)


@dataclass
class Disk:
    """What a member has made durable. Survives crashes; nothing else does."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot = field(default_factory=Snapshot)
    entries: list[Entry] = field(default_factory=list)
    #: a hard state written without fsync (Ready.sync false): a crash may lose it
    unsynced: HardState | None = None

    def crash(self) -> None:
        self.unsynced = None

    def write(self, rd: Ready) -> None:
        if not rd.sync:
            if rd.entries or rd.snapshot is not None:
                raise AssertionError("a Ready with entries or a snapshot must be synced")
            if rd.hard_state is not None:
                self.unsynced = rd.hard_state
            return
        # An fsync makes everything written before it durable too.
        if self.unsynced is not None:
            self.hard_state, self.unsynced = self.unsynced, None
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            keep = first - self.snapshot.meta.index - 1
            del self.entries[max(keep, 0) :]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, snap: Snapshot) -> None:
        drop = snap.meta.index - self.snapshot.meta.index
        del self.entries[: max(drop, 0)]
        self.snapshot = snap


class StateMachine:
    """A key-value map fed by entries `req_id:key:value`; tracks a chain over what it applied."""

    def __init__(self, snapshot: Snapshot):
        self.applied = snapshot.meta.index
        self.chain = 0
        self.kv: dict[str, str] = {}
        if snapshot.data:
            d = json.loads(snapshot.data)
            self.chain, self.kv = d["chain"], d["kv"]

    def apply(self, e: Entry) -> int | None:
        """Apply one entry; returns the request id it carried, if any."""
        if e.index != self.applied + 1:
            raise AssertionError(f"apply gap: {e.index} after {self.applied}")
        self.applied = e.index
        self.chain = link(self.chain, e)
        if e.type != EntryType.NORMAL or not e.data:
            return None
        req, key, value = e.data.decode().split(":", 2)
        self.kv[key] = value
        return int(req)

    def to_bytes(self) -> bytes:
        return json.dumps({"chain": self.chain, "kv": self.kv}, sort_keys=True).encode()


class SimNode:
    def __init__(
        self,
        node_id: int,
        conf: ConfState,
        seed: int,
        election_tick: int,
        max_size_per_msg: int,
        max_inflight_msgs: int,
        lazy_commit: bool = False,
        campaign_on_leader_loss: bool = False,
        batch_forwards: bool = False,
        catchup_entries: int = 0,
    ):
        self.id = node_id
        self.disk = Disk(snapshot=Snapshot(SnapshotMeta(0, 0, conf)))
        self.seed = seed
        self.election_tick = election_tick
        self.max_size_per_msg = max_size_per_msg
        self.max_inflight_msgs = max_inflight_msgs
        self.lazy_commit = lazy_commit
        self.campaign_on_leader_loss = campaign_on_leader_loss
        self.batch_forwards = batch_forwards
        self.catchup_entries = catchup_entries
        #: a flush_commit is scheduled for this incarnation
        self.flush_pending = False
        self.incarnation = 0
        #: the nemesis asked for a crash right after the next persist, before sending
        self.crash_after_persist = False
        #: the highest commit index whose entries the checker has seen from this member
        self.checked_commit = 0
        self.raw: RawNode | None = None
        self.sm: StateMachine | None = None
        #: hash chain over the entries on disk, per index (for the Log Matching check)
        self.disk_chain: dict[int, int] = {}
        self.start()

    @property
    def alive(self) -> bool:
        return self.raw is not None

    def start(self) -> None:
        self.incarnation += 1
        d = self.disk
        rng = random.Random(self.seed * 1_000_003 + self.id * 7919 + self.incarnation)
        config = Config(
            self.id,
            rng,
            election_tick=self.election_tick,
            max_size_per_msg=self.max_size_per_msg,
            max_inflight_msgs=self.max_inflight_msgs,
            lazy_commit=self.lazy_commit,
            campaign_on_leader_loss=self.campaign_on_leader_loss,
            batch_forwards=self.batch_forwards,
        )
        self.flush_pending = False
        self.raw = RawNode(config, d.hard_state, d.snapshot, d.entries, d.snapshot.meta.index)
        self.sm = StateMachine(d.snapshot)

    def crash(self) -> None:
        """Lose everything not on disk."""
        self.disk.crash()
        self.raw = None
        self.sm = None

    def take_snapshot(self) -> Snapshot | None:
        """Compact the log up to what the state machine has applied."""
        assert self.raw is not None and self.sm is not None
        idx = self.sm.applied
        log = self.raw.raft.log
        if idx <= log.snapshot.meta.index:
            return None
        term = log.term(idx)
        assert term is not None
        snap = Snapshot(
            SnapshotMeta(idx, term, self.raw.raft.conf_state_at(idx)), self.sm.to_bytes()
        )
        self.disk.compact(snap)
        self.raw.compact(snap, keep=self.catchup_entries)
        return snap

"""The replicated state: what committed log entries are applied to.

It holds the MVCC key-value store and the member registry, and is the only
place that turns log entries into changes. Every member applies the same
entries in the same order and so holds the same state; `snapshot_data` and
`restore` move that state as a whole.

Results: applying an entry proposed by this member yields (request id,
response or error) so the node can answer the waiting client.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from synod.consensus.mvcc import MvccError, MvccStore
from synod.consensus.raft import ConfChangeType, Entry, EntryType, Snapshot, confchange
from synod.consensus.v1 import internal_pb2
from synod.etcd.mvccpb import kv_pb2

log = structlog.get_logger("synod.state")

_SNAP_MAGIC = b"SYNODST1"
_SNAP_HEADER = struct.Struct(">8sII")  # magic, crc32 of the rest, members json length


@dataclass
class MemberInfo:
    id: int
    name: str = ""
    peer_urls: list[str] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)
    is_learner: bool = False


class SnapshotFormatError(ValueError):
    """A state snapshot that cannot be decoded (with the offset where it went wrong)."""


class ConsensusState:
    def __init__(self, initial_members: dict[int, MemberInfo]):
        self.store = MvccStore()
        self.members: dict[int, MemberInfo] = dict(initial_members)
        #: the Raft term of the entry being applied (for response headers)
        self.term = 0
        #: called with every batch of watch events a write produced
        self.on_events: list[Callable[[list[kv_pb2.Event]], None]] = []
        #: called when membership changes (added, removed, promoted, published)
        self.on_members_changed: list[Callable[[], None]] = []
        self._size, self._size_rev, self._size_at = 0, -1, 0.0

    # -- applying ------------------------------------------------------------------

    def apply(self, entry: Entry, term: int) -> tuple[int, Any] | None:
        self.term = term
        if entry.type == EntryType.CONF_CHANGE:
            self._apply_conf_change(entry)
            return None
        if not entry.data:
            return None  # a leader's no-op
        req = internal_pb2.InternalRequest.FromString(entry.data)
        op = req.WhichOneof("op")
        try:
            result: Any = self._apply_op(op, req)
        except MvccError as e:
            result = e
        return (req.id, result) if req.id else None

    def _apply_op(self, op: str | None, req: internal_pb2.InternalRequest) -> Any:
        store = self.store
        resp: Any
        events: list[kv_pb2.Event]
        if op == "put":
            resp, events = store.apply_put(req.put)
        elif op == "delete_range":
            resp, events = store.apply_delete_range(req.delete_range)
        elif op == "txn":
            resp, events = store.apply_txn(req.txn)
        elif op == "compaction":
            resp = store.apply_compaction(req.compaction)
            events = []
        elif op == "publish":
            self._apply_publish(req.publish)
            return None
        else:
            log.error("unknown_entry_op", op=op)
            return None
        # The revision as of this write, not of whenever the client is answered.
        resp.header.revision = store.revision
        resp.header.raft_term = self.term
        if events:
            for fn in self.on_events:
                fn(events)
        return resp

    def _apply_publish(self, p: internal_pb2.PublishMember) -> None:
        m = self.members.get(p.member_id)
        if m is None:
            return  # removed meanwhile
        m.name = p.name
        m.client_urls = list(p.client_urls)
        for fn in self.on_members_changed:
            fn()

    def _apply_conf_change(self, entry: Entry) -> None:
        cc, _ = confchange.decode(entry.data)
        if cc.type == ConfChangeType.REMOVE:
            self.members.pop(cc.node_id, None)
        else:
            ctx = internal_pb2.MemberContext.FromString(cc.context) if cc.context else None
            m = self.members.get(cc.node_id) or MemberInfo(cc.node_id)
            if ctx is not None:
                m.name = ctx.name or m.name
                m.peer_urls = list(ctx.peer_urls) or m.peer_urls
                m.client_urls = list(ctx.client_urls) or m.client_urls
            m.is_learner = cc.type == ConfChangeType.ADD_LEARNER
            self.members[cc.node_id] = m
        for fn in self.on_members_changed:
            fn()

    def db_size(self) -> int:
        """Bytes of a snapshot of the state, recomputed at most every few seconds."""
        now = time.monotonic()
        rev = self.store.revision
        if rev != self._size_rev and now - self._size_at > 5.0:
            self._size, self._size_rev, self._size_at = len(self.snapshot_data()), rev, now
        return self._size

    # -- snapshots -------------------------------------------------------------------

    def snapshot_data(self) -> bytes:
        members = json.dumps(
            [m.__dict__ for m in sorted(self.members.values(), key=lambda m: m.id)],
            separators=(",", ":"),
        ).encode()
        body = members + self.store.to_bytes()
        return _SNAP_HEADER.pack(_SNAP_MAGIC, zlib.crc32(body), len(members)) + body

    def restore(self, snapshot: Snapshot) -> None:
        data = snapshot.data
        if not data:
            return  # the empty bootstrap snapshot
        if len(data) < _SNAP_HEADER.size:
            raise SnapshotFormatError(f"state snapshot truncated at offset {len(data)}")
        magic, crc, mlen = _SNAP_HEADER.unpack_from(data)
        if magic != _SNAP_MAGIC:
            raise SnapshotFormatError(f"state snapshot has bad magic {magic!r} at offset 0")
        body = memoryview(data)[_SNAP_HEADER.size :]
        if zlib.crc32(body) != crc:
            raise SnapshotFormatError("state snapshot checksum mismatch at offset 8")
        members = json.loads(bytes(body[:mlen]))
        self.members = {m["id"]: MemberInfo(**m) for m in members}
        self.store = MvccStore.from_bytes(bytes(body[mlen:]))
        for fn in self.on_members_changed:
            fn()

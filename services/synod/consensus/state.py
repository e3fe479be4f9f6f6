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

from synod.consensus.leases import Lease, LeaseTable
from synod.consensus.mvcc import LeaseNotFoundError, MvccError, MvccStore
from synod.consensus.raft import ConfChangeType, Entry, EntryType, Snapshot, confchange
from synod.consensus.v1 import internal_pb2
from synod.etcd.etcdserverpb import rpc_pb2
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


class ApplyError(MvccError):
    grpc_message = "etcdserver: could not apply the request"
    grpc_code = "INTERNAL"

    def __init__(self, message: str):
        super().__init__(message)
        self.grpc_message = message


class LeaseExistsError(MvccError):
    message = "etcdserver: lease already exists"
    grpc_message = "etcdserver: lease already exists"
    grpc_code = "FAILED_PRECONDITION"


class MemberNotFoundError(MvccError):
    message = "etcdserver: member not found"
    grpc_message = "etcdserver: member not found"
    grpc_code = "NOT_FOUND"


class SnapshotFormatError(ValueError):
    """A state snapshot that cannot be decoded (with the offset where it went wrong)."""


class ConsensusState:
    def __init__(self, initial_members: dict[int, MemberInfo], min_lease_ttl: int = 1):
        self.leases = LeaseTable()
        self.store = MvccStore(lease_exists=self._lease_exists)
        self.members: dict[int, MemberInfo] = dict(initial_members)
        self.min_lease_ttl = min_lease_ttl
        #: the Raft term of the entry being applied (for response headers)
        self.term = 0
        #: called with every batch of watch events a write produced
        self.on_events: list[Callable[[list[kv_pb2.Event]], None]] = []
        #: called when membership changes (added, removed, promoted, published)
        self.on_members_changed: list[Callable[[], None]] = []
        #: called when a lease is granted / revoked (the leader's expiry clock)
        self.on_lease_granted: list[Callable[[Lease], None]] = []
        self.on_lease_revoked: list[Callable[[int], None]] = []
        #: called after a snapshot replaced the whole state
        self.on_restored: list[Callable[[], None]] = []
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
        except Exception as e:  # noqa: BLE001
            # Every member applies the same entry and would fail the same way:
            # answer that request with an error rather than stop every member.
            log.error("apply_failed", index=entry.index, op=op, error=repr(e))
            result = ApplyError(f"etcdserver: could not apply the request: {e}")
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
        elif op == "member_update":
            self._apply_member_update(req.member_update)
            return rpc_pb2.MemberUpdateResponse()
        elif op == "lease_grant":
            return self._apply_lease_grant(req.lease_grant)
        elif op == "lease_revoke":
            resp, events = self._apply_lease_revoke(req.lease_revoke)
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

    def _lease_exists(self, lease_id: int) -> bool:
        return lease_id in self.leases

    def _apply_lease_grant(self, req: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        if req.ID in self.leases:
            raise LeaseExistsError()
        lease = self.leases.grant(req.ID, max(req.TTL, self.min_lease_ttl))
        for fn in self.on_lease_granted:
            fn(lease)
        resp = rpc_pb2.LeaseGrantResponse(ID=lease.id, TTL=lease.ttl)
        resp.header.revision = self.store.revision
        resp.header.raft_term = self.term
        return resp

    def _apply_lease_revoke(
        self, req: rpc_pb2.LeaseRevokeRequest
    ) -> tuple[rpc_pb2.LeaseRevokeResponse, list[kv_pb2.Event]]:
        if self.leases.revoke(req.ID) is None:
            raise LeaseNotFoundError()
        events: list[kv_pb2.Event] = []
        keys = sorted(self.store.keys_for_lease(req.ID))
        if keys:
            # Every attached key goes in one revision, like one transaction.
            txn = rpc_pb2.TxnRequest(
                success=[
                    rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k))
                    for k in keys
                ]
            )
            _, events = self.store.apply_txn(txn)
        for fn in self.on_lease_revoked:
            fn(req.ID)
        return rpc_pb2.LeaseRevokeResponse(), events

    def _apply_publish(self, p: internal_pb2.PublishMember) -> None:
        m = self.members.get(p.member_id)
        if m is None:
            return  # removed meanwhile
        m.name = p.name
        m.client_urls = list(p.client_urls)
        for fn in self.on_members_changed:
            fn()

    def _apply_member_update(self, u: internal_pb2.MemberUpdate) -> None:
        m = self.members.get(u.member_id)
        if m is None:
            raise MemberNotFoundError()
        m.peer_urls = list(u.peer_urls)
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
        meta = json.dumps(
            {
                "members": [m.__dict__ for m in sorted(self.members.values(), key=lambda m: m.id)],
                "leases": self.leases.to_json(),
            },
            separators=(",", ":"),
        ).encode()
        body = meta + self.store.to_bytes()
        return _SNAP_HEADER.pack(_SNAP_MAGIC, zlib.crc32(body), len(meta)) + body

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
        meta = json.loads(bytes(body[:mlen]))
        self.members = {m["id"]: MemberInfo(**m) for m in meta["members"]}
        self.leases = LeaseTable.from_json(meta["leases"])
        self.store = MvccStore.from_bytes(bytes(body[mlen:]), lease_exists=self._lease_exists)
        for fn in self.on_members_changed:
            fn()
        for fn in self.on_restored:
            fn()

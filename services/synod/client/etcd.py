"""Internal asyncio client for the etcd v3 gRPC API.

Used by Synod's lock and router services to talk to Synod's consensus service,
and works unchanged against a real etcd cluster (it only uses the v3 API).

Threading: asyncio-only. An `EtcdClient` must be created, used and closed on
one event loop; it is not thread-safe. Concurrent use from many tasks on that
loop is fine.

Endpoints and failover: the client keeps a *current endpoint*; on UNAVAILABLE
or a failed connect it moves to the next endpoint in the list. Every call has a
deadline (`timeout=` per call, default from the constructor) covering all its
retries.

Retries (jittered exponential backoff, at most `retry_budget` retries, within
the deadline) happen only on UNAVAILABLE and only for idempotent calls:
Range (`get`), read-only Txn, LeaseTimeToLive, LeaseLeases, LeaseGrant with an
explicit ID, `keep_alive_once`, MemberList, Status; plus the background
keepalive re-sends and watch re-creation, which retry until stopped.

Non-idempotent calls - Put, DeleteRange, Txn containing writes, LeaseGrant
without an ID, LeaseRevoke, Compact - are never retried: they raise
`errors.Unavailable` (check `.maybe_applied`) or `errors.DeadlineExceeded`,
and the caller decides (e.g. re-read, or retry guarded by a txn compare). The
client has already moved to the next endpoint, so an immediate retry goes
elsewhere.

Typical use::

    async with EtcdClient(["127.0.0.1:2379", "127.0.0.1:22379"]) as c:
        await c.put("k", "v")
        lease_id, ttl = await c.grant(10)
        async with c.keep_alive(lease_id, on_lost=...) as keeper:
            async with c.watch("prefix/", prefix=True) as w:
                async for resp in w:
                    ...
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from synod.etcd.etcdserverpb import rpc_pb2

from ._transport import EOF, Backoff, Stubs, Transport
from .errors import (
    Cancelled,
    Compacted,
    DeadlineExceeded,
    EtcdError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from .kv import (
    KeyLike,
    SortSpec,
    compare_create_revision,
    compare_lease,
    compare_mod_revision,
    compare_value,
    compare_version,
    delete_request,
    is_read_only_txn,
    key_range,
    op_delete,
    op_get,
    op_put,
    op_txn,
    prefix_end,
    put_request,
    range_request,
    txn_request,
)
from .leases import KeepAliveManager, LeaseKeeper, LostCallback
from .watch import Watcher, WatchManager

__all__ = [
    "Cancelled",
    "Compacted",
    "DeadlineExceeded",
    "EtcdClient",
    "EtcdError",
    "FailedPrecondition",
    "InvalidArgument",
    "LeaseKeeper",
    "NotFound",
    "Unavailable",
    "Watcher",
    "compare_create_revision",
    "compare_lease",
    "compare_mod_revision",
    "compare_value",
    "compare_version",
    "op_delete",
    "op_get",
    "op_put",
    "op_txn",
    "prefix_end",
]


class EtcdClient:
    """Asyncio etcd v3 client with endpoint failover; see the module docstring.

    Args:
        endpoints: "host:port" (or "http://host:port") of cluster members.
        timeout: default deadline (seconds) per call, including retries.
        connect_timeout: how long to wait for a connection to an endpoint
            before treating it as unavailable and failing over.
        retry_budget: max retries of one idempotent call (default:
            ``max(3, 2 * len(endpoints))``).
        credentials: gRPC channel credentials for TLS (insecure if None).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        retry_budget: int | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        backoff: Backoff | None = None,
    ) -> None:
        n = 1 if isinstance(endpoints, str) else len(endpoints)
        self._t = Transport(
            endpoints,
            timeout=timeout,
            connect_timeout=min(connect_timeout, timeout),
            retry_budget=max(3, 2 * n) if retry_budget is None else retry_budget,
            credentials=credentials,
            channel_options=channel_options,
            backoff=backoff,
        )
        self._leases = KeepAliveManager(self._t, self.keep_alive_once, self.revoke)
        self._watches = WatchManager(self._t)

    # --- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop keepalives and watches (watchers end with `Cancelled`), close channels."""
        if self._t.closed:
            return
        await self._watches.close()
        await self._leases.close()
        await self._t.close()

    @property
    def endpoints(self) -> list[str]:
        return list(self._t.endpoints)

    @property
    def current_endpoint(self) -> str:
        """The endpoint new calls and streams go to."""
        return self._t.current_endpoint

    @property
    def watch_streams_opened(self) -> int:
        return self._watches.streams_opened

    @property
    def keepalive_streams_opened(self) -> int:
        return self._leases.streams_opened

    # --- KV ------------------------------------------------------------------------

    async def get(
        self,
        key: KeyLike,
        *,
        range_end: KeyLike = b"",
        prefix: bool = False,
        revision: int = 0,
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        limit: int = 0,
        sort: SortSpec | None = None,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
        timeout: float | None = None,
    ) -> rpc_pb2.RangeResponse:
        """Range. `sort` is (target, order), e.g. ("mod", "descend"). Retried."""
        req = range_request(
            key,
            range_end=range_end,
            prefix=prefix,
            revision=revision,
            serializable=serializable,
            keys_only=keys_only,
            count_only=count_only,
            limit=limit,
            sort=sort,
            min_mod_revision=min_mod_revision,
            max_mod_revision=max_mod_revision,
            min_create_revision=min_create_revision,
            max_create_revision=max_create_revision,
        )

        async def attempt(s: Stubs, t: float) -> rpc_pb2.RangeResponse:
            resp: rpc_pb2.RangeResponse = await s.kv.Range(req, timeout=t)
            return resp

        return await self._t.call("Range", attempt, idempotent=True, timeout=timeout)

    async def put(
        self,
        key: KeyLike,
        value: KeyLike,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
        timeout: float | None = None,
    ) -> rpc_pb2.PutResponse:
        """Put. Not retried: raises Unavailable/DeadlineExceeded on failure."""
        req = put_request(
            key,
            value,
            lease=lease,
            prev_kv=prev_kv,
            ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )

        async def attempt(s: Stubs, t: float) -> rpc_pb2.PutResponse:
            resp: rpc_pb2.PutResponse = await s.kv.Put(req, timeout=t)
            return resp

        return await self._t.call("Put", attempt, idempotent=False, timeout=timeout)

    async def delete(
        self,
        key: KeyLike,
        *,
        range_end: KeyLike = b"",
        prefix: bool = False,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> rpc_pb2.DeleteRangeResponse:
        """DeleteRange. Not retried."""
        req = delete_request(key, range_end=range_end, prefix=prefix, prev_kv=prev_kv)

        async def attempt(s: Stubs, t: float) -> rpc_pb2.DeleteRangeResponse:
            resp: rpc_pb2.DeleteRangeResponse = await s.kv.DeleteRange(req, timeout=t)
            return resp

        return await self._t.call("DeleteRange", attempt, idempotent=False, timeout=timeout)

    async def txn(
        self,
        compare: Iterable[rpc_pb2.Compare] = (),
        success: Iterable[rpc_pb2.RequestOp] = (),
        failure: Iterable[rpc_pb2.RequestOp] = (),
        *,
        timeout: float | None = None,
    ) -> rpc_pb2.TxnResponse:
        """Txn built from `compare_*` and `op_*` helpers. Retried only if read-only."""
        req = txn_request(compare, success, failure)

        async def attempt(s: Stubs, t: float) -> rpc_pb2.TxnResponse:
            resp: rpc_pb2.TxnResponse = await s.kv.Txn(req, timeout=t)
            return resp

        return await self._t.call("Txn", attempt, idempotent=is_read_only_txn(req), timeout=timeout)

    async def compact(
        self, revision: int, *, physical: bool = False, timeout: float | None = None
    ) -> rpc_pb2.CompactionResponse:
        """Compact history up to `revision`. Not retried (a repeat raises Compacted)."""
        req = rpc_pb2.CompactionRequest(revision=revision, physical=physical)

        async def attempt(s: Stubs, t: float) -> rpc_pb2.CompactionResponse:
            resp: rpc_pb2.CompactionResponse = await s.kv.Compact(req, timeout=t)
            return resp

        return await self._t.call("Compact", attempt, idempotent=False, timeout=timeout)

    # --- leases ----------------------------------------------------------------------

    async def grant(
        self, ttl: int, id: int = 0, *, timeout: float | None = None
    ) -> tuple[int, int]:
        """Grant a lease; returns (id, ttl).

        Without `id` the server picks one: not retried (a retry could leak a
        lease). With an explicit `id` the call is retried; if a retry finds the
        lease already exists (our first attempt was applied), the existing
        lease's granted TTL is returned.
        """
        req = rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=id)
        attempts = 0

        async def attempt(s: Stubs, t: float) -> tuple[int, int]:
            nonlocal attempts
            attempts += 1
            try:
                resp = await s.lease.LeaseGrant(req, timeout=t)
            except grpc.aio.AioRpcError as e:
                if (
                    attempts > 1
                    and e.code() == grpc.StatusCode.FAILED_PRECONDITION
                    and "exists" in (e.details() or "")
                ):
                    ttl_resp = await s.lease.LeaseTimeToLive(
                        rpc_pb2.LeaseTimeToLiveRequest(ID=id), timeout=t
                    )
                    if ttl_resp.TTL > 0:
                        return id, ttl_resp.grantedTTL
                raise
            if resp.error:
                raise EtcdError(f"LeaseGrant: {resp.error}", endpoint=s.endpoint)
            return resp.ID, resp.TTL

        return await self._t.call("LeaseGrant", attempt, idempotent=id != 0, timeout=timeout)

    async def revoke(self, id: int, *, timeout: float | None = None) -> rpc_pb2.LeaseRevokeResponse:
        """Revoke a lease (deletes its keys). NotFound if it does not exist. Not retried."""
        req = rpc_pb2.LeaseRevokeRequest(ID=id)

        async def attempt(s: Stubs, t: float) -> rpc_pb2.LeaseRevokeResponse:
            resp: rpc_pb2.LeaseRevokeResponse = await s.lease.LeaseRevoke(req, timeout=t)
            return resp

        return await self._t.call("LeaseRevoke", attempt, idempotent=False, timeout=timeout)

    async def time_to_live(
        self, id: int, *, keys: bool = False, timeout: float | None = None
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        """LeaseTimeToLive. As in etcd, an unknown lease gives TTL == -1 (no error)."""
        req = rpc_pb2.LeaseTimeToLiveRequest(ID=id, keys=keys)

        async def attempt(s: Stubs, t: float) -> rpc_pb2.LeaseTimeToLiveResponse:
            resp: rpc_pb2.LeaseTimeToLiveResponse = await s.lease.LeaseTimeToLive(req, timeout=t)
            return resp

        return await self._t.call("LeaseTimeToLive", attempt, idempotent=True, timeout=timeout)

    async def leases(self, *, timeout: float | None = None) -> list[int]:
        """IDs of all leases."""

        async def attempt(s: Stubs, t: float) -> rpc_pb2.LeaseLeasesResponse:
            resp: rpc_pb2.LeaseLeasesResponse = await s.lease.LeaseLeases(
                rpc_pb2.LeaseLeasesRequest(), timeout=t
            )
            return resp

        resp = await self._t.call("LeaseLeases", attempt, idempotent=True, timeout=timeout)
        return [ls.ID for ls in resp.leases]

    async def keep_alive_once(
        self, id: int, *, timeout: float | None = None
    ) -> rpc_pb2.LeaseKeepAliveResponse:
        """Renew a lease once (on a short-lived stream). NotFound if it is gone. Retried."""

        async def attempt(s: Stubs, t: float) -> rpc_pb2.LeaseKeepAliveResponse:
            call = s.lease.LeaseKeepAlive(timeout=t)
            try:
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=id))
                resp = await call.read()
            finally:
                call.cancel()
            if resp is EOF:
                raise Unavailable("keepalive stream closed by server", endpoint=s.endpoint)
            assert isinstance(resp, rpc_pb2.LeaseKeepAliveResponse)
            if resp.TTL <= 0:
                raise NotFound(f"lease {id:#x} not found", endpoint=s.endpoint)
            return resp

        return await self._t.call("LeaseKeepAlive", attempt, idempotent=True, timeout=timeout)

    def keep_alive(self, lease_id: int, *, on_lost: LostCallback | None = None) -> LeaseKeeper:
        """A `LeaseKeeper` for `lease_id`; start it with ``async with`` or ``await``.

        All keepers of a client share one LeaseKeepAlive stream. `on_lost(keeper)`
        (sync, or returning an awaitable) runs once if the lease is lost;
        ``await keeper.wait_lost()`` works too. One keeper per lease at a time.
        """
        return LeaseKeeper(self._leases, lease_id, on_lost)

    # --- watches ---------------------------------------------------------------------

    def watch(
        self,
        key: KeyLike,
        *,
        range_end: KeyLike = b"",
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        filters: Iterable[rpc_pb2.WatchCreateRequest.FilterType | str] = (),
        progress_notify: bool = False,
        fragment: bool = False,
    ) -> Watcher:
        """Start a watch (shared stream); returns a `Watcher` (async iterator of responses).

        `filters` takes "NOPUT"/"NODELETE" (or the enum). Use ``async with`` to
        wait for creation and guarantee cancellation. Must be called on the
        client's event loop.
        """
        k, end = key_range(key, range_end, prefix)
        req = rpc_pb2.WatchCreateRequest(
            key=k,
            range_end=end,
            start_revision=start_revision,
            prev_kv=prev_kv,
            filters=list(filters),
            progress_notify=progress_notify,
            fragment=fragment,
        )
        w = Watcher(self._watches, req)
        self._watches.add(w)
        return w

    # --- cluster / maintenance ----------------------------------------------------------

    async def member_list(self, *, timeout: float | None = None) -> rpc_pb2.MemberListResponse:
        async def attempt(s: Stubs, t: float) -> rpc_pb2.MemberListResponse:
            resp: rpc_pb2.MemberListResponse = await s.cluster.MemberList(
                rpc_pb2.MemberListRequest(), timeout=t
            )
            return resp

        return await self._t.call("MemberList", attempt, idempotent=True, timeout=timeout)

    async def status(
        self, endpoint: str | None = None, *, timeout: float | None = None
    ) -> rpc_pb2.StatusResponse:
        """Status of `endpoint` (no failover), or of whichever member answers."""

        async def attempt(s: Stubs, t: float) -> rpc_pb2.StatusResponse:
            resp: rpc_pb2.StatusResponse = await s.maintenance.Status(
                rpc_pb2.StatusRequest(), timeout=t
            )
            return resp

        return await self._t.call(
            "Status", attempt, idempotent=True, timeout=timeout, endpoint=endpoint
        )

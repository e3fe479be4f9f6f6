"""Watches: many watchers multiplexed over one shared Watch bidi stream.

Threading: asyncio-only, one event loop.

`WatchManager` owns at most one Watch stream per client. Creates are sent one
at a time (like etcd's clientv3) and matched, in order, with the server's
``created`` responses, which carry the server-assigned watch_id; events are
routed by watch_id. Every `Watcher` remembers the next revision it needs (last
delivered revision + 1, or the creation revision + 1 before any event). When
the stream breaks (member died, no leader, failover), the manager moves to the
next endpoint and re-creates every watcher from that revision, and drops any
replayed event older than it, so no event is lost or duplicated. A server-side
cancel with ``compact_revision`` set ends the watcher with `Compacted`.
Fragmented responses (``fragment=True`` in the create request) are reassembled
into one `WatchResponse` before delivery.

Responses are buffered per watcher without bound (as in clientv3); consume
them promptly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from synod.etcd.etcdserverpb import rpc_pb2
from synod.etcd.mvccpb import kv_pb2

from ._transport import EOF, REQUIRE_LEADER, Transport
from .errors import (
    Cancelled,
    Compacted,
    EtcdError,
    InvalidArgument,
    Unavailable,
    map_rpc_error,
)

log = logging.getLogger("synod.client.etcd")

_FATAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)

_Item = rpc_pb2.WatchResponse | BaseException | None


class Watcher:
    """An async iterator of `WatchResponse` batches for one watch.

    ``async with client.watch(...) as w`` waits until the server has created
    the watch (so later writes are guaranteed to be seen) and cancels it on
    exit. ``async for resp in w`` yields responses with at least one event
    (plus progress notifications if requested). Iteration ends after `aclose`;
    it raises `Compacted` / `Cancelled` / another `EtcdError` if the server
    ends the watch. Cancelling the task blocked in ``__anext__`` closes the
    watch (sends WatchCancelRequest); use `get(timeout=...)` to wait with a
    timeout without closing it.
    """

    def __init__(self, manager: WatchManager, request: rpc_pb2.WatchCreateRequest) -> None:
        self._mgr = manager
        self._request = request
        #: server-assigned id on the current stream (None while (re)creating)
        self.watch_id: int | None = None
        #: the revision the watch resumes from (0: "now", before creation)
        self.next_revision: int = request.start_revision
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._created = asyncio.Event()
        self._create_error: BaseException | None = None
        self._fragments: list[rpc_pb2.WatchResponse] = []
        self.closed = False
        self._finished = False
        #: responses the server sent in fragments and the client reassembled
        self.reassembled = 0

    @property
    def key(self) -> bytes:
        return self._request.key

    @property
    def range_end(self) -> bytes:
        return self._request.range_end

    def create_request(self) -> rpc_pb2.WatchRequest:
        req = rpc_pb2.WatchCreateRequest()
        req.CopyFrom(self._request)
        req.start_revision = self.next_revision
        return rpc_pb2.WatchRequest(create_request=req)

    async def created(self, timeout: float | None = None) -> None:
        """Wait until the server confirmed the watch; raise if it refused it."""
        async with asyncio.timeout(timeout):
            await self._created.wait()
        if self._create_error is not None:
            raise self._create_error

    async def __aenter__(self) -> Watcher:
        try:
            await self.created()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> rpc_pb2.WatchResponse:
        if self._finished:
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            self._close_nowait()
            raise
        return self._unwrap(item)

    async def get(self, timeout: float | None = None) -> rpc_pb2.WatchResponse:
        """Next response; TimeoutError after `timeout` (the watch stays open).

        Raises StopAsyncIteration when the watch has ended.
        """
        if self._finished:
            raise StopAsyncIteration
        async with asyncio.timeout(timeout):
            item = await self._queue.get()
        return self._unwrap(item)

    async def events(self) -> AsyncIterator[kv_pb2.Event]:
        """Flatten the batches into individual events."""
        async for resp in self:
            for ev in resp.events:
                yield ev

    def _unwrap(self, item: _Item) -> rpc_pb2.WatchResponse:
        if item is None:
            self._finished = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        return item

    def _close_nowait(self) -> asyncio.Task[None] | None:
        if self.closed:
            return None
        self.closed = True
        self._queue.put_nowait(None)
        if not self._created.is_set():
            self._create_error = Cancelled("watch closed before it was created")
            self._created.set()
        return self._mgr.cancel(self)

    async def aclose(self) -> None:
        """Cancel the watch (sends WatchCancelRequest); iteration then ends."""
        task = self._close_nowait()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def __repr__(self) -> str:
        return (
            f"<Watcher key={self.key!r} range_end={self.range_end!r} id={self.watch_id} "
            f"next_rev={self.next_revision}{' closed' if self.closed else ''}>"
        )


class _Stream:
    def __init__(self, call: Any, endpoint: str) -> None:
        self.call = call
        self.endpoint = endpoint
        self.by_id: dict[int, Watcher] = {}
        self.create_queue: deque[Watcher] = deque()
        self.creating: Watcher | None = None
        self.write_lock = asyncio.Lock()
        self.healthy = False


class WatchManager:
    """One shared Watch stream per client; see module docstring."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport
        self._watchers: list[Watcher] = []
        self._stream: _Stream | None = None
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        #: number of Watch streams opened (observability/tests)
        self.streams_opened = 0

    @property
    def active_watchers(self) -> int:
        return len(self._watchers)

    def add(self, w: Watcher) -> None:
        if self._t.closed:
            raise Cancelled("client is closed")
        self._watchers.append(w)
        s = self._stream
        if s is not None:
            s.create_queue.append(w)
            self._kick_create(s)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="etcd-watch")

    def cancel(self, w: Watcher) -> asyncio.Task[None] | None:
        """Forget `w`; if the server knows it, send a WatchCancelRequest."""
        if w in self._watchers:
            self._watchers.remove(w)
        task = None
        s = self._stream
        if s is not None:
            if w in s.create_queue:
                s.create_queue.remove(w)
            if w.watch_id is not None and s.by_id.get(w.watch_id) is w:
                del s.by_id[w.watch_id]
                task = self._write(s, rpc_pb2.WatchRequest(cancel_request={"watch_id": w.watch_id}))
            # If w is s.creating, the cancel is sent when its created response arrives.
        if not self._watchers and self._task is not None:
            # Nothing left to watch: drop the stream (which cancels any
            # remaining server-side watches) once pending writes are flushed.
            t, self._task = self._task, None
            if task is not None:
                task.add_done_callback(lambda _: t.cancel())
            else:
                t.cancel()
        return task

    async def close(self) -> None:
        task, self._task = self._task, None
        watchers, self._watchers = self._watchers, []
        for w in watchers:
            self._finish(w, Cancelled("client closed"))
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for t in list(self._writes):
            t.cancel()

    # --- internals ---------------------------------------------------------------

    def _write(self, s: _Stream, req: rpc_pb2.WatchRequest) -> asyncio.Task[None]:
        async def write() -> None:
            async with s.write_lock:
                if self._stream is not s or s.call.done():
                    return
                try:
                    await s.call.write(req)
                except Exception as e:  # the reader sees the broken stream
                    log.debug("watch stream write failed: %r", e)

        t = asyncio.get_running_loop().create_task(write())
        self._writes.add(t)
        t.add_done_callback(self._writes.discard)
        return t

    def _kick_create(self, s: _Stream) -> None:
        if s.creating is not None:
            return
        while s.create_queue:
            w = s.create_queue.popleft()
            if w.closed or w._finished:
                continue
            s.creating = w
            self._write(s, w.create_request())
            return

    def _finish(self, w: Watcher, err: BaseException | None) -> None:
        if w in self._watchers:
            self._watchers.remove(w)
        if not w._created.is_set():
            w._create_error = err or Cancelled("watch ended")
            w._created.set()
        if not w.closed:
            w.closed = True
            w._queue.put_nowait(err)

    def _cancel_error(self, resp: rpc_pb2.WatchResponse, endpoint: str) -> EtcdError:
        if resp.compact_revision:
            return Compacted(
                f"watch revision compacted (compact_revision={resp.compact_revision})",
                resp.compact_revision,
                endpoint=endpoint,
            )
        reason = resp.cancel_reason or "watch cancelled by server"
        if resp.watch_id == -1:
            return InvalidArgument(f"watch create rejected: {reason}", endpoint=endpoint)
        return Cancelled(reason, endpoint=endpoint)

    def _dispatch(self, s: _Stream, resp: rpc_pb2.WatchResponse) -> None:
        if resp.created:
            s.healthy = True
            w = s.creating
            s.creating = None
            if w is not None:
                if resp.canceled or resp.watch_id == -1:
                    self._finish(w, self._cancel_error(resp, s.endpoint))
                else:
                    w.watch_id = resp.watch_id
                    s.by_id[resp.watch_id] = w
                    if w.next_revision == 0:
                        w.next_revision = resp.header.revision + 1
                    w._created.set()
                    if w.closed:
                        s.by_id.pop(resp.watch_id, None)
                        self._write(
                            s, rpc_pb2.WatchRequest(cancel_request={"watch_id": resp.watch_id})
                        )
            self._kick_create(s)
            if not resp.events:
                return
        w = s.by_id.get(resp.watch_id)
        if w is None:
            return
        if resp.canceled:
            del s.by_id[resp.watch_id]
            self._finish(w, self._cancel_error(resp, s.endpoint))
            return
        if resp.fragment:
            w._fragments.append(resp)
            return
        if w._fragments:
            whole = rpc_pb2.WatchResponse()
            whole.CopyFrom(resp)
            del whole.events[:]
            for part in (*w._fragments, resp):
                whole.events.extend(part.events)
            w._fragments = []
            w.reassembled += 1
            resp = whole
        self._deliver(w, resp)

    def _deliver(self, w: Watcher, resp: rpc_pb2.WatchResponse) -> None:
        if resp.events:
            fresh = [ev for ev in resp.events if ev.kv.mod_revision >= w.next_revision]
            if not fresh:
                return  # replay of already delivered events after a resume
            if len(fresh) != len(resp.events):
                trimmed = rpc_pb2.WatchResponse()
                trimmed.CopyFrom(resp)
                del trimmed.events[:]
                trimmed.events.extend(fresh)
                resp = trimmed
            w.next_revision = fresh[-1].kv.mod_revision + 1
        else:
            # Progress notification for this watch: everything up to
            # header.revision has been delivered.
            w.next_revision = max(w.next_revision, resp.header.revision + 1)
            if not w._request.progress_notify:
                return
        if not w.closed:
            w._queue.put_nowait(resp)

    async def _run(self) -> None:
        attempt = 0
        while self._watchers and not self._t.closed:
            stubs = self._t.stubs()
            s: _Stream | None = None
            err: BaseException
            try:
                await self._t.ensure_connected(stubs, self._t.connect_timeout)
                call = stubs.watch.Watch(metadata=REQUIRE_LEADER)
                self.streams_opened += 1
                s = _Stream(call, stubs.endpoint)
                for w in self._watchers:
                    w.watch_id = None
                    w._fragments = []
                    s.create_queue.append(w)
                self._stream = s
                self._kick_create(s)
                while True:
                    resp = await call.read()
                    if resp is EOF:
                        raise Unavailable("watch stream closed by server", endpoint=s.endpoint)
                    self._dispatch(s, resp)
            except grpc.aio.AioRpcError as e:
                err = map_rpc_error(e, endpoint=stubs.endpoint, operation="Watch")
            except EtcdError as e:
                err = e
            finally:
                if s is not None:
                    if self._stream is s:
                        self._stream = None
                    s.call.cancel()
            if isinstance(err, EtcdError) and err.code in _FATAL_CODES:
                for w in list(self._watchers):
                    self._finish(w, err)
                return
            log.info("watch stream on %s broke: %s", stubs.endpoint, err)
            self._t.mark_failed(stubs.endpoint)
            if s is not None and s.healthy:
                attempt = 0
            await asyncio.sleep(self._t.backoff.delay(attempt))
            attempt += 1

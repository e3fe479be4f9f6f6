"""etcd's watch machinery for one consensus member: the hub and its streams.

`WatchHub` receives every applied write's events (`notify`, wired to
`ConsensusState.on_events`) and hands them to the watchers whose key range
matches. A `WatchStream` is one client `Watch` RPC: it owns any number of
watchers and one bounded queue of outgoing `WatchResponse`s.

Everything runs on the member's event loop; `notify` is called synchronously
from the apply path and never awaits or blocks.

Synced and unsynced watchers (etcd's watchableStore)
----------------------------------------------------
A *synced* watcher has been given every matching event up to the store's
current revision and sits in the hub's index, so `notify` queues the next
events for it directly. An *unsynced* watcher is behind: it was created with
a start revision in the past, or its stream's queue was full when an event
arrived (its live events are dropped, never queued), or a snapshot moved the
store past it. Unsynced watchers are out of the index and catch up from the
store's history (`events_since(next_rev)`) whenever their stream's queue has
room. Catching up and going back into the index happen in one synchronous
step, with no await in between, so no write can fall between history and live
delivery: each event reaches a watcher exactly once, in revision order.

`next_rev` is the lowest revision a watcher has not been given yet (for a
synced watcher only a lower bound: a future start revision). If that revision
has been compacted when the watcher tries to catch up, the watcher is
cancelled with `compact_revision` set, as etcd does.

Indexes and cost of `notify`
----------------------------
Exact-key watchers: dict key -> set of watchers (one lookup per event).
Range watchers: dict (key, range_end) -> set of watchers, so many watchers on
one prefix cost one comparison per event. Live responses are queued already
encoded: the header and each event list (with / without prev_kv) are
serialized once per write, and a watcher's response is their concatenation
with its own pre-encoded watch_id field, so a write fanning out to N watchers
makes N byte strings, not N messages (the Watch handler's serializer accepts
bytes; see `serialize`). A write nobody watches costs one dict check.

Responses
---------
- create: `created=True` with the watch id (in request order); a duplicate
  client-chosen id or an empty range gives `created=True, canceled=True,
  watch_id=-1` and a `cancel_reason` (etcd 3.5).
- events: one response per write for live events (the events of one revision
  are never split, except by `fragment`); catch-up batches whole revisions.
  `header.revision` is the revision of the response's last event.
- cancel: `canceled=True` (unknown ids are ignored, as etcd does).
- progress request: one response with `watch_id=-1` and the current revision
  once every watcher of the stream is synced (deferred until then; etcd 3.6).
- progress_notify: every `progress_interval` seconds, each synced watcher that
  asked for it and got no events meanwhile gets an empty response.
- fragment: a response above `max_response_bytes` with more than one event is
  sent as several, all but the last with `fragment=True` (etcd's sendFragments).
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from synod.consensus.mvcc import CompactedError
from synod.etcd.etcdserverpb import rpc_pb2
from synod.etcd.mvccpb import kv_pb2

if TYPE_CHECKING:
    from synod.consensus.mvcc import MvccStore
    from synod.consensus.state import ConsensusState

__all__ = [
    "DEFAULT_MAX_PENDING",
    "DEFAULT_PROGRESS_INTERVAL",
    "PROGRESS_INTERVAL_ENV",
    "WatchHub",
    "WatchStream",
    "Watcher",
]

WatchResponse = rpc_pb2.WatchResponse
_DELETE = kv_pb2.Event.DELETE
_PUT = kv_pb2.Event.PUT
_NOPUT = rpc_pb2.WatchCreateRequest.NOPUT
_NODELETE = rpc_pb2.WatchCreateRequest.NODELETE

#: etcd's progress notification interval (clientv3 WithProgressNotify: 10 minutes)
DEFAULT_PROGRESS_INTERVAL = 600.0
PROGRESS_INTERVAL_ENV = "SYNOD_WATCH_PROGRESS_INTERVAL"
#: queued events per stream (a response without events counts as one) beyond which
#: live events are no longer queued: the watcher goes unsynced and catches up later
DEFAULT_MAX_PENDING = 4096
#: events per catch-up response (rounded up to a whole revision)
CATCH_UP_BATCH = 1000
#: the watch id of stream-level responses (etcd's clientv3.InvalidWatchID)
INVALID_WATCH_ID = -1
#: the largest message etcd sends unfragmented by default (--max-request-bytes)
DEFAULT_MAX_RESPONSE_BYTES = int(1.5 * 1024 * 1024)

COMPACTED_REASON = "etcdserver: mvcc: required revision has been compacted"
FELL_BEHIND_REASON = (
    "etcdserver: watcher fell too far behind; the revisions it still needed have been compacted"
)
DUPLICATE_ID_REASON = "mvcc: duplicate watch ID provided on the WatchStream"
EMPTY_RANGE_REASON = "mvcc: watcher range is empty"

_Header = Callable[[int | None], rpc_pb2.ResponseHeader]
#: a WatchResponse, or its encoding (live events are queued pre-serialized)
WireResponse = rpc_pb2.WatchResponse | bytes


def serialize(resp: WireResponse) -> bytes:
    """gRPC response serializer for the Watch method: accepts either form."""
    return resp if type(resp) is bytes else resp.SerializeToString()  # type: ignore[union-attr]


def decode(resp: WireResponse) -> rpc_pb2.WatchResponse:
    """A WatchResponse message from either form (for in-process readers and tests)."""
    return WatchResponse.FromString(resp) if type(resp) is bytes else resp  # type: ignore[return-value]


class Watcher:
    """One watch on a stream (mutable bookkeeping only; the hub and stream drive it)."""

    __slots__ = (
        "backlog",
        "backlog_end",
        "backlog_pos",
        "fell_behind",
        "fragment",
        "id",
        "id_blob",
        "key",
        "nodelete",
        "noput",
        "prev_kv",
        "progress_notify",
        "range_end",
        "sent",
        "stream",
        "synced",
        "next_rev",
    )

    def __init__(
        self,
        stream: WatchStream,
        wid: int,
        key: bytes,
        range_end: bytes,
        req: rpc_pb2.WatchCreateRequest,
    ) -> None:
        self.stream = stream
        self.id = wid
        #: the encoded watch_id field, for responses built as bytes
        self.id_blob = WatchResponse(watch_id=wid).SerializeToString()
        #: normalized selection: empty range_end = just `key`; b"\0" = every key >= key
        self.key = key
        self.range_end = range_end
        filters = req.filters
        self.noput = _NOPUT in filters
        self.nodelete = _NODELETE in filters
        self.prev_kv = req.prev_kv
        self.fragment = req.fragment
        self.progress_notify = req.progress_notify
        self.next_rev = 0
        self.synced = False
        #: unsynced because the queue was full (not because of a past start revision)
        self.fell_behind = False
        #: events were queued since the last progress tick
        self.sent = False
        #: catch-up state: history read once, handed out in batches
        self.backlog: list[kv_pb2.Event] | None = None
        self.backlog_pos = 0
        self.backlog_end = 0

    def __repr__(self) -> str:
        return (
            f"Watcher(id={self.id}, key={self.key!r}, range_end={self.range_end!r}, "
            f"next_rev={self.next_rev}, synced={self.synced})"
        )


class WatchHub:
    """All watchers of one member; `notify` is the apply path's entry point."""

    def __init__(
        self,
        state: ConsensusState,
        header: _Header,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_pending: int = DEFAULT_MAX_PENDING,
        progress_interval: float | None = None,
    ) -> None:
        self.state = state
        self.header = header
        self.max_response_bytes = max_response_bytes
        self.max_pending = max_pending
        if progress_interval is None:
            env = os.environ.get(PROGRESS_INTERVAL_ENV)
            progress_interval = float(env) if env else DEFAULT_PROGRESS_INTERVAL
        if progress_interval <= 0:
            raise ValueError(f"watch progress interval must be positive, got {progress_interval}")
        self.progress_interval = progress_interval
        self._store: MvccStore = state.store
        self._exact: dict[bytes, set[Watcher]] = {}
        self._ranges: dict[tuple[bytes, bytes], set[Watcher]] = {}
        self._streams: set[WatchStream] = set()

    # -- streams -------------------------------------------------------------------

    def open_stream(self) -> WatchStream:
        s = WatchStream(self)
        self._streams.add(s)
        return s

    def close(self, reason: str = "etcdserver: server stopped") -> None:
        """End every stream (their RPCs fail with `reason`, so clients move elsewhere)."""
        for s in list(self._streams):
            s.fail(reason)

    def watcher_count(self) -> int:
        return sum(len(s.watchers) for s in self._streams)

    # -- the index -----------------------------------------------------------------

    def _index(self, w: Watcher) -> None:
        w.synced = True
        if not w.range_end:
            ws = self._exact.get(w.key)
            if ws is None:
                self._exact[w.key] = {w}
            else:
                ws.add(w)
        else:
            rk = (w.key, w.range_end)
            ws = self._ranges.get(rk)
            if ws is None:
                self._ranges[rk] = {w}
            else:
                ws.add(w)

    def _unindex(self, w: Watcher) -> None:
        if not w.synced:
            return
        w.synced = False
        if not w.range_end:
            ws = self._exact.get(w.key)
            if ws is not None:
                ws.discard(w)
                if not ws:
                    del self._exact[w.key]
        else:
            rk = (w.key, w.range_end)
            ws = self._ranges.get(rk)
            if ws is not None:
                ws.discard(w)
                if not ws:
                    del self._ranges[rk]

    # -- the apply path --------------------------------------------------------------

    def notify(self, events: list[kv_pb2.Event]) -> None:
        """One write's events (all of one revision), right after it was applied."""
        exact = self._exact
        ranges = self._ranges
        if not (exact or ranges) or not events:
            return
        if len(events) == 1:
            k = events[0].kv.key
            groups: list[set[Watcher]] = []
            ws = exact.get(k)
            if ws:
                groups.append(ws)
            for (lo, end), ws in ranges.items():
                if k >= lo and (end == b"\x00" or k < end):
                    groups.append(ws)
            if groups:
                self._deliver([(ws, events) for ws in groups], events[0].kv.mod_revision)
            return
        # Several keys in one revision: each index set (all watchers of one key or of
        # one range) gets one list of its events, shared by its watchers.
        matched: dict[int, tuple[set[Watcher], list[kv_pb2.Event]]] = {}
        for ev in events:
            k = ev.kv.key
            ws = exact.get(k)
            if ws:
                got = matched.get(id(ws))
                if got is None:
                    matched[id(ws)] = (ws, [ev])
                else:
                    got[1].append(ev)
            for (lo, end), ws in ranges.items():
                if k >= lo and (end == b"\x00" or k < end):
                    got = matched.get(id(ws))
                    if got is None:
                        matched[id(ws)] = (ws, [ev])
                    else:
                        got[1].append(ev)
        if matched:
            self._deliver(list(matched.values()), events[0].kv.mod_revision)

    def _deliver(self, groups: list[tuple[set[Watcher], list[kv_pb2.Event]]], rev: int) -> None:
        """Queue one response per watcher, as wire bytes.

        The header and each distinct event list (with or without prev_kv) are
        serialized once per write; a watcher's response is then the concatenation
        of the header, its own watch_id field (serialized when it was created) and
        the events: protobuf fields may come in any order, and concatenated
        encodings of one message type decode as one message.
        """
        header = b""
        #: (id of the event list, prev_kv) -> (the list, kept alive; its encoding)
        blobs: dict[tuple[int, bool], tuple[list[kv_pb2.Event], bytes]] = {}
        for ws, group_evs in groups:
            for w in list(ws):
                if rev < w.next_rev:
                    continue  # a start revision in the future
                evs = group_evs
                if w.noput or w.nodelete:
                    evs = _filtered(w, evs)
                    if not evs:
                        continue
                s = w.stream
                if s.pending >= s.max_pending:
                    # Too far behind: drop its live events, catch up from history later.
                    self._unindex(w)
                    w.next_rev = rev
                    w.fell_behind = True
                    s.unsynced[w] = None
                    continue
                if not header:
                    hb = self.header(rev).SerializeToString()
                    header = b"\x0a" + _varint(len(hb)) + hb  # WatchResponse.header
                bkey = (id(evs), w.prev_kv)
                got = blobs.get(bkey)
                if got is None:
                    got = blobs[bkey] = (evs, _events_blob(evs, w.prev_kv))
                w.sent = True
                s._push(header + w.id_blob + got[1], len(evs), w.fragment)

    # -- snapshots -------------------------------------------------------------------

    def on_restore(self) -> None:
        """The store was replaced by a snapshot: continue every watcher from the new one."""
        old_rev = self._store.revision
        store = self._store = self.state.store
        for s in list(self._streams):
            s._restored(store, old_rev)


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _events_blob(evs: list[kv_pb2.Event], prev_kv: bool) -> bytes:
    """The encoding of `WatchResponse.events` (field 11) holding `evs`.

    With `prev_kv` each Event is serialized as is; without it, the Event is
    re-encoded from its `type` (field 1, omitted for PUT) and `kv` (field 2) alone.
    """
    parts = []
    for ev in evs:
        if prev_kv:
            eb = ev.SerializeToString()
        else:
            kb = ev.kv.SerializeToString()
            eb = (b"\x08\x01\x12" if ev.type == _DELETE else b"\x12") + _varint(len(kb)) + kb
        parts.append(b"\x5a" + _varint(len(eb)) + eb)
    return b"".join(parts)


def _filtered(w: Watcher, evs: list[kv_pb2.Event]) -> list[kv_pb2.Event]:
    if w.noput and w.nodelete:
        return []
    drop = _PUT if w.noput else _DELETE
    return [e for e in evs if e.type != drop]


def _fragments(resp: rpc_pb2.WatchResponse, limit: int) -> list[rpc_pb2.WatchResponse]:
    """etcd's sendFragments: pieces below `limit` bytes (at least one event each)."""
    out: list[rpc_pb2.WatchResponse] = []

    def piece() -> rpc_pb2.WatchResponse:
        p = WatchResponse()
        p.header.CopyFrom(resp.header)
        p.watch_id = resp.watch_id
        p.fragment = True
        out.append(p)
        return p

    cur = piece()
    base = cur.ByteSize()
    size = base
    for ev in resp.events:
        n = ev.ByteSize()
        entry = 1 + _varint_len(n) + n
        if len(cur.events) and size + entry >= limit:
            cur = piece()
            size = base
        cur.events.append(ev)
        size += entry
    cur.fragment = False
    return out


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


class WatchStream:
    """One client stream: its watchers and its bounded queue of responses."""

    def __init__(self, hub: WatchHub) -> None:
        self.hub = hub
        self.watchers: dict[int, Watcher] = {}
        #: watchers catching up from history, in the order they fell behind
        self.unsynced: dict[Watcher, None] = {}
        self.max_pending = hub.max_pending
        #: queued events (a response without events counts one)
        self.pending = 0
        #: (response, or its encoding; events in it; fragment it if large)
        self._queue: deque[tuple[WireResponse, int, bool]] = deque()
        self._next_id = 0
        self._wakeup = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._progress_deferred = False
        self._progress_timer: asyncio.TimerHandle | None = None
        self.closed = False
        #: why the stream was ended by the server (None: still open, or closed by the client)
        self.error: str | None = None

    # -- requests ------------------------------------------------------------------

    def create(self, req: rpc_pb2.WatchCreateRequest) -> int:
        """Handle a WatchCreateRequest; returns the watch id (-1 when refused)."""
        if self.closed:
            return INVALID_WATCH_ID
        hub = self.hub
        store = hub.state.store
        key = req.key or b"\x00"  # etcd: "\0" is the smallest key
        end = req.range_end
        if end and end != b"\x00" and key >= end:
            self._push_created(INVALID_WATCH_ID, EMPTY_RANGE_REASON)
            return INVALID_WATCH_ID
        wid = req.watch_id
        if wid:
            if wid in self.watchers:
                self._push_created(INVALID_WATCH_ID, DUPLICATE_ID_REASON)
                return INVALID_WATCH_ID
        else:
            while self._next_id in self.watchers:
                self._next_id += 1
            wid = self._next_id
            self._next_id += 1
        w = Watcher(self, wid, key, end, req)
        self.watchers[wid] = w
        self._push_created(wid, "")
        start = req.start_revision
        cur = store.revision
        if start <= 0 or start > cur:
            w.next_rev = start if start > 0 else cur + 1
            hub._index(w)
        else:
            w.next_rev = start
            self.unsynced[w] = None
            self._catch_up()
        if w.progress_notify:
            self._arm_progress()
        return wid

    def cancel(self, wid: int) -> bool:
        w = self.watchers.pop(wid, None)
        if w is None:
            return False
        self._drop(w)
        resp = WatchResponse()
        resp.header.CopyFrom(self.hub.header(None))
        resp.watch_id = wid
        resp.canceled = True
        self._push(resp, 1, False)
        return True

    def request_progress(self) -> None:
        if self.unsynced:
            self._progress_deferred = True
        else:
            self._push_progress(INVALID_WATCH_ID)

    # -- internals -----------------------------------------------------------------

    def _push(self, resp: WireResponse, n_events: int, fragment: bool) -> None:
        if self.closed:
            return
        self._queue.append((resp, n_events or 1, fragment))
        self.pending += n_events or 1
        self._wakeup.set()
        if len(self._queue) > self.max_pending:
            self._writable.clear()

    def _push_created(self, wid: int, reason: str) -> None:
        resp = WatchResponse()
        resp.header.CopyFrom(self.hub.header(None))
        resp.watch_id = wid
        resp.created = True
        if reason:
            resp.canceled = True
            resp.cancel_reason = reason
        self._push(resp, 1, False)

    def _push_progress(self, wid: int) -> None:
        resp = WatchResponse()
        resp.header.CopyFrom(self.hub.header(None))
        resp.watch_id = wid
        self._push(resp, 1, False)

    def _drop(self, w: Watcher) -> None:
        """Forget `w` everywhere (it is already out of `watchers`)."""
        self.hub._unindex(w)
        self.unsynced.pop(w, None)
        w.backlog = None

    def _cancel_compacted(self, w: Watcher, compact_rev: int) -> None:
        self.watchers.pop(w.id, None)
        self._drop(w)
        resp = WatchResponse()
        resp.header.CopyFrom(self.hub.header(None))
        resp.watch_id = w.id
        resp.canceled = True
        resp.compact_revision = compact_rev
        resp.cancel_reason = FELL_BEHIND_REASON if w.fell_behind else COMPACTED_REASON
        self._push(resp, 1, False)

    def _catch_up(self) -> None:
        """Move unsynced watchers forward from history while the queue has room."""
        if self.unsynced:
            store = self.hub.state.store
            for w in list(self.unsynced):
                if self.pending >= self.max_pending:
                    break
                self._catch_up_one(w, store)
        if self._progress_deferred and not self.unsynced:
            self._progress_deferred = False
            self._push_progress(INVALID_WATCH_ID)

    def _catch_up_one(self, w: Watcher, store: MvccStore) -> None:
        hub = self.hub
        while self.pending < self.max_pending:
            bl = w.backlog
            if bl is None:
                if w.next_rev > store.revision:
                    # Everything up to now is queued: live from the next write on.
                    del self.unsynced[w]
                    w.fell_behind = False
                    hub._index(w)
                    return
                try:
                    bl = store.events_since(w.next_rev, w.key, w.range_end)
                except CompactedError as err:
                    self._cancel_compacted(w, err.compact_revision or store.compact_revision)
                    return
                w.backlog_end = store.revision + 1
                if not bl:
                    w.next_rev = w.backlog_end
                    continue
                w.backlog = bl
                w.backlog_pos = 0
            pos = w.backlog_pos
            n = len(bl)
            stop = min(pos + CATCH_UP_BATCH, n)
            last_rev = bl[stop - 1].kv.mod_revision
            while stop < n and bl[stop].kv.mod_revision == last_rev:
                stop += 1
            chunk = bl[pos:stop]
            if w.noput or w.nodelete:
                chunk = _filtered(w, chunk)
            if chunk:
                if not w.prev_kv:
                    for ev in chunk:  # our own copies (events_since builds fresh ones)
                        ev.ClearField("prev_kv")
                resp = WatchResponse()
                resp.header.CopyFrom(hub.header(last_rev))
                resp.watch_id = w.id
                resp.events.extend(chunk)
                w.sent = True
                self._push(resp, len(chunk), w.fragment)
            if stop >= n:
                w.backlog = None
                w.next_rev = w.backlog_end
            else:
                w.backlog_pos = stop
                w.next_rev = last_rev + 1

    def _restored(self, store: MvccStore, old_rev: int) -> None:
        compact = store.compact_revision
        for w in list(self.watchers.values()):
            w.backlog = None  # read from the old store; reread from the new one
            if w.synced:
                pos = max(w.next_rev, old_rev + 1)
                if pos > store.revision:
                    continue
                self.hub._unindex(w)
                w.next_rev = pos
                self.unsynced[w] = None
            if w.next_rev < compact:
                self._cancel_compacted(w, compact)
        self._catch_up()

    # -- progress notifications ------------------------------------------------------

    def _arm_progress(self) -> None:
        if self._progress_timer is None and not self.closed:
            loop = asyncio.get_running_loop()
            self._progress_timer = loop.call_later(self.hub.progress_interval, self._progress_tick)

    def _progress_tick(self) -> None:
        self._progress_timer = None
        if self.closed:
            return
        wanted = False
        for w in list(self.watchers.values()):
            if not w.progress_notify:
                continue
            wanted = True
            if w.sent:
                w.sent = False
            elif w.synced:
                self._push_progress(w.id)
        if wanted:
            self._arm_progress()

    # -- the sending side ------------------------------------------------------------

    async def responses(self) -> AsyncIterator[WireResponse]:
        """Responses in order until the stream is closed (fragmented where asked).

        Live event responses come already encoded (bytes); everything else as
        messages. `serialize` turns either into wire bytes."""
        q = self._queue
        limit = self.hub.max_response_bytes
        while not self.closed:
            if not q:
                if self.unsynced:
                    self._catch_up()
                if not q:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
            resp, weight, fragment = q.popleft()
            self.pending -= weight
            if self.unsynced and self.pending <= self.max_pending // 2:
                self._catch_up()
            if not self._writable.is_set() and len(q) <= self.max_pending // 2:
                self._writable.set()
            if fragment and weight > 1:
                msg = decode(resp)
                if msg.ByteSize() >= limit:
                    for part in _fragments(msg, limit):
                        yield part
                else:
                    yield resp
            else:
                yield resp

    async def wait_writable(self) -> None:
        """Backpressure for the request side: wait while the queue is far too long."""
        if not self._writable.is_set():
            await self._writable.wait()

    def fail(self, reason: str) -> None:
        """End the stream from the server side (the RPC then fails with `reason`)."""
        self.error = reason
        self.close()

    def close(self) -> None:
        """Remove every watcher of this stream at once (idempotent)."""
        if self.closed:
            return
        self.closed = True
        hub = self.hub
        for w in self.watchers.values():
            hub._unindex(w)
            w.backlog = None
        self.watchers.clear()
        self.unsynced.clear()
        self._queue.clear()
        self.pending = 0
        if self._progress_timer is not None:
            self._progress_timer.cancel()
            self._progress_timer = None
        hub._streams.discard(self)
        self._wakeup.set()
        self._writable.set()

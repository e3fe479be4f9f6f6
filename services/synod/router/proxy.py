"""Forwarding proxy: any method the router does not serve itself goes to a ring member.

A caller sends the method to the router with metadata ``synod-ring`` (ring name) and
``synod-route-key`` (the key as text; or ``synod-route-key-bin`` for raw bytes). The
router picks the key's owner and relays the call's raw messages (it never parses them).

Every call is relayed as a bidirectional stream: on the wire a unary call is a stream of
exactly one message each way, so unary-unary, unary-stream, stream-unary and
stream-stream methods all go through the same handler, and the backend sees the call
it expects. The backend's initial metadata, messages, status code, details and trailing
metadata come back unchanged, plus ``synod-backend: <member id>`` in the trailers.

Bounded loads (``--bounded-load C``): the in-flight forwarded calls of this router
replica are counted per ring member; a member is skipped when taking one more call
would put it above ``ceil(C * (total in flight in the ring + 1) / members)``, and the
next member of the key's preference list is tried (Mirrokni, Thorup, Zadimoghaddam,
"Consistent Hashing with Bounded Loads", 2018). Some member always has room.

Unreachable backends: the call goes to the first of the key's first three members whose
channel is connected (or connects within a second); calls are never resent after
they were sent, so a non-idempotent call cannot run twice. UNAVAILABLE names every
member tried.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import structlog

from synod.router.membership import Directory, MemberRecord, RingSnapshot
from synod.router.metrics import RouterMetrics

log = structlog.get_logger("synod.router")

RING_MD = "synod-ring"
KEY_MD = "synod-route-key"
KEY_BIN_MD = "synod-route-key-bin"
BACKEND_MD = "synod-backend"
# Not relayed to the backend: our routing headers and transport-level ones.
_DROP = frozenset({RING_MD, KEY_MD, KEY_BIN_MD, "user-agent", "te", "content-type"})

TRY_MEMBERS = 3  # members of a key's preference list tried when the first is unreachable
CONNECT_TIMEOUT = 1.0  # seconds to wait for a backend channel to connect before skipping it

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # Reconnect quickly after a backend restarts (the default backoff reaches minutes).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class _Reject(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Proxy(grpc.GenericRpcHandler):
    def __init__(
        self,
        directory: Directory,
        metrics: RouterMetrics,
        *,
        bounded_load: float = 0.0,
        default_timeout: float = 30.0,
        backend_credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.directory = directory
        #: TLS to every backend (--backend-ca-file ...); None: plaintext
        self.backend_credentials = backend_credentials
        self.metrics = metrics
        self.bounded_load = bounded_load
        self.default_timeout = default_timeout
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._inflight: dict[str, dict[str, int]] = {}  # ring -> member id -> calls

    # --- grpc.GenericRpcHandler --------------------------------------------------------

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        handler: Callable[..., AsyncIterator[bytes]] = functools.partial(self._forward, method)
        # No (de)serializers: the handler sees and produces raw message bytes.
        return grpc.stream_stream_rpc_method_handler(handler)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for ch in channels.values():
            await ch.close(None)

    # --- choosing the backend ------------------------------------------------------------

    def _route(self, metadata: Any) -> tuple[RingSnapshot, bytes, list[tuple[str, Any]]]:
        ring_name: str | None = None
        key: bytes | None = None
        forward: list[tuple[str, Any]] = []
        for k, v in metadata or ():
            if k == RING_MD:
                ring_name = v
            elif k == KEY_MD:
                key = v.encode("utf-8")
            elif k == KEY_BIN_MD:
                key = bytes(v)
            elif k.startswith(":") or k.startswith("grpc-") or k in _DROP:
                continue
            else:
                forward.append((k, v))
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        if not ring_name:
            raise _Reject(invalid, f"missing {RING_MD!r} metadata: which ring routes this call?")
        if key is None:
            raise _Reject(invalid, f"missing {KEY_MD!r} (or {KEY_BIN_MD!r}) metadata")
        if not key:
            raise _Reject(invalid, f"{KEY_MD!r} must not be empty")
        if not self.directory.ready.is_set():
            raise _Reject(grpc.StatusCode.UNAVAILABLE, "router has not loaded the rings yet")
        snap, rev = self.directory.snapshot(ring_name)
        if snap is None:
            raise _Reject(grpc.StatusCode.NOT_FOUND, f"unknown ring {ring_name!r} (revision {rev})")
        if snap.ring is None:
            raise _Reject(
                grpc.StatusCode.UNAVAILABLE, f"ring {ring_name!r} has no members (revision {rev})"
            )
        return snap, key, forward

    def candidates(self, snap: RingSnapshot, key: bytes) -> list[MemberRecord]:
        """Members to try for ``key``, best first: its first ``TRY_MEMBERS`` members in
        preference order, and with bounded loads those with room ahead of those without
        (then further members with room, if none of the first had any)."""
        ring = snap.ring
        assert ring is not None
        n = len(snap.members)
        prefs = ring.lookup_n(key, min(n, TRY_MEMBERS))
        if self.bounded_load:
            loads = self._inflight.get(snap.name, {})
            total = sum(loads.get(m, 0) for m in snap.members)
            capacity = math.ceil(self.bounded_load * (total + 1) / n)

            def has_room(m: str) -> bool:
                return loads.get(m, 0) < capacity

            roomy = [m for m in prefs if has_room(m)]
            if not roomy:  # rarely needed: walk the rest of the ranking
                roomy = [m for m in ring.lookup_n(key, n)[len(prefs) :] if has_room(m)][:1]
            for m in prefs:
                if m not in roomy:
                    self.metrics.bounded_load_skips.labels(snap.name, m).inc()
                else:
                    break
            prefs = roomy + [m for m in prefs if m not in roomy]
        return [snap.members[m] for m in prefs]

    def choose(self, snap: RingSnapshot, key: bytes) -> MemberRecord:
        """The member a call for ``key`` goes to when every member is reachable."""
        return self.candidates(snap, key)[0]

    async def _reachable(self, member: MemberRecord, timeout: float) -> bool:
        """Whether ``member``'s channel is (or within ``timeout`` becomes) connected.

        A call is only ever sent on a connected channel, so skipping a member that is
        not cannot run a call twice; a call that fails after it was sent is not retried.
        """
        if not member.address:
            return False
        ch = self._channel(member.address)
        state = ch.get_state(try_to_connect=True)
        try:
            async with asyncio.timeout(timeout):
                while state != grpc.ChannelConnectivity.READY:
                    if state in (
                        grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                        grpc.ChannelConnectivity.SHUTDOWN,
                    ):
                        return False
                    await ch.wait_for_state_change(state)
                    state = ch.get_state(try_to_connect=True)
        except TimeoutError:
            return False
        return True

    async def _pick(self, snap: RingSnapshot, key: bytes) -> MemberRecord:
        """The first candidate that is reachable; _Reject(UNAVAILABLE) naming all tried."""
        tried: list[str] = []
        for i, member in enumerate(self.candidates(snap, key)):
            if await self._reachable(member, CONNECT_TIMEOUT):
                if i:
                    self.metrics.forward_retries.labels(snap.name, member.id).inc()
                return member
            tried.append(f"{member.id!r} at {member.address or '(unknown address)'}")
        raise _Reject(
            grpc.StatusCode.UNAVAILABLE,
            f"no reachable backend for this key in ring {snap.name!r}: tried {', '.join(tried)}",
        )

    def _channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            if self.backend_credentials is not None:
                ch = grpc.aio.secure_channel(
                    address, self.backend_credentials, options=_CHANNEL_OPTIONS
                )
            else:
                ch = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
            self._channels[address] = ch
        return ch

    # --- relaying ------------------------------------------------------------------------

    async def _forward(
        self, method: str, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        try:
            snap, key, forward_md = self._route(context.invocation_metadata())
        except _Reject as r:
            self.metrics.forward_rejected.labels(r.code.name).inc()
            await context.abort(r.code, r.details)
            return
        try:
            member = await self._pick(snap, key)
        except _Reject as r:
            self.metrics.forward_rejected.labels(r.code.name).inc()
            await context.abort(r.code, r.details)
            return
        self.metrics.lookups.labels(snap.name, "forward").inc()
        remaining = context.time_remaining()
        timeout = remaining if remaining is not None and remaining > 0 else self.default_timeout
        loads = self._inflight.setdefault(snap.name, {})
        loads[member.id] = loads.get(member.id, 0) + 1
        gauge = self.metrics.inflight.labels(snap.name, member.id)
        gauge.inc()
        # Identity (de)serializers: raw bytes both ways.
        multi: Any = self._channel(member.address).stream_stream(method, None, None)
        call = multi(metadata=tuple(forward_md), timeout=timeout)
        pump = asyncio.ensure_future(self._pump(requests, call))
        code = grpc.StatusCode.OK
        details = ""
        trailing: Any = ()
        finished = False
        try:
            try:
                initial = await call.initial_metadata()
                if initial:
                    await context.send_initial_metadata(tuple(initial))
                async for message in call:
                    yield message
                code = await call.code()
                details = await call.details() or ""
                trailing = await call.trailing_metadata() or ()
            except grpc.aio.AioRpcError as e:
                code, details = e.code(), e.details() or ""
                trailing = e.trailing_metadata() or ()
            finished = True
        finally:
            pump.cancel()
            if not finished:
                call.cancel()  # our caller went away: cancel the backend call too
            loads[member.id] -= 1
            if not loads[member.id]:
                del loads[member.id]
            gauge.dec()
        self.metrics.forwarded.labels(snap.name, member.id, code.name).inc()
        if code == grpc.StatusCode.UNAVAILABLE:
            details = f"backend {member.id!r} at {member.address} unavailable: {details}"
        context.set_trailing_metadata((*tuple(trailing), (BACKEND_MD, member.id)))
        if code != grpc.StatusCode.OK:
            context.set_code(code)
            context.set_details(details)

    @staticmethod
    async def _pump(requests: AsyncIterator[bytes], call: Any) -> None:
        try:
            async for message in requests:
                await call.write(message)
            await call.done_writing()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the call ended; its status tells why
            log.debug("forward_pump_stopped", error=repr(e))

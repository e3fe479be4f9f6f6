"""Peer transport: Raft messages between members over gRPC (synod.raft.v1).

Outgoing, each peer has one sender task holding one long-lived `Stream` call.
Messages for a peer queue up while the previous frame is being written and go
out together as one MessageBatch, so a busy leader pays one gRPC frame per
peer per batch, not per message. When a stream breaks, the queued messages are
dropped (Raft retransmits), the core is told the peer is unreachable, and the
sender reconnects with exponential backoff.

Snapshots travel on their own `InstallSnapshot` call in chunks, so a large
snapshot never holds up heartbeats; the core learns how it ended through
`report_snapshot`.

Incoming, the servicer checks that each batch comes from this cluster and
from a member the configuration knows, then hands the messages to the node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import grpc
import structlog

from synod.consensus import peer_codec
from synod.consensus.config import parse_url
from synod.consensus.raft import Message, MessageType
from synod.raft.v1 import raft_pb2, raft_pb2_grpc

log = structlog.get_logger("synod.transport")

#: Raft bounds each append by bytes, but a batch holds many; leave headroom.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect to a restarted peer within a heartbeat or two, not gRPC's default 1-120 s.
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Each channel its own connection: a channel opened after a failure must not
    # share a subchannel still waiting out the failed one's reconnect backoff.
    ("grpc.use_local_subchannel_pool", 1),
]
#: while a peer is unreachable, keep at most this many messages for it
MAX_QUEUED = 4096
#: after a call that failed before anything was written on it, keep the newest few
KEEP_WHILE_DOWN = 256
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0


def grpc_target(url: str) -> str:
    host, port = parse_url(url, "peer url")
    return f"{host}:{port}"


def dial(
    url: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]] = GRPC_OPTIONS,
) -> grpc.aio.Channel:
    """A channel to another member's peer URL: TLS when it is https://, else plaintext.

    `credentials` are this member's peer credentials (--peer-trusted-ca-file to
    verify the other member, --peer-cert-file/--peer-key-file presented as our
    client certificate); without them an https:// peer is verified against the
    system's roots and we present no certificate.
    """
    target = grpc_target(url)
    if url.strip().lower().startswith("https://"):
        creds = credentials if credentials is not None else grpc.ssl_channel_credentials()
        return grpc.aio.secure_channel(target, creds, options=options)
    return grpc.aio.insecure_channel(target, options=options)


class Transport:
    def __init__(
        self,
        cluster_id: int,
        member_id: int,
        deliver: Callable[[Sequence[Message]], None],
        report_snapshot: Callable[[int, bool], None],
        report_unreachable: Callable[[int], None],
        is_member: Callable[[int], bool],
        max_snapshot_bytes: int = 8 * 1024 * 1024 * 1024,
        credentials: Callable[[], grpc.ChannelCredentials | None] | None = None,
    ):
        self.cluster_id = cluster_id
        self.member_id = member_id
        self._deliver = deliver
        self._report_snapshot = report_snapshot
        self._report_unreachable = report_unreachable
        self._is_member = is_member
        self._max_snapshot_bytes = max_snapshot_bytes
        #: asked before each new channel (renewed certificates are picked up)
        self.credentials = credentials or (lambda: None)
        self._peers: dict[int, _PeerSender] = {}
        self._snapshot_tasks: set[asyncio.Task[None]] = set()

    # -- peers -------------------------------------------------------------------

    def set_peers(self, peers: dict[int, list[str]]) -> None:
        """Track exactly these peers (id -> peer URLs), excluding ourselves."""
        for pid in list(self._peers):
            if pid not in peers or self._peers[pid].urls != peers[pid]:
                self._peers.pop(pid).close()
        for pid, urls in peers.items():
            if pid != self.member_id and pid not in self._peers and urls:
                self._peers[pid] = _PeerSender(self, pid, urls)

    async def close(self) -> None:
        for p in self._peers.values():
            p.close()
        tasks = [p.task for p in self._peers.values()] + list(self._snapshot_tasks)
        for t in self._snapshot_tasks:
            t.cancel()
        self._peers.clear()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- sending -------------------------------------------------------------------

    def send(self, msgs: Sequence[Message]) -> None:
        for m in msgs:
            peer = self._peers.get(m.to)
            if peer is None:
                if m.type == MessageType.SNAPSHOT:
                    self._report_snapshot(m.to, False)
                continue
            if m.type == MessageType.SNAPSHOT:
                t = asyncio.create_task(self._send_snapshot(peer, m))
                self._snapshot_tasks.add(t)
                t.add_done_callback(self._snapshot_tasks.discard)
            else:
                peer.enqueue(m)

    async def _send_snapshot(self, peer: _PeerSender, m: Message) -> None:
        assert m.snapshot is not None
        ok = False
        try:
            chunks = peer_codec.snapshot_chunks(m, cluster_id=self.cluster_id)
            stub = raft_pb2_grpc.RaftStub(peer.channel())
            ack = await stub.InstallSnapshot(_aiter(chunks), timeout=600)
            ok = True
            log.info("snapshot_sent", to=f"{m.to:x}", index=m.snapshot.meta.index, bytes=ack.size)
        except grpc.aio.AioRpcError as e:
            log.warning(
                "snapshot_send_failed", to=f"{m.to:x}", code=e.code().name, detail=e.details()
            )
        except asyncio.CancelledError:
            raise
        finally:
            self._report_snapshot(m.to, ok)

    # -- receiving -------------------------------------------------------------------

    def heard_from(self, peer_id: int) -> None:
        """`peer_id` opened a stream to us: if our sender to it is backing off, retry now."""
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.peer_seen.set()

    def check_sender(self, cluster_id: int, sender: int, context: grpc.aio.ServicerContext) -> str:
        """Why a frame must be refused, or '' when it is acceptable."""
        if cluster_id != self.cluster_id:
            return f"cluster id {cluster_id:x} does not match this member's {self.cluster_id:x}"
        if not self._is_member(sender):
            return f"member {sender:x} is not in this cluster's configuration"
        return ""


async def _aiter(chunks: Iterable[raft_pb2.SnapshotChunk]) -> AsyncIterator[raft_pb2.SnapshotChunk]:
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)  # let heartbeats through between chunks


class _StreamEnded(Exception):
    """The peer stream finished while we had nothing to send (its status says why)."""


class _PeerSender:
    """One peer's outgoing stream: a queue, a wake-up event and a task."""

    def __init__(self, transport: Transport, peer_id: int, urls: list[str]):
        self.t = transport
        self.id = peer_id
        self.urls = urls
        self.queue: list[Message] = []
        self.wake = asyncio.Event()
        #: set when the peer opens a stream to us: it is up, so stop backing off
        self.peer_seen = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._closed = False
        self.task = asyncio.create_task(self._run(), name=f"peer-{peer_id:x}")

    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = dial(self.urls[0], self.t.credentials())
        return self._channel

    def enqueue(self, m: Message) -> None:
        q = self.queue
        q.append(m)
        if len(q) > MAX_QUEUED:
            del q[: len(q) - MAX_QUEUED]
        self.wake.set()

    def close(self) -> None:
        self._closed = True
        self.task.cancel()

    async def _run(self) -> None:
        backoff = BACKOFF_MIN
        stub = raft_pb2_grpc.RaftStub(self.channel())
        connected_once = False
        # Say why a peer cannot be reached, once per reason rather than on every
        # retry: a refused TLS handshake shows up here and nowhere else (and at
        # start, "connection refused" comes first while the peer is not up yet).
        unreachable_because = ""
        while not self._closed:
            self.peer_seen.clear()
            call = stub.Stream(wait_for_ready=False)
            # A call that ends while idle (the peer went away) wakes us, so we
            # reconnect now rather than on the next write, which would lose that write:
            # a lost vote request costs a whole election timeout.
            call.add_done_callback(lambda _call: self.wake.set())
            written = False
            try:
                # Nothing is taken off the queue until the call is connected: messages
                # queued while the peer is down wait for it instead of being written
                # into a call that is about to fail.
                await call.wait_for_connection()
                while True:
                    if not self.queue and not call.done():
                        self.wake.clear()
                        await self.wake.wait()
                    if call.done():
                        raise _StreamEnded
                    msgs, self.queue = self.queue, []
                    written = True
                    await call.write(
                        peer_codec.batch_to_proto(self.t.cluster_id, self.t.member_id, msgs)
                    )
                    if not connected_once:
                        connected_once = True
                        unreachable_because = ""
                        log.info("peer_connected", peer=f"{self.id:x}", url=self.urls[0])
                    backoff = BACKOFF_MIN
            except asyncio.CancelledError:
                call.cancel()
                break
            except Exception as e:  # noqa: BLE001 - any failure: drop, report, reconnect
                # A call that failed before the write raises AioRpcError, one that
                # finished meanwhile an InvalidStateError or UsageError.
                if isinstance(e, grpc.aio.AioRpcError):
                    code = e.code().name
                elif isinstance(e, _StreamEnded):
                    code = (await call.code()).name
                else:
                    code = type(e).__name__
                if connected_once:
                    detail = await _call_outcome(call)
                    log.warning("peer_stream_broken", peer=f"{self.id:x}", code=code, detail=detail)
                else:
                    detail = await _call_outcome(call)
                    if detail != unreachable_because:
                        unreachable_because = detail
                        log.warning(
                            "peer_unreachable",
                            peer=f"{self.id:x}",
                            url=self.urls[0],
                            code=code,
                            detail=detail,
                        )
                connected_once = False
                call.cancel()
                if written:
                    # The stream broke under a write: what was queued meanwhile is
                    # stale by the time we are back (Raft resends what matters).
                    self.queue.clear()
                else:
                    # Never written to: keep what waits (the newest, bounded), so the
                    # first messages to a peer that was down — votes — are not lost.
                    del self.queue[: max(0, len(self.queue) - KEEP_WHILE_DOWN)]
                self.t._report_unreachable(self.id)
                # Start over on a fresh channel: do not inherit a connection (or
                # reconnect backoff) that the failure may have left behind.
                if self._channel is not None:
                    await self._channel.close(None)
                    self._channel = None
                stub = raft_pb2_grpc.RaftStub(self.channel())
            # Back off, unless the peer shows it is up by calling us meanwhile: a
            # member that restarts while we wait out a long backoff could not
            # hear our votes for up to BACKOFF_MAX, stalling an election (seen
            # as kill -9 failovers of 0.8-1.5 s right after a restart).
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.peer_seen.wait(), backoff)
            backoff = BACKOFF_MIN if self.peer_seen.is_set() else min(backoff * 2, BACKOFF_MAX)
        if self._channel is not None:
            await self._channel.close(None)


async def _call_outcome(call: Any) -> str:
    """How a finished stream call ended, for the log (status and details)."""
    try:
        code = await asyncio.wait_for(call.code(), 0.5)
        return f"{code.name}: {await call.details()}"
    except Exception as e:  # noqa: BLE001 - best effort, for diagnosis only
        return repr(e)


class RaftServicer(raft_pb2_grpc.RaftServicer):
    """The receiving side of synod.raft.v1.Raft."""

    def __init__(self, transport: Transport):
        self.t = transport

    async def Stream(
        self,
        request_iterator: AsyncIterator[raft_pb2.MessageBatch],
        context: grpc.aio.ServicerContext,
    ) -> raft_pb2.StreamAck:
        batches = 0
        async for pb in request_iterator:
            why = self.t.check_sender(pb.cluster_id, pb.sender, context)
            if why:
                log.warning("peer_rejected", sender=f"{pb.sender:x}", reason=why)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
            try:
                batch = peer_codec.batch_from_proto(pb)
            except ValueError as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad batch: {e}")
            if any(m.to != self.t.member_id for m in batch.messages):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"batch addressed to another member (this is {self.t.member_id:x})",
                )
            if not batches:
                self.t.heard_from(pb.sender)
            self.t._deliver(batch.messages)
            batches += 1
        return raft_pb2.StreamAck(batches=batches)

    async def InstallSnapshot(
        self,
        request_iterator: AsyncIterator[raft_pb2.SnapshotChunk],
        context: grpc.aio.ServicerContext,
    ) -> raft_pb2.SnapshotAck:
        asm = peer_codec.SnapshotAssembler(
            cluster_id=self.t.cluster_id, max_size=self.t._max_snapshot_bytes
        )
        msg: Message | None = None
        try:
            async for chunk in request_iterator:
                msg = asm.feed(chunk) or msg
            msg = asm.finish()
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad snapshot: {e}")
        assert msg is not None
        why = self.t.check_sender(self.t.cluster_id, msg.sender, context)
        if why or msg.to != self.t.member_id:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, why or "not addressed to us")
        assert msg.snapshot is not None
        log.info("snapshot_received", sender=f"{msg.sender:x}", index=msg.snapshot.meta.index)
        self.t._deliver([msg])
        return raft_pb2.SnapshotAck(size=len(msg.snapshot.data))

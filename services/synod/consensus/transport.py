"""Peer transport: Raft messages between members.

Messages travel on peer streams (peer_stream.py): one TCP connection per
peer and direction, carrying length-prefixed MessageBatch frames. When the
connection is up and keeping pace, `send` writes a Ready's messages for a peer
as one frame straight from the caller, with no task switch. Otherwise they
queue and the peer's sender task writes them as one frame when it can. When a
stream breaks, the queued messages are dropped (Raft retransmits), the core is
told the peer is unreachable, and the sender reconnects with exponential
backoff.

Snapshots travel over gRPC (`synod.raft.v1.Raft/InstallSnapshot`) in chunks,
on a channel of their own, so a large snapshot never holds up heartbeats; the
core learns how it ended through `report_snapshot`.

Incoming, `receive` serves one accepted peer stream: it checks that the
stream comes from this cluster and from a member the configuration knows
(and every batch after, so a member removed meanwhile is cut off), then hands
the messages to the node. The peer listener (peer_listener.py) accepts the
connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from synod.consensus import peer_codec, peer_stream
from synod.consensus.config import parse_url
from synod.consensus.peer_stream import PeerStreamError
from synod.consensus.raft import Message, MessageType
from synod.raft.v1 import raft_pb2, raft_pb2_grpc

log = structlog.get_logger("synod.transport")

#: the peer gRPC calls (snapshot chunks, internal calls) take what a peer stream frame may
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", peer_stream.MAX_FRAME_BYTES),
    ("grpc.max_receive_message_length", peer_stream.MAX_FRAME_BYTES),
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
#: a connection's send buffer beyond which `send` queues instead of writing
WRITE_BUFFER_LIMIT = 4 * 1024 * 1024
#: to open a peer stream (connect, TLS, hello)
CONNECT_TIMEOUT = 3.0
#: while a peer is unreachable, keep at most this many messages for it
MAX_QUEUED = 4096
#: after a stream that failed before anything was written on it, keep the newest few
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
        ssl_context: Callable[[], ssl.SSLContext | None] | None = None,
    ):
        self.cluster_id = cluster_id
        self.member_id = member_id
        self._deliver = deliver
        self._report_snapshot = report_snapshot
        self._report_unreachable = report_unreachable
        self._is_member = is_member
        self._max_snapshot_bytes = max_snapshot_bytes
        #: asked before each new snapshot channel (renewed certificates are picked up)
        self.credentials = credentials or (lambda: None)
        #: asked before each new peer stream to an https:// peer, likewise
        self.ssl_context = ssl_context or (lambda: None)
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
        by_peer: dict[int, list[Message]] = {}
        for m in msgs:
            if m.type == MessageType.SNAPSHOT:
                peer = self._peers.get(m.to)
                if peer is None:
                    self._report_snapshot(m.to, False)
                    continue
                t = asyncio.create_task(self._send_snapshot(peer, m))
                self._snapshot_tasks.add(t)
                t.add_done_callback(self._snapshot_tasks.discard)
            else:
                by_peer.setdefault(m.to, []).append(m)
        for pid, batch in by_peer.items():
            peer = self._peers.get(pid)
            if peer is not None:
                peer.send(batch)

    def encode(self, msgs: Sequence[Message]) -> bytes:
        """One frame carrying `msgs` (all from this member)."""
        pb = peer_codec.batch_to_proto(self.cluster_id, self.member_id, msgs)
        return peer_stream.frame(pb.SerializeToString())

    async def _send_snapshot(self, peer: _PeerSender, m: Message) -> None:
        assert m.snapshot is not None
        ok = False
        try:
            chunks = peer_codec.snapshot_chunks(m, cluster_id=self.cluster_id)
            async with dial(peer.urls[0], self.credentials()) as channel:
                stub = raft_pb2_grpc.RaftStub(channel)
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

    def check_sender(self, cluster_id: int, sender: int) -> str:
        """Why a frame must be refused, or '' when it is acceptable."""
        if cluster_id != self.cluster_id:
            return f"cluster id {cluster_id:x} does not match this member's {self.cluster_id:x}"
        if not self._is_member(sender):
            return f"member {sender:x} is not in this cluster's configuration"
        return ""

    async def receive(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        """Serve one peer stream whose MAGIC the listener has read, until it ends."""
        remote = writer.get_extra_info("peername")
        sender = 0
        try:
            hello = await asyncio.wait_for(
                peer_stream.accept(reader, writer, ssl_context), CONNECT_TIMEOUT
            )
            sender = hello.sender
            why = self.check_sender(hello.cluster_id, sender)
            if why:
                log.warning("peer_rejected", sender=f"{sender:x}", remote=remote, reason=why)
                peer_stream.answer(writer, why)
                return
            peer_stream.answer(writer)
            self.heard_from(sender)
            while True:
                pb = raft_pb2.MessageBatch.FromString(await peer_stream.read_frame(reader))
                why = self.check_sender(pb.cluster_id, pb.sender)
                if not why and pb.sender != sender:
                    why = f"batch from {pb.sender:x} on {sender:x}'s stream"
                if why:
                    log.warning("peer_rejected", sender=f"{pb.sender:x}", remote=remote, reason=why)
                    return
                batch = peer_codec.batch_from_proto(pb)
                if any(m.to != self.member_id for m in batch.messages):
                    log.warning(
                        "peer_rejected",
                        sender=f"{sender:x}",
                        reason=f"batch addressed to another member (this is {self.member_id:x})",
                    )
                    return
                self._deliver(batch.messages)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            return  # the peer went away (or never finished its hello)
        except RuntimeError:
            return  # uvloop: our answer met a connection already closed
        except ssl.SSLError as e:
            log.info("peer_handshake_failed", remote=remote, error=e.reason or str(e))
        except (ValueError, PeerStreamError, DecodeError) as e:
            log.warning("peer_stream_invalid", sender=f"{sender:x}", remote=remote, error=str(e))
        finally:
            writer.close()


async def _aiter(chunks: Iterable[raft_pb2.SnapshotChunk]) -> AsyncIterator[raft_pb2.SnapshotChunk]:
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)  # let heartbeats through between chunks


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
        #: the open stream, while `send` may write to it directly
        self._writer: asyncio.StreamWriter | None = None
        #: something was written on the current stream (reset before each dial)
        self._wrote = False
        self._closed = False
        self.task = asyncio.create_task(self._run(), name=f"peer-{peer_id:x}")

    def send(self, msgs: list[Message]) -> None:
        w = self._writer
        if (
            w is not None
            and not self.queue
            and not w.is_closing()
            and w.transport.get_write_buffer_size() < WRITE_BUFFER_LIMIT
        ):
            # Up, nothing queued ahead of these, and the peer keeps pace: write now.
            try:
                w.write(self.t.encode(msgs))
            except (RuntimeError, OSError):
                # The connection closed before our task noticed (uvloop raises
                # where asyncio would drop the write): never into the Raft loop.
                # Queued, they go the way the broken stream's queue goes.
                self._writer = None
            else:
                self._wrote = True
                return
        q = self.queue
        q.extend(msgs)
        if len(q) > MAX_QUEUED:
            del q[: len(q) - MAX_QUEUED]
        self.wake.set()

    def close(self) -> None:
        self._closed = True
        self.task.cancel()

    async def _run(self) -> None:
        backoff = BACKOFF_MIN
        # Say why a peer cannot be reached, once per reason rather than on every
        # retry: a refused TLS handshake shows up here and nowhere else (and at
        # start, "connection refused" comes first while the peer is not up yet).
        unreachable_because = ""
        while not self._closed:
            self.peer_seen.clear()
            writer: asyncio.StreamWriter | None = None
            connected = False
            self._wrote = False
            try:
                reader, writer = await peer_stream.dial(
                    self.urls[0],
                    self.t.ssl_context(),
                    self.t.cluster_id,
                    self.t.member_id,
                    CONNECT_TIMEOUT,
                )
                connected = True
                unreachable_because = ""
                log.info("peer_connected", peer=f"{self.id:x}", url=self.urls[0])
                backoff = BACKOFF_MIN
                await self._serve(reader, writer)
            except asyncio.CancelledError:
                if writer is not None:
                    writer.close()
                break
            except Exception as e:  # noqa: BLE001 - any failure: drop, report, reconnect
                detail = str(e) or repr(e)
                if connected:
                    log.warning("peer_stream_broken", peer=f"{self.id:x}", detail=detail)
                elif detail != unreachable_because:
                    unreachable_because = detail
                    log.warning(
                        "peer_unreachable", peer=f"{self.id:x}", url=self.urls[0], detail=detail
                    )
                if writer is not None:
                    writer.close()
                if self._wrote:
                    # The stream broke under a write: what was queued meanwhile is
                    # stale by the time we are back (Raft resends what matters).
                    self.queue.clear()
                else:
                    # Never written to: keep what waits (the newest, bounded), so the
                    # first messages to a peer that was down — votes — are not lost.
                    del self.queue[: max(0, len(self.queue) - KEEP_WHILE_DOWN)]
                self.t._report_unreachable(self.id)
            # Back off, unless the peer shows it is up by calling us meanwhile: a
            # member that restarts while we wait out a long backoff could not
            # hear our votes for up to BACKOFF_MAX, stalling an election (seen
            # as kill -9 failovers of 0.8-1.5 s right after a restart).
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.peer_seen.wait(), backoff)
            backoff = BACKOFF_MIN if self.peer_seen.is_set() else min(backoff * 2, BACKOFF_MAX)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Write to an open stream until it ends (raises _StreamEnded, or the write's error)."""
        # The listener sends nothing once it has accepted us, so a read that
        # returns means the stream ended. It wakes us, so we reconnect now rather
        # than on the next write, which would be lost: a lost vote request costs
        # a whole election timeout.
        ended = asyncio.ensure_future(reader.read(1))
        ended.add_done_callback(lambda _f: self.wake.set())
        try:
            while True:
                if ended.done():
                    raise _StreamEnded(_why_ended(ended))
                if self.queue:
                    self._writer = None  # queued messages go first
                    msgs, self.queue = self.queue, []
                    writer.write(self.t.encode(msgs))
                    self._wrote = True
                    await writer.drain()
                    continue
                self._writer = writer
                self.wake.clear()
                await self.wake.wait()
        finally:
            self._writer = None
            ended.cancel()


class _StreamEnded(Exception):
    """The peer closed the stream (or it failed); the message says how."""


def _why_ended(ended: asyncio.Future[bytes]) -> str:
    if ended.cancelled():
        return "cancelled"
    e = ended.exception()
    if e is not None:
        return f"connection lost: {e}"
    return "the peer closed the connection" if not ended.result() else "unexpected data"


class RaftServicer(raft_pb2_grpc.RaftServicer):
    """The receiving side of synod.raft.v1.Raft: snapshots (messages come by peer stream)."""

    def __init__(self, transport: Transport):
        self.t = transport

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
        why = self.t.check_sender(self.t.cluster_id, msg.sender)
        if why or msg.to != self.t.member_id:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, why or "not addressed to us")
        assert msg.snapshot is not None
        log.info("snapshot_received", sender=f"{msg.sender:x}", index=msg.snapshot.meta.index)
        self.t._deliver([msg])
        return raft_pb2.SnapshotAck(size=len(msg.snapshot.data))

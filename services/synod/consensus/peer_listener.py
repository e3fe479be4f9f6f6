"""The peer port: Raft peer streams and the peer gRPC services on one address.

A member serves two things to other members: peer streams of Raft messages
(peer_stream.py), and gRPC calls (snapshots, lease renewals and the other
internal calls, cluster discovery). Both arrive on the member's peer URL,
so a deployment opens one port per member for its peers, as before.

The listener reads a new connection's first four bytes. A peer stream starts
with peer_stream.MAGIC and is served here (TLS started by us when the URL is
https://). Anything else is gRPC (its TLS hello, or the HTTP/2 preface) and is
passed on, bytes untouched, to the member's gRPC peer server, which listens
only on an abstract Unix socket: gRPC still does its own TLS, client
certificate checks included, for those calls. The pass-through costs a copy
per chunk in Python, which these calls, far fewer than Raft messages, can
afford.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import Any

import structlog

from synod.consensus import peer_stream
from synod.consensus.config import parse_url
from synod.consensus.transport import Transport

log = structlog.get_logger("synod.peer_listener")

#: a connection that says nothing for this long is closed
FIRST_BYTES_TIMEOUT = 10.0
PROXY_CHUNK = 256 * 1024


class PeerListener:
    def __init__(
        self,
        transport: Transport,
        grpc_address: Callable[[bool], str],
        server_ssl: Callable[[], ssl.SSLContext] | None,
    ) -> None:
        """`grpc_address(tls)`: the abstract socket name of the gRPC peer server's
        plaintext (False) or TLS (True) side; `server_ssl`: this member's peer TLS
        context (None when it has no peer certificate)."""
        self.transport = transport
        self._grpc_address = grpc_address
        self._server_ssl = server_ssl
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def listen(self, url: str, flag: str) -> None:
        host, port = parse_url(url, flag)
        tls = peer_stream.is_tls(url)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:  # tracked, so that close() can end it
                self._connections[task] = writer
                task.add_done_callback(self._connections.pop)
            await self._serve(reader, writer, tls)

        try:
            server = await asyncio.start_server(serve, host, port, reuse_address=True)
        except OSError as e:
            raise OSError(f"{flag}: cannot listen on {url}: {e.strerror or e}") from None
        self._servers.append(server)

    async def close(self) -> None:
        for s in self._servers:
            s.close()
        # End each connection by closing its socket rather than cancelling its
        # task: asyncio (3.11) logs a cancelled connection handler as an error.
        for writer in self._connections.values():
            writer.transport.abort()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=2)
        for s in self._servers:
            with contextlib.suppress(Exception):
                await s.wait_closed()
        self._servers.clear()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool
    ) -> None:
        try:
            first = await asyncio.wait_for(reader.readexactly(4), FIRST_BYTES_TIMEOUT)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            writer.close()
            return
        if first == peer_stream.MAGIC:
            ctx = None
            if tls:
                if self._server_ssl is None:  # config forbids it; be safe anyway
                    writer.close()
                    return
                ctx = self._server_ssl()
            await self.transport.receive(reader, writer, ctx)
        else:
            await self._pass_to_grpc(first, reader, writer, tls)

    async def _pass_to_grpc(
        self,
        first: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tls: bool,
    ) -> None:
        try:
            # Connected by hand: uvloop does not take an abstract socket's name.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect("\0" + self._grpc_address(tls))
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            up_reader, up_writer = await asyncio.open_unix_connection(sock=sock)
        except OSError as e:
            log.warning("peer_grpc_unavailable", error=str(e))
            writer.close()
            return
        up_writer.write(first)
        down = asyncio.ensure_future(_pump(reader, up_writer))
        up = asyncio.ensure_future(_pump(up_reader, writer))
        try:
            # Either side closing ends the connection for both: HTTP/2 never
            # half-closes and waits for an answer.
            await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            down.cancel()
            up.cancel()
            writer.close()
            up_writer.close()


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    # RuntimeError: uvloop's word for a write to a connection that has closed.
    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
        while data := await src.read(PROXY_CHUNK):
            dst.write(data)
            await dst.drain()

"""The peer stream's wire protocol: Raft messages as length-prefixed MessageBatch frames.

Members send each other Raft messages on a plain TCP connection (TLS when the
peer URL is https://), not on a gRPC stream. A gRPC stream message costs a
Python member about 250 us of CPU: gRPC's own threads receive it and hand it
to the event loop. A frame on an asyncio socket is one send() from the loop and
one read callback, and a sequential write carries several of them (the fourth
round of docs/performance.md measured the gRPC streams at about 1 ms of a
sequential put). Snapshots and the internal calls stay on gRPC, served on the
same port: the peer listener tells the two apart by their first bytes.

One connection carries one direction, dialer to listener:

    dialer:   MAGIC
    listener: MAGIC                       (this is a peer stream: go on)
    -- both sides start TLS here when the peer URL is https:// --
    dialer:   frame(hello)                a MessageBatch: cluster id, sender, no messages
    listener: frame(b"") accepted, or frame(reason) and it closes the connection
    dialer:   frame(MessageBatch) ...     nothing more flows back

A frame is a 4-byte big-endian length, then that many bytes. The listener
echoes MAGIC before TLS starts so that the dialer's TLS hello is never read
into the listener's buffer along with MAGIC.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import struct
import urllib.parse
from typing import Any

from synod.consensus.config import parse_url
from synod.raft.v1 import raft_pb2

#: the first bytes of a peer stream; neither gRPC's TLS hello (0x16) nor its
#: plaintext preface ("PRI ") starts this way
MAGIC = b"SRF1"
_LENGTH = struct.Struct(">I")
#: Raft bounds each append by bytes, but a batch holds many; leave headroom.
MAX_FRAME_BYTES = 256 * 1024 * 1024
#: a dead peer behind a silent network (no RST) is given up on after this long
#: with data unacknowledged, or this long idle (keepalive probes)
USER_TIMEOUT_MS = 15_000
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 10, 5, 1


class PeerStreamError(Exception):
    """A peer stream could not be opened; the message says why, for the log."""


def frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader, limit: int = MAX_FRAME_BYTES) -> bytes:
    """The next frame's payload. IncompleteReadError when the stream ends."""
    (n,) = _LENGTH.unpack(await reader.readexactly(4))
    if n > limit:
        raise PeerStreamError(f"frame of {n} bytes is larger than the limit of {limit}")
    return await reader.readexactly(n)


def tune_socket(writer: asyncio.StreamWriter) -> None:
    """No Nagle delay; notice a peer that vanished without closing (see USER_TIMEOUT_MS)."""
    sock: Any = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)


def is_tls(url: str) -> bool:
    return url.strip().lower().startswith("https://")


async def dial(
    url: str,
    ssl_context: ssl.SSLContext | None,
    cluster_id: int,
    sender: int,
    timeout: float,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a peer stream to the member at `url` and say who we are.

    `ssl_context` is used for an https:// URL (None there: the system's roots,
    no client certificate). Raises PeerStreamError with a reason a person can
    act on; the connection is closed then.
    """
    host, port = parse_url(url, "peer url")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await _connect(host, port)
            tune_socket(writer)
            writer.write(MAGIC)
            if await reader.readexactly(len(MAGIC)) != MAGIC:
                raise PeerStreamError("the peer port answered, but not as a Synod member")
            if is_tls(url):
                ctx = ssl_context if ssl_context is not None else ssl.create_default_context()
                await writer.start_tls(ctx, server_hostname=host)
            hello = raft_pb2.MessageBatch(cluster_id=cluster_id, sender=sender)
            writer.write(frame(hello.SerializeToString()))
            answer = await read_frame(reader, limit=64 * 1024)
            if answer:
                raise PeerStreamError(f"refused: {answer.decode(errors='replace')}")
            return reader, writer
    except PeerStreamError:
        _close(writer)
        raise
    except ssl.SSLError as e:
        _close(writer)
        raise PeerStreamError(f"TLS handshake failed: {e.reason or e}") from None
    except TimeoutError:
        _close(writer)
        raise PeerStreamError(f"no answer within {timeout:g} s") from None
    except (asyncio.IncompleteReadError, ConnectionError) as e:
        _close(writer)
        if is_tls(url):
            # TLS 1.3 lets the client finish first; a server that refuses our
            # certificate then just closes.
            why = "the TLS handshake (was our certificate refused?)"
        else:
            why = f"the handshake ({type(e).__name__})"
        raise PeerStreamError(f"the peer closed the connection during {why}") from None


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to host:port, through the HTTP proxy gRPC would use, if any.

    The member's gRPC calls to its peers honour `grpc_proxy` (the fault
    injection harness sets it to interpose on peer traffic, synod/check/proxy.py)
    and so must its peer streams, or the two would take different paths.
    """
    proxy = http_proxy_for(host)
    try:
        if proxy is None:
            return await asyncio.open_connection(host, port)
        reader, writer = await asyncio.open_connection(*proxy)
    except OSError as e:
        via = f" (via the proxy {proxy[0]}:{proxy[1]})" if proxy else ""
        raise PeerStreamError(f"cannot connect{via}: {e.strerror or e}") from None
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        _close(writer)
        raise PeerStreamError(f"the proxy {proxy[0]}:{proxy[1]} answered nonsense") from None
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if status.split()[1:2] != ["200"]:
        _close(writer)
        raise PeerStreamError(f"the proxy {proxy[0]}:{proxy[1]} refused: {status}")
    return reader, writer


def http_proxy_for(host: str) -> tuple[str, int] | None:
    """The HTTP CONNECT proxy gRPC would use to reach `host`: `grpc_proxy`, else
    `https_proxy`, else `http_proxy`, unless `no_grpc_proxy` (else `no_proxy`)
    lists the host, a domain it is in, or `*`."""
    env = os.environ
    url = next((env[k] for k in ("grpc_proxy", "https_proxy", "http_proxy") if env.get(k)), "")
    if not url:
        return None
    exempt = next((env[k] for k in ("no_grpc_proxy", "no_proxy") if k in env), "")
    for entry in (e.strip().lower() for e in exempt.split(",")):
        h = host.lower()
        if entry and (entry == "*" or h == entry or h.endswith("." + entry.lstrip("."))):
            return None
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or 80


async def accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    ssl_context: ssl.SSLContext | None,
) -> raft_pb2.MessageBatch:
    """The listener's side, after it has read MAGIC: confirm, start TLS when
    `ssl_context` is given, and return the dialer's hello (not yet answered:
    the caller checks it and calls `answer`)."""
    tune_socket(writer)
    writer.write(MAGIC)
    if ssl_context is not None:
        await writer.start_tls(ssl_context)
    return raft_pb2.MessageBatch.FromString(await read_frame(reader, limit=64 * 1024))


def answer(writer: asyncio.StreamWriter, refusal: str = "") -> None:
    """Accept the hello (no reason) or refuse it, saying why; a refusal closes."""
    writer.write(frame(refusal.encode()))
    if refusal:
        writer.close()


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()

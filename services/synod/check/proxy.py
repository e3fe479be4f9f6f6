"""The fallback when network namespaces are unavailable: a fault-injecting proxy.

Members run in the harness's own namespace, each on its own loopback address
(``127.A.B.(10+i)``: all of 127/8 is local on Linux, so ports 2379/2380 repeat
without clashing). Each member is started with ``grpc_proxy`` pointing at *its
own* HTTP CONNECT proxy (a thread in the harness), so every connection it opens
to a peer goes through a proxy that knows both ends: who dials (the proxy's
owner) and whom (the CONNECT target). Raft traffic is one stream per direction
(each member dials the peers it sends to), so cutting A -> B at A's proxy and
B -> A at B's proxy cuts the pair completely.

A partition closes the tunnels between cut pairs and *blackholes* new ones
(the CONNECT is accepted and never answered, as a dropped SYN would be);
healing closes the blackholed connections so the members redial at once.

What it does not do, compared with namespaces: it cuts only member-to-member
connections (the only ones partitions are about); clients and the lock and
router replicas talk to the members directly, unproxied, exactly as with
namespaces, where they are on the bridge and never cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from dataclasses import dataclass, field
from functools import partial

import structlog

log = structlog.get_logger("synod.check.proxy")


@dataclass
class _Tunnel:
    writers: list[asyncio.StreamWriter]

    def close(self) -> None:
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.close()


@dataclass
class ProxyNetwork:
    """Same face as NetnsNetwork: setup/teardown, address, partition/heal."""

    members: list[str]
    run_id: str = field(default_factory=lambda: f"{random.randrange(1 << 24):06x}")
    subnet: tuple[int, int] = (0, 0)
    blocked: dict[str, set[str]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _servers: list[asyncio.base_events.Server] = field(default_factory=list)
    _tunnels: dict[tuple[str, str], list[_Tunnel]] = field(default_factory=dict)

    @property
    def host_address(self) -> str:
        return "127.0.0.1"

    def address(self, member: str) -> str:
        return f"127.{self.subnet[0]}.{self.subnet[1]}.{10 + self.members.index(member)}"

    def exec_prefix(self, member: str) -> list[str]:
        return []

    def member_env(self, member: str) -> dict[str, str]:
        proxy = f"http://127.0.0.1:{self.ports[member]}"
        # grpc_proxy is gRPC's own; the no_proxy lists are cleared so that a
        # loopback exemption in the caller's environment cannot bypass the proxy.
        return {"grpc_proxy": proxy, "no_grpc_proxy": "", "no_proxy": "", "NO_PROXY": ""}

    def _member_at(self, host: str) -> str | None:
        for m in self.members:
            if self.address(m) == host:
                return m
        return None

    # --- lifecycle ------------------------------------------------------------------

    def setup(self) -> None:
        rng = random.Random()
        self.subnet = (rng.randrange(100, 250), rng.randrange(0, 256))
        self.blocked = {m: set() for m in self.members}
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(started,), name="check-proxy", daemon=True
        )
        self._thread.start()
        started.wait(10)
        fut = asyncio.run_coroutine_threadsafe(self._start_servers(), self._loop)
        fut.result(10)
        log.info("proxy_ready", run_id=self.run_id, ports=self.ports)

    def _serve(self, started: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(started.set)
        self._loop.run_forever()

    async def _start_servers(self) -> None:
        for m in self.members:
            server = await asyncio.start_server(partial(self._handle, m), "127.0.0.1", 0)
            self._servers.append(server)
            self.ports[m] = int(server.sockets[0].getsockname()[1])

    def teardown(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def close() -> None:
            for s in self._servers:
                s.close()
            for tunnels in self._tunnels.values():
                for t in tunnels:
                    t.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    # --- partitions -----------------------------------------------------------------

    def partition(self, groups: list[set[str]]) -> None:
        blocked = {}
        for m in self.members:
            reach = set().union(*(g for g in groups if m in g)) | {m}
            blocked[m] = set(self.members) - reach
        self._set(blocked)

    def heal(self) -> None:
        self._set({m: set() for m in self.members})

    def _set(self, blocked: dict[str, set[str]]) -> None:
        assert self._loop is not None
        old = self.blocked

        async def apply() -> None:
            self.blocked = blocked
            for (src, dst), tunnels in list(self._tunnels.items()):
                was, now = dst in old.get(src, set()), dst in blocked[src]
                if was != now:  # cut live tunnels; drop blackholed ones so they redial
                    for t in tunnels:
                        t.close()
                    self._tunnels[(src, dst)] = []

        asyncio.run_coroutine_threadsafe(apply(), self._loop).result(10)

    # --- one CONNECT ----------------------------------------------------------------

    async def _handle(
        self, src: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) < 2 or parts[0] != b"CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            writer.close()
            return
        host, _, port = parts[1].decode().rpartition(":")
        dst = self._member_at(host) or host
        tunnel = _Tunnel([writer])
        self._tunnels.setdefault((src, dst), []).append(tunnel)
        try:
            if dst in self.blocked.get(src, set()):
                # Blackhole: never answer; closed when healed (or by the dialer).
                while await reader.read(65536):
                    pass
                return
            try:
                up_r, up_w = await asyncio.open_connection(host, int(port))
            except OSError:
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                return
            tunnel.writers.append(up_w)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            tunnel.close()
            with contextlib.suppress(ValueError):
                self._tunnels.get((src, dst), []).remove(tunnel)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()

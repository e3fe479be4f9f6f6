"""``synodctl``: a command-line client for a running Synod (see docs/synodctl.md).

Talks to the consensus service (etcd v3 API, via `synod.client.etcd.EtcdClient`),
the lock service (synod.lock.v1) and the router (synod.router.v1). Output is an
aligned table (default) or JSON (``-o json``, shapes documented in
docs/synodctl.md). Errors are one line, ``synodctl: <what went wrong>``, exit 1;
usage errors exit 2. IDs (members, leases, sessions) are shown and parsed as hex.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from synod.client.channels import open_channel, uses_https
from synod.client.errors import EtcdError
from synod.client.etcd import EtcdClient
from synod.etcd.mvccpb import kv_pb2
from synod.flags import ConfigError
from synod.lock.v1 import lock_pb2, lock_pb2_grpc
from synod.router.v1 import router_pb2, router_pb2_grpc
from synod.tls import ClientTLS

PROG = "synodctl"
DEFAULT_ENDPOINTS = "127.0.0.1:2379,127.0.0.1:2381,127.0.0.1:2383"
DEFAULT_LOCK_ENDPOINTS = "127.0.0.1:2385,127.0.0.1:2386"
DEFAULT_ROUTER_ENDPOINTS = "127.0.0.1:2387,127.0.0.1:2388"

T = TypeVar("T")
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]
Handler = Callable[["Ctx"], Coroutine[Any, Any, int]]


class CtlError(Exception):
    """A failure reported as ``synodctl: <message>`` with exit code 1."""


# --- output -------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(header), *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def text(b: bytes) -> str:
    return b.decode("utf-8", errors="backslashreplace")


def hexid(i: int) -> str:
    return format(i & 0xFFFFFFFFFFFFFFFF, "x")


def parse_hex(s: str) -> int:
    try:
        v = int(s, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a hex id: {s!r}") from None
    return v - (1 << 64) if v >= 1 << 63 else v


def eprint(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json = args.output == "json"
        self.timeout: float = args.timeout
        self.stop = asyncio.Event()
        self._etcd: EtcdClient | None = None
        self._channels: list[grpc.aio.Channel] = []
        self.credentials = tls_credentials(args)

    def out(self, data: object, human: str) -> None:
        print(json.dumps(data, sort_keys=True) if self.json else human, flush=True)

    @property
    def etcd(self) -> EtcdClient:
        if self._etcd is None:
            self._etcd = EtcdClient(
                split(self.args.endpoints), timeout=self.timeout, credentials=self.credentials
            )
        return self._etcd

    def channel(self, address: str) -> grpc.aio.Channel:
        ch = open_channel(address, self.credentials)
        self._channels.append(ch)
        return ch

    async def first_channel(self, endpoints: str, what: str) -> grpc.aio.Channel:
        """A channel to the first endpoint that serves (health check), in order."""
        for address in split(endpoints):
            ch = self.channel(address)
            if await healthy(ch, min(self.timeout, 2.0)):
                return ch
        raise CtlError(f"no {what} replica reachable at {endpoints}")

    async def lock_stub(self) -> lock_pb2_grpc.LockStub:
        return lock_pb2_grpc.LockStub(await self.first_channel(self.args.lock_endpoints, "lock"))

    async def router_stub(self) -> router_pb2_grpc.RouterStub:
        ch = await self.first_channel(self.args.router_endpoints, "router")
        return router_pb2_grpc.RouterStub(ch)

    async def close(self) -> None:
        if self._etcd is not None:
            await self._etcd.close()
        for ch in self._channels:
            await ch.close(None)

    async def until_stopped(self, aw: Awaitable[T]) -> T | None:
        """Await `aw`, or return None (cancelling it) once Ctrl-C/SIGTERM arrives."""
        task = asyncio.ensure_future(aw)
        stopper = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await task
        return None


def tls_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """--cacert/--cert/--key (or https:// endpoints): TLS to every service; else None."""
    # (dest names differ from the flags: `get`/`put` have a positional `key`)
    tls = ClientTLS(args.tls_cacert or "", args.tls_cert or "", args.tls_key or "")
    everything = split(args.endpoints) + split(args.lock_endpoints) + split(args.router_endpoints)
    if not (tls.ca_file or tls.cert_file or tls.key_file or uses_https(everything)):
        return None
    try:
        return tls.check("--cacert", "--cert", "--key").credentials()
    except ConfigError as e:
        raise CtlError(str(e)) from None


def split(endpoints: str) -> list[str]:
    return [e.strip() for e in endpoints.split(",") if e.strip()]


async def healthy(ch: grpc.aio.Channel, timeout: float) -> bool:
    try:
        r = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(r.status == health_pb2.HealthCheckResponse.SERVING)


# --- status / members -------------------------------------------------------------------


async def cmd_status(ctx: Ctx) -> int:
    names: dict[int, str] = {}
    with contextlib.suppress(EtcdError):
        names = {m.ID: m.name for m in (await ctx.etcd.member_list()).members}
    rows: list[dict[str, Any]] = []
    for address in split(ctx.args.endpoints):
        row: dict[str, Any] = {"service": "consensus", "address": address}
        try:
            st = await ctx.etcd.status(address, timeout=min(ctx.timeout, 2.0))
        except EtcdError:
            row.update(name="", id="", state="unreachable", healthy=False)
            row.update(raft_term=None, raft_index=None)
        else:
            mid = st.header.member_id
            role = "learner" if st.isLearner else "leader" if st.leader == mid else "follower"
            row.update(name=names.get(mid, ""), id=hexid(mid), state=role, healthy=True)
            row.update(raft_term=st.raftTerm, raft_index=st.raftIndex)
        rows.append(row)
    replicas = (("lock", ctx.args.lock_endpoints), ("router", ctx.args.router_endpoints))
    for kind, endpoints in replicas:
        for i, address in enumerate(split(endpoints), 1):
            ok = await healthy(ctx.channel(address), min(ctx.timeout, 2.0))
            rows.append(
                {"service": kind, "name": f"{kind}{i}", "id": "", "address": address,
                 "state": "healthy" if ok else "unreachable", "healthy": ok,
                 "raft_term": None, "raft_index": None}
            )  # fmt: skip
    ctx.out(
        {"services": rows},
        table(
            ("SERVICE", "NAME", "ID", "ADDRESS", "STATE", "RAFT TERM", "RAFT INDEX"),
            [
                (
                    r["service"],
                    r["name"] or "-",
                    r["id"] or "-",
                    r["address"],
                    r["state"],
                    "-" if r["raft_term"] is None else r["raft_term"],
                    "-" if r["raft_index"] is None else r["raft_index"],
                )
                for r in rows
            ],
        ),
    )
    bad = [r for r in rows if not r["healthy"]]
    if bad:
        eprint(f"{PROG}: {len(bad)} of {len(rows)} services unreachable")
        return 1
    return 0


async def cmd_members(ctx: Ctx) -> int:
    ms = (await ctx.etcd.member_list()).members
    data: list[dict[str, Any]] = [
        {"id": hexid(m.ID), "name": m.name, "peer_urls": list(m.peerURLs),
         "client_urls": list(m.clientURLs), "learner": m.isLearner}
        for m in ms
    ]  # fmt: skip
    ctx.out(
        {"members": data},
        table(
            ("ID", "NAME", "PEER URLS", "CLIENT URLS", "LEARNER"),
            [
                (
                    d["id"],
                    d["name"] or "-",
                    ",".join(d["peer_urls"]),
                    ",".join(d["client_urls"]) or "-",
                    "yes" if d["learner"] else "no",
                )
                for d in data
            ],
        ),
    )
    return 0


# --- kv -------------------------------------------------------------------------------------


def kv_json(kv: kv_pb2.KeyValue) -> dict[str, Any]:
    return {
        "key": text(kv.key),
        "value": text(kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": hexid(kv.lease) if kv.lease else None,
    }


async def cmd_get(ctx: Ctx) -> int:
    a = ctx.args
    r = await ctx.etcd.get(a.key, prefix=a.prefix, revision=a.rev)
    kvs = [kv_json(kv) for kv in r.kvs]
    if not kvs and not a.prefix:
        raise CtlError(f"key {a.key!r} not found")
    ctx.out(
        {"revision": r.header.revision, "kvs": kvs},
        table(
            ("KEY", "VALUE", "MOD REV", "LEASE"),
            [(k["key"], k["value"], k["mod_revision"], k["lease"] or "-") for k in kvs],
        )
        if kvs
        else "(no keys)",
    )
    return 0


async def cmd_put(ctx: Ctx) -> int:
    r = await ctx.etcd.put(ctx.args.key, ctx.args.value, lease=ctx.args.lease)
    ctx.out({"revision": r.header.revision}, f"OK (revision {r.header.revision})")
    return 0


async def cmd_del(ctx: Ctx) -> int:
    r = await ctx.etcd.delete(ctx.args.key, prefix=ctx.args.prefix)
    n = r.deleted
    ctx.out(
        {"deleted": n, "revision": r.header.revision},
        f"deleted {n} key{'s' if n != 1 else ''} (revision {r.header.revision})",
    )
    return 0


async def cmd_watch(ctx: Ctx) -> int:
    a = ctx.args
    start = a.rev or (await ctx.etcd.get(a.key, count_only=True)).header.revision + 1
    what = f"{a.key}*" if a.prefix else a.key
    w = ctx.etcd.watch(a.key, prefix=a.prefix, start_revision=start)
    try:
        await ctx.until_stopped(w.created(ctx.timeout))
        eprint(f"watching {what} from revision {start}... (Ctrl-C to stop)")

        async def pump() -> None:
            async for resp in w:
                for ev in resp.events:
                    kind = "DELETE" if ev.type == ev.DELETE else "PUT"
                    kv = ev.kv
                    data = {"type": kind, **kv_json(kv)}
                    value = "" if kind == "DELETE" else f"  {text(kv.value)}"
                    human = f"{kind:<6}  {text(kv.key)}{value}  (revision {kv.mod_revision})"
                    ctx.out(data, human)

        await ctx.until_stopped(pump())
    finally:
        await w.aclose()
    return 0


# --- lock -------------------------------------------------------------------------------------


def holder_json(h: lock_pb2.Holder) -> dict[str, Any]:
    return {
        "session_id": hexid(h.session_id),
        "fencing_token": h.fencing_token,
        "mode": lock_pb2.Mode.Name(h.mode).lower(),
        "limit": h.limit,
        "key": text(h.key),
        "since_revision": h.since_revision,
    }


async def keep_session(stub: lock_pb2_grpc.LockStub, session: int, ttl: int) -> None:
    """Renew `session` every ttl/3; return if it is gone."""
    call = stub.KeepAlive()
    try:
        while True:
            await call.write(lock_pb2.KeepAliveRequest(session_id=session))
            resp = await call.read()
            if resp is EOF or resp.ttl_seconds <= 0:
                return
            await asyncio.sleep(max(ttl / 3, 0.5))
    finally:
        call.cancel()


async def cmd_lock_acquire(ctx: Ctx) -> int:
    a = ctx.args
    stub = await ctx.lock_stub()
    s = await stub.OpenSession(lock_pb2.OpenSessionRequest(ttl_seconds=a.ttl), timeout=ctx.timeout)
    session = s.session_id
    keeper = asyncio.ensure_future(keep_session(stub, session, s.ttl_seconds))
    mode = lock_pb2.SHARED if a.shared else lock_pb2.EXCLUSIVE
    req = lock_pb2.AcquireRequest(name=a.name, session_id=session, mode=mode)
    granted: lock_pb2.AcquireResponse | None = None
    try:
        try:
            granted = await stub.TryAcquire(req, timeout=ctx.timeout)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            ins = await stub.Inspect(lock_pb2.InspectRequest(name=a.name), timeout=ctx.timeout)
            held = ", ".join(
                f"session {hexid(h.session_id)}, token {h.fencing_token}" for h in ins.holders
            )
            eprint(f"waiting for {a.name} (held by {held or 'another session'})...")
            granted = await ctx.until_stopped(stub.Acquire(req))
        if granted is None:
            return 130
        data = {"name": a.name, "session_id": hexid(session),
                "fencing_token": granted.fencing_token, "key": text(granted.key)}  # fmt: skip
        ctx.out(data, str(granted.fencing_token))
        eprint(
            f"holding {a.name} (session {hexid(session)}, token {granted.fencing_token}); "
            "Ctrl-C releases it"
        )
        await ctx.until_stopped(asyncio.shield(keeper))
        if keeper.done():
            raise CtlError(f"session {hexid(session)} expired; lock {a.name} lost")
        await stub.Release(
            lock_pb2.ReleaseRequest(name=a.name, session_id=session), timeout=ctx.timeout
        )
        eprint(f"released {a.name}")
        return 0
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await keeper
        with contextlib.suppress(grpc.aio.AioRpcError):
            await stub.CloseSession(
                lock_pb2.CloseSessionRequest(session_id=session), timeout=ctx.timeout
            )


async def cmd_lock_release(ctx: Ctx) -> int:
    stub = await ctx.lock_stub()
    req = lock_pb2.ReleaseRequest(name=ctx.args.name, session_id=ctx.args.session)
    await stub.Release(req, timeout=ctx.timeout)
    ctx.out({"released": ctx.args.name}, f"released {ctx.args.name}")
    return 0


async def cmd_lock_inspect(ctx: Ctx) -> int:
    stub = await ctx.lock_stub()
    r = await stub.Inspect(lock_pb2.InspectRequest(name=ctx.args.name), timeout=ctx.timeout)
    holders = [holder_json(h) for h in r.holders]
    waiters = [holder_json(h) for h in r.waiters]
    rows = [("holder", h) for h in holders] + [("waiter", h) for h in waiters]
    human = (
        table(
            ("ROLE", "SESSION", "TOKEN", "MODE", "SINCE REV"),
            [
                (k, h["session_id"], h["fencing_token"], h["mode"], h["since_revision"])
                for k, h in rows
            ],
        )
        if rows
        else f"{ctx.args.name}: free"
    )
    ctx.out(
        {"name": ctx.args.name, "revision": r.revision, "holders": holders, "waiters": waiters},
        human,
    )
    return 0


# --- router ----------------------------------------------------------------------------------


def member_json(m: router_pb2.Member) -> dict[str, Any]:
    return {"id": m.id, "address": m.address, "weight": m.weight, "metadata": dict(m.metadata)}


async def cmd_router_register(ctx: Ctx) -> int:
    a = ctx.args
    stub = await ctx.router_stub()
    req = router_pb2.RegisterRequest(
        ring=a.ring, id=a.id, address=a.address, weight=a.weight, ttl_seconds=a.ttl
    )
    r = await stub.Register(req, timeout=ctx.timeout)
    data = {"ring": a.ring, "id": a.id, "address": a.address, "lease": hexid(r.lease_id),
            "ttl": r.ttl_seconds, "revision": r.revision}  # fmt: skip
    ctx.out(data, f"registered {a.id} ({a.address}) in ring {a.ring}, revision {r.revision}")
    eprint(f"keeping {a.id} alive (lease {hexid(r.lease_id)}, ttl {r.ttl_seconds}s); Ctrl-C stops")

    async def keep() -> None:
        call = stub.KeepAlive()
        try:
            while True:
                await call.write(router_pb2.KeepAliveRequest(lease_id=r.lease_id))
                resp = await call.read()
                if resp is EOF or resp.ttl_seconds <= 0:
                    return
                await asyncio.sleep(max(r.ttl_seconds / 3, 0.5))
        finally:
            call.cancel()

    keeper = asyncio.ensure_future(keep())
    try:
        await ctx.until_stopped(asyncio.shield(keeper))
        if keeper.done():
            raise CtlError(f"lease of {a.id} in ring {a.ring} expired")
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await keeper
    await stub.Deregister(router_pb2.DeregisterRequest(ring=a.ring, id=a.id), timeout=ctx.timeout)
    eprint(f"deregistered {a.id}")
    return 0


async def cmd_router_lookup(ctx: Ctx) -> int:
    a = ctx.args
    stub = await ctx.router_stub()
    req = router_pb2.LookupRequest(ring=a.ring, key=a.key.encode(), replicas=a.n)
    r = await stub.Lookup(req, timeout=ctx.timeout)
    ms = [member_json(m) for m in r.members]
    ctx.out(
        {"ring": a.ring, "key": a.key, "revision": r.revision, "members": ms},
        table(
            ("RANK", "ID", "ADDRESS", "WEIGHT"),
            [(i, m["id"], m["address"], m["weight"]) for i, m in enumerate(ms)],
        ),
    )
    return 0


async def cmd_router_ring(ctx: Ctx) -> int:
    stub = await ctx.router_stub()
    r = await stub.GetRing(router_pb2.GetRingRequest(ring=ctx.args.ring), timeout=ctx.timeout)
    ms = [member_json(m) for m in r.members]
    p = r.params
    params = {"algorithm": p.algorithm, "slots": p.slots, "hash": p.hash, "mix": p.mix}
    human = (
        table(("ID", "ADDRESS", "WEIGHT"), [(m["id"], m["address"], m["weight"]) for m in ms])
        if ms
        else f"ring {ctx.args.ring}: no members"
    )
    ctx.out(
        {
            "ring": r.ring or ctx.args.ring,
            "exists": r.exists,
            "revision": r.revision,
            "members": ms,
            "params": params,
        },
        human,
    )
    return 0


# --- parser / entry point ---------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2
        self.exit(2, f"{PROG}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = _Parser(prog=PROG, description="Command-line client for a running Synod.")
    p.add_argument(
        "--endpoints", default=env("SYNOD_ENDPOINTS", DEFAULT_ENDPOINTS),
        help="consensus members, comma-separated [env SYNOD_ENDPOINTS]",
    )  # fmt: skip
    p.add_argument(
        "--lock-endpoints", default=env("SYNOD_LOCK_ENDPOINTS", DEFAULT_LOCK_ENDPOINTS),
        help="lock service replicas [env SYNOD_LOCK_ENDPOINTS]",
    )  # fmt: skip
    p.add_argument(
        "--router-endpoints", default=env("SYNOD_ROUTER_ENDPOINTS", DEFAULT_ROUTER_ENDPOINTS),
        help="router replicas [env SYNOD_ROUTER_ENDPOINTS]",
    )  # fmt: skip
    # etcdctl's names, so the same three files serve both tools.
    p.add_argument(
        "--cacert", metavar="FILE", default=env("SYNOD_CACERT"), dest="tls_cacert",
        help="CA (PEM) the services' certificates are signed by: TLS [env SYNOD_CACERT]",
    )  # fmt: skip
    p.add_argument(
        "--cert", metavar="FILE", default=env("SYNOD_CERT"), dest="tls_cert",
        help="client certificate (PEM) for mutual TLS [env SYNOD_CERT]",
    )  # fmt: skip
    p.add_argument(
        "--key", metavar="FILE", default=env("SYNOD_KEY"), dest="tls_key",
        help="private key (PEM) of --cert [env SYNOD_KEY]",
    )  # fmt: skip
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per call (default 5)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def cmd(parent: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        sp.set_defaults(_handler=handler)
        return sp

    cmd(sub, "status", cmd_status, "Every consensus member and lock/router replica.")
    cmd(sub, "members", cmd_members, "Consensus cluster members.")
    g = cmd(sub, "get", cmd_get, "Read a key (or keys with --prefix).")
    g.add_argument("key")
    g.add_argument("--prefix", action="store_true")
    g.add_argument("--rev", type=int, default=0, help="read at this revision")
    pu = cmd(sub, "put", cmd_put, "Write a key.")
    pu.add_argument("key")
    pu.add_argument("value")
    pu.add_argument("--lease", type=parse_hex, default=0, help="lease id (hex)")
    d = cmd(sub, "del", cmd_del, "Delete a key (or keys with --prefix).")
    d.add_argument("key")
    d.add_argument("--prefix", action="store_true")
    w = cmd(sub, "watch", cmd_watch, "Print changes to a key (or prefix) until Ctrl-C.")
    w.add_argument("key")
    w.add_argument("--prefix", action="store_true")
    w.add_argument("--rev", type=int, default=0, help="start at this revision (default: next)")

    lk = sub.add_parser("lock", help="Distributed locks.", description="Distributed locks.")
    lsub = lk.add_subparsers(dest="lock_command", metavar="COMMAND", required=True)
    la = cmd(lsub, "acquire", cmd_lock_acquire, "Acquire a lock; hold it until Ctrl-C.")
    la.add_argument("name")
    la.add_argument("--ttl", type=int, default=10, help="session TTL in seconds (default 10)")
    la.add_argument("--shared", action="store_true", help="shared (read) mode")
    lr = cmd(lsub, "release", cmd_lock_release, "Release a lock held by a session.")
    lr.add_argument("name")
    lr.add_argument("--session", type=parse_hex, required=True, help="session id (hex)")
    li = cmd(lsub, "inspect", cmd_lock_inspect, "Holders and waiters of a lock.")
    li.add_argument("name")

    rt = sub.add_parser("router", help="Router rings.", description="Router rings.")
    rsub = rt.add_subparsers(dest="router_command", metavar="COMMAND", required=True)
    rr = cmd(rsub, "register", cmd_router_register, "Join a ring; stay until Ctrl-C.")
    rr.add_argument("ring")
    rr.add_argument("id")
    rr.add_argument("address")
    rr.add_argument("--weight", type=int, default=1)
    rr.add_argument("--ttl", type=int, default=10)
    rl = cmd(rsub, "lookup", cmd_router_lookup, "Members owning a key, owner first.")
    rl.add_argument("ring")
    rl.add_argument("key")
    rl.add_argument("-n", type=int, default=1, help="how many members (default 1)")
    rg = cmd(rsub, "ring", cmd_router_ring, "Members of a ring.")
    rg.add_argument("ring")
    return p


def describe(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name.lower().replace('_', ' ')}: {e.details()}"
    if isinstance(e, EtcdError):
        where = f" at {e.endpoint}" if e.endpoint else ""
        return f"{e.message}{where} ({e.code.name.lower().replace('_', ' ')})"
    return str(e) or type(e).__name__


async def _run(args: argparse.Namespace) -> int:
    ctx = Ctx(args)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, ctx.stop.set)
    handler: Handler = args._handler
    try:
        return await handler(ctx)
    finally:
        await ctx.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130
    except (CtlError, EtcdError, grpc.aio.AioRpcError, OSError, TimeoutError) as e:
        eprint(f"{PROG}: {describe(e)}")
        return 1
    except Exception as e:  # never a traceback
        eprint(f"{PROG}: unexpected error: {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())

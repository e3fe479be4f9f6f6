"""Client workloads that record a history (see history.py for the vocabulary).

Each workload runs a few concurrent *processes* (history.py: one operation in
flight each; after an ``info`` outcome the process is retired and a fresh one
takes its place). Register and set clients talk to the members over raw
gRPC stubs, with no client-side retries at all: an operation is sent once, so
its outcome is exactly what that one attempt proves.

How an error becomes an outcome:

- a read that errors changed nothing: ``fail``;
- a write that errors is ``info`` (it may have been applied: a timeout, a lost
  connection, a leader change in flight), except when the error proves it was
  never applied: the channel could not connect at all (UNAVAILABLE *before*
  sending: "failed to connect"), or the server rejected the request as invalid;
- a Txn whose compare failed is ``fail``, with no error.

Worker *i* is bound to member ``i mod n``, as a Jepsen client is bound to a
node, so every member, leader or follower, serves some clients; a retired
process's successor (a new process id) stays on its worker's member.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
import grpc.aio
import structlog

from synod.check.history import History, Op, Outcome
from synod.check.resource import FencedResource
from synod.client.etcd import EtcdClient
from synod.client.locks import LockSession
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.etcd.mvccpb import kv_pb2

log = structlog.get_logger("synod.check.workloads")

#: gRPC codes that prove a write was not applied (the server refused to look at it)
_NOT_APPLIED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


#: pause after an operation that ended in an error: a member that is down or has
#: no leader answers at once, and a client spinning on it would fill the history
#: with info operations (each one more unknown for the checker) and nothing else
ERROR_BACKOFF = 0.25


def _never_sent(e: grpc.aio.AioRpcError) -> bool:
    details = (e.details() or "").lower()
    return e.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details


def write_outcome(e: BaseException) -> Outcome:
    if isinstance(e, grpc.aio.AioRpcError) and (e.code() in _NOT_APPLIED or _never_sent(e)):
        return "fail"
    return "info"


def error_text(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return f"{type(e).__name__}: {e}"


class Recorder:
    """Hands out process ids and appends completed operations to the history."""

    def __init__(self, history: History):
        self.history = history
        self._next_process = 0

    def new_process(self) -> int:
        p = self._next_process
        self._next_process += 1
        return p

    def record(
        self,
        process: int,
        workload: str,
        f: str,
        key: str,
        value: Any,
        invoke: float,
        outcome: Outcome,
        result: Any = None,
        error: str = "",
    ) -> Op:
        op = Op(
            process=process,
            workload=workload,
            f=f,
            key=key,
            value=value,
            invoke=invoke,
            complete=time.monotonic(),
            outcome=outcome,
            result=result if outcome == "ok" else None,
            error=error,
        )
        self.history.ops.append(op)
        return op


class Channels:
    """One gRPC channel per consensus endpoint, shared by a run's workers."""

    def __init__(self, endpoints: Sequence[str]):
        self.endpoints = list(endpoints)
        self._channels = [grpc.aio.insecure_channel(e) for e in self.endpoints]

    def kv(self, node: int) -> rpc_pb2_grpc.KVStub:
        """A stub for member ``node mod n``."""
        return rpc_pb2_grpc.KVStub(self._channels[node % len(self._channels)])

    def lease(self, node: int) -> rpc_pb2_grpc.LeaseStub:
        """A Lease stub for member ``node mod n`` (the lease workload's)."""
        return rpc_pb2_grpc.LeaseStub(self._channels[node % len(self._channels)])

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close(None)


# --- registers ---------------------------------------------------------------------


async def read_key(
    rec: Recorder,
    ch: Channels,
    workload: str,
    timeout: float,
    process: int,
    node: int,
    key: str,
    result_of: Callable[[kv_pb2.KeyValue], Any],
) -> Op:
    """A linearizable Range of `key` on `node`, recorded as a "read" of `workload`:
    its result is `result_of(kv)`, None when the key is absent; a read never
    changes state, so an error is a "fail"."""
    t0 = time.monotonic()
    try:
        resp = await ch.kv(node).Range(rpc_pb2.RangeRequest(key=key.encode()), timeout=timeout)
    except grpc.aio.AioRpcError as e:
        return rec.record(process, workload, "read", key, None, t0, "fail", error=error_text(e))
    result = result_of(resp.kvs[0]) if resp.kvs else None
    return rec.record(process, workload, "read", key, None, t0, "ok", result)


@dataclass
class KeyPool:
    """A few active register keys; a key is retired after ``per_key`` invocations so
    no key's history grows past what the linearizability search handles quickly."""

    prefix: str
    active: int = 3
    per_key: int = 200
    _next: int = 0
    _counts: dict[str, int] = field(default_factory=dict)

    def pick(self, rng: random.Random) -> str:
        while len(self._counts) < self.active:
            self._counts[f"{self.prefix}/r{self._next}"] = 0
            self._next += 1
        key = rng.choice(sorted(self._counts))
        self._counts[key] += 1
        if self._counts[key] >= self.per_key:
            del self._counts[key]
        return key

    def used(self) -> list[str]:
        return [f"{self.prefix}/r{i}" for i in range(self._next)]


class RegisterWorkload:
    """Per-key registers: read (linearizable Range), write (Put), cas (Txn on value)."""

    name = "register"

    def __init__(
        self,
        recorder: Recorder,
        channels: Channels,
        prefix: str,
        rng: random.Random,
        *,
        workers: int = 4,
        timeout: float = 2.0,
        per_key: int = 200,
        values: int = 5,
        read_ratio: float = 0.4,
    ):
        self.rec = recorder
        self.ch = channels
        self.rng = rng
        self.workers = workers
        self.timeout = timeout
        self.values = values
        self.read_ratio = read_ratio
        self.keys = KeyPool(prefix, per_key=per_key)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._worker(i, stop) for i in range(self.workers)))

    async def _worker(self, node: int, stop: asyncio.Event) -> None:
        process = self.rec.new_process()
        write_share = (1 - self.read_ratio) / 2
        while not stop.is_set():
            key = self.keys.pick(self.rng)
            r = self.rng.random()
            if r < self.read_ratio:
                op = await self.read(process, node, key)
            elif r < self.read_ratio + write_share:
                op = await self.write(process, node, key, self.rng.randrange(self.values))
            else:
                a, b = self.rng.randrange(self.values), self.rng.randrange(self.values)
                op = await self.cas(process, node, key, a, b)
            if op.outcome == "info":
                process = self.rec.new_process()
            if op.error:
                await asyncio.sleep(ERROR_BACKOFF)

    async def read(self, process: int, node: int, key: str) -> Op:
        return await read_key(
            self.rec, self.ch, self.name, self.timeout, process, node, key,
            lambda kv: int(kv.value),
        )  # fmt: skip

    async def write(self, process: int, node: int, key: str, value: int) -> Op:
        t0 = time.monotonic()
        try:
            await self.ch.kv(node).Put(
                rpc_pb2.PutRequest(key=key.encode(), value=str(value).encode()),
                timeout=self.timeout,
            )
        except grpc.aio.AioRpcError as e:
            return self.rec.record(
                process, self.name, "write", key, value, t0, write_outcome(e), error=error_text(e)
            )
        return self.rec.record(process, self.name, "write", key, value, t0, "ok")

    async def cas(self, process: int, node: int, key: str, expected: int, new: int) -> Op:
        t0 = time.monotonic()
        k = key.encode()
        txn = rpc_pb2.TxnRequest(
            compare=[
                rpc_pb2.Compare(
                    key=k,
                    target=rpc_pb2.Compare.VALUE,
                    result=rpc_pb2.Compare.EQUAL,
                    value=str(expected).encode(),
                )
            ],
            success=[
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=str(new).encode()))
            ],
        )
        try:
            resp = await self.ch.kv(node).Txn(txn, timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            return self.rec.record(
                process, self.name, "cas", key, [expected, new], t0, write_outcome(e),
                error=error_text(e),
            )  # fmt: skip
        outcome: Outcome = "ok" if resp.succeeded else "fail"
        return self.rec.record(process, self.name, "cas", key, [expected, new], t0, outcome)

    async def final_reads(self, deadline: float) -> None:
        """One ok read of every key used, after healing (retrying until one succeeds)."""
        for key in self.keys.used():
            await until_ok(partial(self._final_read, key), deadline)

    async def _final_read(self, key: str, attempt: int) -> Op:
        return await self.read(self.rec.new_process(), attempt, key)


async def until_ok(attempt: Callable[[int], Awaitable[Op]], deadline: float) -> Op | None:
    """Call ``attempt(n)`` (n = 0, 1, ...: each on the next member) until one is ok."""
    n = 0
    while time.monotonic() < deadline:
        op = await attempt(n)
        if op.outcome == "ok":
            return op
        n += 1
        await asyncio.sleep(0.2)
    return None


# --- set -------------------------------------------------------------------------


class SetWorkload:
    """Adds of unique elements (one key per element), then one final read of them all."""

    name = "set"

    def __init__(
        self,
        recorder: Recorder,
        channels: Channels,
        prefix: str,
        *,
        workers: int = 2,
        timeout: float = 2.0,
    ):
        self.rec = recorder
        self.ch = channels
        self.prefix = prefix
        self.workers = workers
        self.timeout = timeout
        self._next = 0

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._worker(i, stop) for i in range(self.workers)))

    async def _worker(self, node: int, stop: asyncio.Event) -> None:
        process = self.rec.new_process()
        while not stop.is_set():
            element = self._next
            self._next += 1
            t0 = time.monotonic()
            key = f"{self.prefix}/e{element:08d}".encode()
            try:
                await self.ch.kv(node).Put(rpc_pb2.PutRequest(key=key), timeout=self.timeout)
            except grpc.aio.AioRpcError as e:
                op = self.rec.record(
                    process, self.name, "add", "set", element, t0, write_outcome(e),
                    error=error_text(e),
                )  # fmt: skip
                if op.outcome == "info":
                    process = self.rec.new_process()
                await asyncio.sleep(ERROR_BACKOFF)
                continue
            self.rec.record(process, self.name, "add", "set", element, t0, "ok")

    async def read(self, process: int, node: int) -> Op:
        t0 = time.monotonic()
        start = f"{self.prefix}/".encode()
        end = f"{self.prefix}0".encode()  # '0' follows '/': the prefix's range end
        try:
            resp = await self.ch.kv(node).Range(
                rpc_pb2.RangeRequest(key=start, range_end=end, keys_only=True),
                timeout=self.timeout * 5,
            )
        except grpc.aio.AioRpcError as e:
            return self.rec.record(
                process, self.name, "read", "set", None, t0, "fail", error=error_text(e)
            )
        elements = sorted(int(kv.key[len(start) + 1 :]) for kv in resp.kvs)
        return self.rec.record(process, self.name, "read", "set", None, t0, "ok", elements)

    async def final_reads(self, deadline: float) -> None:
        await until_ok(lambda n: self.read(self.rec.new_process(), n), deadline)


# --- watches ---------------------------------------------------------------------


class WatchWorkload:
    """Watchers of the whole keyspace from one start revision, one per member first.

    Each records every event it receives, in order: (revision, key, put or
    delete), the revision being the key's mod_revision (for a delete, the
    deleting revision). A broken stream is resumed by the client
    (synod.client) from the revision after the last one seen, on the next
    member, so a watcher is one log from start to end. After healing every
    watcher must reach the store's final revision; one that does is known to
    have received everything through it (``end_revision``).
    """

    name = "watch"

    def __init__(self, endpoints: Sequence[str], *, watchers: int = 3):
        self.endpoints = list(endpoints)
        self.events: dict[str, list[dict[str, Any]]] = {f"w{i}": [] for i in range(watchers)}
        self.start_revision = 0
        self.final_revision = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[EtcdClient] = []

    async def start(self) -> None:
        async with EtcdClient(self.endpoints, timeout=10) as c:
            resp = await c.get(b"\0", range_end=b"\0", count_only=True)
            self.start_revision = int(resp.header.revision) + 1
        for i, name in enumerate(self.events):
            rotated = self.endpoints[i:] + self.endpoints[:i]
            client = EtcdClient(rotated, timeout=5)
            self._clients.append(client)
            self._tasks.append(asyncio.create_task(self._watch(client, name), name=f"watch-{name}"))

    async def _watch(self, client: EtcdClient, name: str) -> None:
        log_ = self.events[name]
        async with client.watch(b"\0", range_end=b"\0", start_revision=self.start_revision) as w:
            async for resp in w:
                for ev in resp.events:
                    log_.append(
                        {
                            "revision": int(ev.kv.mod_revision),
                            "key": ev.kv.key.decode(errors="backslashreplace"),
                            "type": "delete" if ev.type == kv_pb2.Event.DELETE else "put",
                        }
                    )

    def _reached(self, name: str) -> bool:
        log_ = self.events[name]
        return bool(log_) and log_[-1]["revision"] >= self.final_revision

    async def finish(self, final_revision: int, deadline: float) -> None:
        """Wait (until ``deadline``) for every watcher to reach ``final_revision``, then stop."""
        self.final_revision = final_revision
        while time.monotonic() < deadline and not all(map(self._reached, self.events)):
            await asyncio.sleep(0.1)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in self._clients:
            with contextlib.suppress(Exception):
                await c.close()

    def records(self) -> list[dict[str, Any]]:
        """One record per watcher, shaped like synod.check.watch_checker.WatchLog."""
        return [
            {
                "watcher": name,
                "start_revision": self.start_revision,
                "events": events,
                "prefix": "",
                "end_revision": self.final_revision if self._reached(name) else None,
            }
            for name, events in self.events.items()
        ]


# --- mutex -----------------------------------------------------------------------


#: lock-service answers that prove an acquire or release did nothing
_REFUSED = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
}


class MutexWorkload:
    """Holders of one exclusive lock (through the lock service) write to a fenced resource.

    Each process: acquire -> write (1-2 times, with the token) -> release. A
    process whose acquire or release ends ``info`` is retired with its session.
    """

    name = "mutex"

    def __init__(
        self,
        recorder: Recorder,
        lock_endpoints: Sequence[str],
        lock_name: str,
        resource: FencedResource,
        rng: random.Random,
        *,
        workers: int = 3,
        ttl: int = 4,
        timeout: float = 5.0,
    ):
        self.rec = recorder
        self.endpoints = list(lock_endpoints)
        self.lock_name = lock_name
        self.resource = resource
        self.rng = rng
        self.workers = workers
        self.ttl = ttl
        self.timeout = timeout
        self._closing: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._worker(i, stop) for i in range(self.workers)))

    async def _open(self, i: int, stop: asyncio.Event) -> LockSession | None:
        while not stop.is_set():
            rotated = (
                self.endpoints[i % len(self.endpoints) :]
                + self.endpoints[: i % len(self.endpoints)]
            )
            session = LockSession(rotated, ttl=self.ttl, timeout=self.timeout)
            try:
                await session.open()
                return session
            except grpc.aio.AioRpcError:
                await session.close()
                await asyncio.sleep(0.2)
        return None

    async def _worker(self, i: int, stop: asyncio.Event) -> None:
        name = self.lock_name
        while not stop.is_set():
            session = await self._open(i, stop)
            if session is None:
                return
            process = self.rec.new_process()
            try:
                while not stop.is_set():
                    t0 = time.monotonic()
                    try:
                        held = await session.acquire(name, timeout=self.timeout)
                    except grpc.aio.AioRpcError as e:
                        # A refusal (session gone, bad request) proves we hold nothing;
                        # otherwise we may be queued or even hold the lock: unknown.
                        outcome: Outcome = "fail" if e.code() in _REFUSED else "info"
                        self.rec.record(process, self.name, "acquire", name, None, t0, outcome,
                                        error=error_text(e))  # fmt: skip
                        break
                    self.rec.record(process, self.name, "acquire", name, None, t0, "ok", held.token)
                    for _ in range(self.rng.randrange(1, 3)):
                        t1 = time.monotonic()
                        accepted = self.resource.write(held.token)
                        self.rec.record(
                            process, self.name, "write", name, held.token, t1,
                            "ok" if accepted else "fail",
                            error="" if accepted else "stale token refused",
                        )  # fmt: skip
                    t2 = time.monotonic()
                    try:
                        await session.release(held)
                    except grpc.aio.AioRpcError as e:
                        outcome = "fail" if e.code() in _REFUSED else "info"
                        self.rec.record(process, self.name, "release", name, held.token, t2,
                                        outcome, error=error_text(e))  # fmt: skip
                        break
                    self.rec.record(process, self.name, "release", name, held.token, t2, "ok")
                    if session.lost.is_set():
                        break
            finally:
                # Do not wait on a dead session's close: it is the lease's TTL's job.
                task = asyncio.create_task(_close_quietly(session))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def drain(self) -> None:
        await asyncio.gather(*self._closing, return_exceptions=True)


async def _close_quietly(session: LockSession) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(session.close(), 5)

"""Acquiring and releasing locks against the consensus service (through the etcd v3 API).

`LockCore` holds no lock state: everything is in keys under the namespace,
so any replica can serve any call, and a replica that dies leaves nothing
behind that outlives its sessions (every key carries the session's lease).

Acquire, step by step:
1. In one Txn: create `NAME/<session hex>` with the session's lease if it is
   absent, and read it back either way. A retry (on this replica or another)
   finds the same key, so it never queues twice and gets the same token.
2. Read the lock's keys at the Txn's revision R and decide with rules.py.
3. Granted: the fencing token is the key's create revision. Otherwise watch
   just the keys rules.py names, from R + 1 (so nothing between the read and
   the watch is missed), and go back to 2 when one of them changes.
4. A caller that gives up (deadline, cancel, disconnect) deletes its key if it
   is still waiting, so it blocks no one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import structlog

from synod.client.errors import EtcdError, NotFound
from synod.client.etcd import EtcdClient
from synod.client.kv import compare_create_revision, op_get, op_put
from synod.client.watch import Watcher
from synod.etcd.etcdserverpb import rpc_pb2
from synod.lock import rules
from synod.lock.rules import LockKey, Mode

log = structlog.get_logger("synod.lock")


class LockError(Exception):
    """A request the service refuses, with the status and text the caller gets."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Grant:
    key: bytes
    token: int
    session: int
    mode: Mode
    limit: int


@dataclass
class LockStats:
    """Counters the metrics module exports."""

    grants: int = 0
    waits: int = 0
    wakeups: int = 0
    sessions_opened: int = 0


class LockCore:
    def __init__(
        self,
        client: EtcdClient,
        namespace: str = "",
        on_wait_done: Callable[[float], None] | None = None,
    ):
        self.client = client
        self.namespace = namespace.encode()
        self.stats = LockStats()
        #: set when the replica stops: waiters are answered UNAVAILABLE and keep their place
        self.shutting_down = False
        self._on_wait_done = on_wait_done

    # -- names and keys -------------------------------------------------------------

    def prefix(self, name: str) -> bytes:
        if not name:
            raise LockError(grpc.StatusCode.INVALID_ARGUMENT, "lock name is empty")
        if "\x00" in name:
            raise LockError(grpc.StatusCode.INVALID_ARGUMENT, "lock name contains a NUL byte")
        return self.namespace + name.encode() + b"/"

    def key_for(self, name: str, session: int) -> bytes:
        if session <= 0:
            raise LockError(grpc.StatusCode.INVALID_ARGUMENT, f"session id {session} is not valid")
        return self.prefix(name) + format(session, "x").encode()

    async def keys(self, name: str, revision: int = 0) -> tuple[list[LockKey], int]:
        """The lock's keys in line order (as of `revision` if given), and the store's
        current revision (the response header's, which may be past `revision`)."""
        resp = await self.client.get(
            self.prefix(name), prefix=True, revision=revision, sort=("create", "ascend")
        )
        keys = [
            rules.decode(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.lease)
            for kv in resp.kvs
        ]
        return keys, resp.header.revision

    # -- sessions ---------------------------------------------------------------------

    async def open_session(self, ttl: int) -> tuple[int, int]:
        if ttl <= 0:
            raise LockError(grpc.StatusCode.INVALID_ARGUMENT, f"ttl_seconds must be > 0, got {ttl}")
        granted = await self.client.grant(ttl)
        self.stats.sessions_opened += 1
        return granted

    async def keepalive(self, session: int) -> int:
        try:
            return int((await self.client.keep_alive_once(session)).TTL)
        except NotFound:
            return 0

    async def close_session(self, session: int) -> None:
        try:
            await self.client.revoke(session)
        except NotFound:
            raise LockError(
                grpc.StatusCode.NOT_FOUND, f"session {session:x} does not exist (expired or closed)"
            ) from None

    # -- acquire ------------------------------------------------------------------------

    async def acquire(self, name: str, session: int, mode: Mode, limit: int, wait: bool) -> Grant:
        limit = max(1, limit)
        if mode == Mode.SHARED and limit > 1:
            raise LockError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "limit applies to EXCLUSIVE (semaphore) locks only",
            )
        key = self.key_for(name, session)
        mine, revision, created = await self._enqueue(key, session, mode, limit)
        started = time.monotonic()
        waited = False
        try:
            while True:
                # Read at `revision` and keep it: the Range's header carries the
                # store's *current* revision, and watching from there would miss
                # a release between the two (the waiter would sleep for ever).
                keys, _ = await self.keys(name, revision)
                ahead = [k for k in keys if k.create_revision < mine.create_revision]
                me = next((k for k in keys if k.key == key), None)
                if me is None or me.create_revision != mine.create_revision:
                    raise LockError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"session {session:x} lost its place for {name!r} "
                        "(session expired or the lock was released meanwhile)",
                    )
                if rules.is_granted(me, ahead):
                    break
                if not wait:
                    holders, _ = rules.holders_and_waiters(keys)
                    raise LockError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"{name!r} is held by "
                        + ", ".join(
                            f"session {h.lease:x} (token {h.create_revision})" for h in holders
                        ),
                    )
                if not waited:
                    waited = True
                    self.stats.waits += 1
                revision = await self._wait_for_change(rules.what_to_watch(me, ahead), revision)
                self.stats.wakeups += 1
        except BaseException:
            # Giving up (deadline, cancel, disconnect, or TryAcquire finding it
            # taken): leave the line at once. A TryAcquire leaves alone a place
            # an earlier Acquire of the same session made.
            # A replica that is shutting down keeps waiters' places instead: they
            # belong to the session, and the client's retry on another replica
            # finds its place there.
            if (created or wait) and not self.shutting_down:
                await self._leave_line(key, mine.create_revision)
            raise
        if waited:
            if self._on_wait_done:
                self._on_wait_done(time.monotonic() - started)
            if limit > 1 and mode == Mode.EXCLUSIVE:
                # The mark that moves the next semaphore waiter to the front (rules.py).
                await self.client.txn(
                    [compare_create_revision(key, "==", mine.create_revision)],
                    [op_put(key, rules.encode_value(mode, limit, granted=True), lease=session)],
                )
        self.stats.grants += 1
        return Grant(key, mine.create_revision, session, mode, limit)

    async def _enqueue(
        self, key: bytes, session: int, mode: Mode, limit: int
    ) -> tuple[LockKey, int, bool]:
        """Create our key unless it exists; returns it, the revision, and whether we made it."""
        value = rules.encode_value(mode, limit)
        try:
            resp = await self.client.txn(
                [compare_create_revision(key, "==", 0)],
                [op_put(key, value, lease=session), op_get(key)],
                [op_get(key)],
            )
        except NotFound:
            raise LockError(
                grpc.StatusCode.NOT_FOUND, f"session {session:x} does not exist (expired or closed)"
            ) from None
        rng = (
            resp.responses[-1].response_range
            if resp.succeeded
            else resp.responses[0].response_range
        )
        kv = rng.kvs[0]
        mine = rules.decode(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.lease)
        if not resp.succeeded and (
            mine.mode != mode or (mode == Mode.EXCLUSIVE and mine.limit != limit)
        ):
            raise LockError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"session {session:x} already holds or waits for this lock as "
                f"{mine.mode.name} (limit {mine.limit})",
            )
        return mine, resp.header.revision, resp.succeeded

    async def _wait_for_change(self, what: rules.Wait, after: int) -> int:
        """Block until one watched key is deleted (or marked); returns the revision seen."""
        watchers = [
            self.client.watch(k, start_revision=after + 1, filters=() if what.marks else ("NOPUT",))
            for k in what.keys
        ]
        try:

            async def first(w: Watcher) -> int:
                async for resp in w:
                    return int(resp.header.revision)
                return after

            tasks = [asyncio.ensure_future(first(w)) for w in watchers]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            return max(t.result() for t in done)
        finally:
            for w in watchers:
                await w.aclose()

    async def _leave_line(self, key: bytes, create_revision: int) -> None:
        try:
            await asyncio.shield(
                self.client.txn(
                    [compare_create_revision(key, "==", create_revision)],
                    [rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))],
                )
            )
        except (EtcdError, asyncio.CancelledError) as e:
            # The session lease still bounds how long the key can stay.
            log.warning("lock_leave_failed", key=key.decode(errors="replace"), error=repr(e))

    # -- release, inspect, validate ---------------------------------------------------------

    async def release(self, name: str, session: int, key: bytes) -> None:
        if not key:
            key = self.key_for(name, session)
        elif name and not key.startswith(self.prefix(name)):
            raise LockError(
                grpc.StatusCode.INVALID_ARGUMENT, f"key {key!r} is not a key of lock {name!r}"
            )
        resp = await self.client.delete(key)
        if resp.deleted == 0:
            raise LockError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no lock held or awaited at {key.decode(errors='replace')!r}",
            )

    async def inspect(self, name: str) -> tuple[list[LockKey], list[LockKey], int]:
        keys, revision = await self.keys(name)
        holders, waiters = rules.holders_and_waiters(keys)
        return holders, waiters, revision

    async def validate(self, name: str, token: int) -> LockKey | None:
        holders, _, _ = await self.inspect(name)
        return next((h for h in holders if h.create_revision == token), None)

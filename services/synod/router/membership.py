"""Ring membership kept in the consensus service (etcd v3 API), and the rings built from it.

Key layout (documented in docs/router.md), with ``P = <namespace>/router/``:

* ``P<ring>/members/<id>`` -> JSON ``{"address": "host:port", "weight": 1,
  "metadata": {...}}``, normally attached to a lease;
* ``P<ring>/config`` -> JSON object (``{}``): declares the ring, so that it stays known
  (empty, UNAVAILABLE for forwarding) after its last member left;
* ``P<ring>/table`` -> the slot table (binary, docs/router.md "The stored table"):
  which member owns which slot. It is the ring that every answer uses.

`Directory` loads every key at one revision (a prefix Range), then watches the prefix
from the next revision. When a ring's registered members (ids and weights) differ from
its stored table, the directory computes the next table with `ring.transition` and
writes it back with a compare-and-swap on the table's mod revision: every router
replica may try, one wins, and all of them then serve the table they read. Serving only
stored tables is what makes each change of the ring a single minimal transition, the
same for every replica and client, whatever order or speed they saw the changes in.

The rings and the revision they reflect are swapped in together, so an answer computed
from `Directory.rings` and `Directory.revision` is always consistent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from synod.client.errors import Compacted, EtcdError
from synod.client.etcd import EtcdClient
from synod.client.kv import compare_mod_revision, compare_version, op_delete, op_put
from synod.etcd.mvccpb import kv_pb2
from synod.router.metrics import RouterMetrics
from synod.router.ring import (
    MAX_WEIGHT,
    Member,
    Ring,
    RingParams,
    SlotTable,
    TableError,
    transition,
)

log = structlog.get_logger("synod.router")

MEMBERS = "members"
CONFIG = "config"
TABLE = "table"


class InvalidMember(ValueError):
    pass


@dataclass(frozen=True)
class MemberRecord:
    id: str
    address: str
    weight: int
    metadata: dict[str, str]
    lease: int = 0
    mod_revision: int = 0

    def to_json(self) -> bytes:
        return encode_member(self.address, self.weight, self.metadata)


def encode_member(address: str, weight: int, metadata: dict[str, str]) -> bytes:
    return json.dumps(
        {"address": address, "weight": weight, "metadata": dict(sorted(metadata.items()))},
        separators=(",", ":"),
    ).encode()


def decode_member(member_id: str, value: bytes, lease: int = 0, mod: int = 0) -> MemberRecord:
    """Parse a member key's value; raises InvalidMember with the reason."""
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidMember(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidMember("not a JSON object")
    address = doc.get("address")
    if not isinstance(address, str) or not address:
        raise InvalidMember("address must be a non-empty string")
    weight = doc.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
        raise InvalidMember(f"weight must be an integer in 1..{MAX_WEIGHT}")
    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InvalidMember("metadata must be an object of strings")
    return MemberRecord(member_id, address, weight, dict(metadata), lease, mod)


def valid_ring_name(name: str) -> bool:
    return bool(name) and "/" not in name and len(name) <= 256


@dataclass
class RingSnapshot:
    """One ring at `revision`: the members of its stored table and its placement.

    ``members`` are the table's members with their registration records; a member that
    left (its key is gone) stays until the next table, with its last known record, or an
    empty address if this replica never saw one. ``ring`` is None when the ring has no
    table (no members, or the first table is being written).
    """

    name: str
    members: dict[str, MemberRecord]
    ring: Ring | None
    revision: int
    declared: bool = False
    #: members in table order (sorted by id bytes), as `GetRing` lists them
    ordered: list[MemberRecord] = field(default_factory=list)
    #: the stored table's bytes, for clients that compute placement locally
    table: bytes = b""
    #: ids whose member key exists at `revision` (registered, maybe not yet in the table)
    registered: frozenset[str] = frozenset()


@dataclass
class _Raw:
    """Keys of one ring as last seen (before building)."""

    members: dict[str, MemberRecord] = field(default_factory=dict)
    declared: bool = False
    table: bytes | None = None
    table_mod_revision: int = 0
    #: last known records of members whose key was deleted (they may still be in the table)
    departed: dict[str, MemberRecord] = field(default_factory=dict)


@dataclass
class _Decoded:
    """The decoded stored table of one ring and its lookup structure (cached per value)."""

    mod_revision: int
    table: SlotTable | None
    ring: Ring | None
    error: str = ""


class Directory:
    """Every ring under the namespace, kept current by a watch; see module docstring."""

    def __init__(
        self,
        client: EtcdClient,
        namespace: str,
        metrics: RouterMetrics,
        params: RingParams | None = None,
    ) -> None:
        self.client = client
        self.prefix = f"{namespace}/router/"
        self.metrics = metrics
        self.params = params if params is not None else RingParams()
        self.rings: dict[str, RingSnapshot] = {}
        self.revision = 0
        self.ready = asyncio.Event()
        self._raw: dict[str, _Raw] = {}
        self._decoded: dict[str, _Decoded] = {}
        self._writing: dict[str, asyncio.Task[None]] = {}
        self._rebuild_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- keys ----------------------------------------------------------------------

    def member_key(self, ring: str, member_id: str) -> str:
        return f"{self.prefix}{ring}/{MEMBERS}/{member_id}"

    def config_key(self, ring: str) -> str:
        return f"{self.prefix}{ring}/{CONFIG}"

    def table_key(self, ring: str) -> str:
        return f"{self.prefix}{ring}/{TABLE}"

    def _parse_key(self, key: bytes) -> tuple[str, str, str] | None:
        """(ring, kind, member id) — kind is MEMBERS, CONFIG or TABLE — else None."""
        try:
            rest = key.decode("utf-8")[len(self.prefix) :]
        except UnicodeDecodeError:
            return None
        ring, sep, tail = rest.partition("/")
        if not sep or not valid_ring_name(ring):
            return None
        if tail in (CONFIG, TABLE):
            return ring, tail, ""
        kind, sep, member_id = tail.partition("/")
        if kind != MEMBERS or not sep or not member_id:
            return None
        return ring, MEMBERS, member_id

    # --- change notification ---------------------------------------------------------

    def changed_event(self) -> asyncio.Event:
        """An event set at the next swap of rings (any ring). Take it before reading."""
        return self._changed

    def _notify(self) -> None:
        old, self._changed = self._changed, asyncio.Event()
        old.set()

    async def wait_for(
        self, ring: str, predicate: Callable[[RingSnapshot | None], bool], timeout: float
    ) -> int | None:
        """Wait until ``predicate(snapshot of ring)`` holds; its revision, or None on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    snap, rev = self.snapshot(ring)
                    if predicate(snap):
                        return rev
                    await changed.wait()
        except TimeoutError:
            return None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="router-directory")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._writing.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._writing.clear()

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                rev = await self._load()
                attempt = 0
                await self._follow(rev)
            except asyncio.CancelledError:
                raise
            except Compacted as e:
                log.warning("router_watch_compacted", error=str(e))
            except EtcdError as e:
                log.warning("router_directory_error", error=str(e))
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
                attempt += 1
            except Exception as e:  # noqa: BLE001 - keep serving the last good view
                log.error("router_directory_failed", error=repr(e))
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
                attempt += 1

    async def _load(self) -> int:
        resp = await self.client.get(self.prefix, prefix=True, timeout=10.0)
        rev = int(resp.header.revision)
        raw: dict[str, _Raw] = {}
        for kv in resp.kvs:
            self._apply_put(raw, kv)
        for name, entry in raw.items():  # keep what we knew of members that left
            old = self._raw.get(name)
            if old is not None:
                entry.departed = {**old.departed, **old.members}
        self._raw = raw
        await self._rebuild(set(raw) | set(self.rings), rev)
        if not self.ready.is_set():
            self.ready.set()
        log.info("router_rings_loaded", revision=rev, rings=len(self.rings))
        return rev

    async def _follow(self, rev: int) -> None:
        async with self.client.watch(self.prefix, prefix=True, start_revision=rev + 1) as w:
            async for resp in w:
                touched: set[str] = set()
                last = self.revision
                for ev in resp.events:
                    last = max(last, int(ev.kv.mod_revision))
                    if ev.type == kv_pb2.Event.PUT:
                        ring = self._apply_put(self._raw, ev.kv)
                    else:
                        ring = self._apply_delete(self._raw, ev.kv)
                    if ring is not None:
                        touched.add(ring)
                await self._rebuild(touched, last)

    def _apply_put(self, raw: dict[str, _Raw], kv: kv_pb2.KeyValue) -> str | None:
        parsed = self._parse_key(kv.key)
        if parsed is None:
            return None
        ring, kind, member_id = parsed
        entry = raw.setdefault(ring, _Raw())
        if kind == CONFIG:
            entry.declared = True
            return ring
        if kind == TABLE:
            entry.table, entry.table_mod_revision = bytes(kv.value), int(kv.mod_revision)
            return ring
        try:
            rec = decode_member(member_id, kv.value, int(kv.lease), int(kv.mod_revision))
        except InvalidMember as e:
            self.metrics.invalid_members.inc()
            log.warning("router_invalid_member", key=kv.key.decode(errors="replace"), error=str(e))
            gone = entry.members.pop(member_id, None)
            if gone is not None:
                entry.departed[member_id] = gone
            return ring
        entry.members[member_id] = rec
        entry.departed.pop(member_id, None)
        return ring

    def _apply_delete(self, raw: dict[str, _Raw], kv: kv_pb2.KeyValue) -> str | None:
        parsed = self._parse_key(kv.key)
        if parsed is None:
            return None
        ring, kind, member_id = parsed
        entry = raw.get(ring)
        if entry is None:
            return ring
        if kind == CONFIG:
            entry.declared = False
        elif kind == TABLE:
            entry.table, entry.table_mod_revision = None, 0
        else:
            gone = entry.members.pop(member_id, None)
            if gone is not None:
                entry.departed[member_id] = gone
        if not entry.declared and not entry.members and entry.table is None:
            del raw[ring]
        return ring

    # --- building and swapping ------------------------------------------------------------

    async def _decode(self, name: str, entry: _Raw) -> _Decoded:
        """The stored table of ``name``, decoded once per mod revision (off the loop)."""
        cached = self._decoded.get(name)
        if entry.table is None:
            return _Decoded(0, None, None)
        if cached is not None and cached.mod_revision == entry.table_mod_revision:
            return cached
        data = entry.table

        def work() -> _Decoded:
            try:
                table = SlotTable.decode(data)
            except TableError as e:
                return _Decoded(entry.table_mod_revision, None, None, str(e))
            return _Decoded(entry.table_mod_revision, table, Ring(table))

        started = time.perf_counter()
        decoded = await asyncio.get_running_loop().run_in_executor(None, work)
        self.metrics.rebuild_seconds.observe(time.perf_counter() - started)
        if decoded.error:
            log.error(
                "router_table_corrupt",
                key=self.table_key(name),
                mod_revision=entry.table_mod_revision,
                error=decoded.error,
            )
        self._decoded[name] = decoded
        return decoded

    async def _rebuild(self, names: Iterable[str], revision: int) -> None:
        """Rebuild the rings in `names` from the raw keys, then swap them in at `revision`."""
        async with self._rebuild_lock:
            built: dict[str, RingSnapshot | None] = {}
            for name in sorted(names):
                entry = self._raw.get(name)
                if entry is None:
                    built[name] = None
                    self._decoded.pop(name, None)
                    continue
                decoded = await self._decode(name, entry)
                built[name] = self._snapshot(name, entry, decoded, revision)
                self._maybe_write(name, entry, decoded)
            self._swap(built, revision)

    def _snapshot(self, name: str, entry: _Raw, decoded: _Decoded, revision: int) -> RingSnapshot:
        members: dict[str, MemberRecord] = {}
        ordered: list[MemberRecord] = []
        if decoded.table is not None:
            for m in decoded.table.members:
                rec = entry.members.get(m.id) or entry.departed.get(m.id)
                if rec is None:
                    rec = MemberRecord(m.id, "", m.weight, {})
                members[m.id] = rec
                ordered.append(rec)
            entry.departed = {k: v for k, v in entry.departed.items() if k in members}
        else:
            entry.departed = {}
        return RingSnapshot(
            name,
            members,
            decoded.ring,
            revision,
            entry.declared,
            ordered,
            entry.table if decoded.table is not None and entry.table is not None else b"",
            frozenset(entry.members),
        )

    def _swap(self, built: dict[str, RingSnapshot | None], revision: int) -> None:
        # Synchronous, so no answer sees some rings new and others old.
        for name, snap in built.items():
            if snap is None:
                self.rings.pop(name, None)
                for gauge in (self.metrics.ring_members, self.metrics.ring_revision):
                    try:
                        gauge.remove(name)
                    except KeyError:
                        pass
                continue
            self.rings[name] = snap
            self.metrics.ring_members.labels(name).set(len(snap.members))
            self.metrics.ring_revision.labels(name).set(revision)
        if revision > self.revision:
            self.revision = revision
        self.metrics.revision.set(self.revision)
        if built:
            log.info(
                "router_rings_rebuilt",
                revision=revision,
                rings={n: (len(s.members) if s else None) for n, s in built.items()},
            )
        self._notify()

    # --- carrying the table forward ---------------------------------------------------------

    def _maybe_write(self, name: str, entry: _Raw, decoded: _Decoded) -> None:
        """Start writing the next table if the registered members differ from the stored one."""
        want = {m.id: m.weight for m in entry.members.values()}
        have = decoded.table.weights() if decoded.table is not None else {}
        if want == have and not decoded.error:
            return
        if name in self._writing:
            return  # the write in flight ends in a watch event, which brings us back here
        task = asyncio.get_running_loop().create_task(
            self._write_table(name, decoded.table, want, entry.table_mod_revision),
            name=f"router-table-{name}",
        )
        self._writing[name] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._writing.get(name) is t:  # a retry may have started a newer task
                del self._writing[name]

        task.add_done_callback(done)

    async def _write_table(
        self, name: str, prev: SlotTable | None, want: dict[str, int], mod_revision: int
    ) -> None:
        key = self.table_key(name)
        guard = (
            compare_mod_revision(key, "==", mod_revision)
            if mod_revision
            else compare_version(key, "==", 0)
        )
        try:
            if want:
                members = [Member(i, w) for i, w in want.items()]
                params = prev.params if prev is not None else self.params
                table = await asyncio.get_running_loop().run_in_executor(
                    None, transition, prev, members, params
                )
                resp = await self.client.txn([guard], [op_put(key, table.encode())])
            else:
                resp = await self.client.txn([guard], [op_delete(key)])
        except asyncio.CancelledError:
            raise
        except (EtcdError, ValueError) as e:
            log.warning("router_table_write_failed", ring=name, error=str(e))
            self.metrics.table_writes.labels(name, "error").inc()
            await asyncio.sleep(0.2)
            if self._writing.get(name) is asyncio.current_task():
                del self._writing[name]
            await self._rebuild([name], self.revision)  # look again: maybe someone else did
            return
        outcome = "written" if resp.succeeded else "lost_race"
        self.metrics.table_writes.labels(name, outcome).inc()
        log.info(
            "router_table_written" if resp.succeeded else "router_table_write_lost",
            ring=name,
            members=len(want),
            revision=int(resp.header.revision),
        )

    # --- reads -----------------------------------------------------------------------

    def snapshot(self, name: str) -> tuple[RingSnapshot | None, int]:
        return self.rings.get(name), self.revision

    def spec(self, name: str) -> dict[str, Any] | None:
        snap = self.rings.get(name)
        if snap is None or snap.ring is None:
            return None
        return snap.ring.to_spec()

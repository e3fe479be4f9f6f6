"""Ring membership kept in the consensus service (etcd v3 API), and the rings built from it.

Key layout (documented in docs/router.md), with ``P = <namespace>/router/``:

* ``P<ring>/members/<id>`` -> JSON ``{"address": "host:port", "weight": 1,
  "metadata": {...}}``, normally attached to a lease;
* ``P<ring>/config`` -> JSON object (``{}``): declares the ring, so that it stays known
  (empty, UNAVAILABLE for forwarding) after its last member left.

`Directory` loads every ring at one revision (a prefix Range), then watches the prefix
from the next revision and rebuilds the rings an event batch touched. The rings and the
revision they reflect are swapped in together, so an answer computed from
`Directory.rings` and `Directory.revision` is always consistent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from synod.client.errors import Compacted, EtcdError
from synod.client.etcd import EtcdClient
from synod.etcd.mvccpb import kv_pb2
from synod.router.metrics import RouterMetrics
from synod.router.ring import MAX_WEIGHT, Member, Ring, RingParams

log = structlog.get_logger("synod.router")

MEMBERS = "members"
CONFIG = "config"


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
    """One ring at `revision`: its members and, unless empty, the placement table."""

    name: str
    members: dict[str, MemberRecord]
    ring: Ring | None
    revision: int
    declared: bool = False
    #: members in the placement order of `ring.to_spec()` (sorted by id bytes)
    ordered: list[MemberRecord] = field(default_factory=list)


@dataclass
class _Raw:
    """Keys of one ring as last seen (before building)."""

    members: dict[str, MemberRecord] = field(default_factory=dict)
    declared: bool = False


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
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- keys ----------------------------------------------------------------------

    def member_key(self, ring: str, member_id: str) -> str:
        return f"{self.prefix}{ring}/{MEMBERS}/{member_id}"

    def config_key(self, ring: str) -> str:
        return f"{self.prefix}{ring}/{CONFIG}"

    def _parse_key(self, key: bytes) -> tuple[str, str | None] | None:
        """(ring, member id) for a member key, (ring, None) for a config key, else None."""
        try:
            rest = key.decode("utf-8")[len(self.prefix) :]
        except UnicodeDecodeError:
            return None
        ring, sep, tail = rest.partition("/")
        if not sep or not valid_ring_name(ring):
            return None
        if tail == CONFIG:
            return ring, None
        kind, sep, member_id = tail.partition("/")
        if kind != MEMBERS or not sep or not member_id:
            return None
        return ring, member_id

    # --- change notification ---------------------------------------------------------

    def changed_event(self) -> asyncio.Event:
        """An event set at the next swap of rings (any ring). Take it before reading."""
        return self._changed

    def _notify(self) -> None:
        old, self._changed = self._changed, asyncio.Event()
        old.set()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="router-directory")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

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
                        ring = self._apply_delete(self._raw, ev.kv.key)
                    if ring is not None:
                        touched.add(ring)
                await self._rebuild(touched, last)

    def _apply_put(self, raw: dict[str, _Raw], kv: kv_pb2.KeyValue) -> str | None:
        parsed = self._parse_key(kv.key)
        if parsed is None:
            return None
        ring, member_id = parsed
        entry = raw.setdefault(ring, _Raw())
        if member_id is None:
            entry.declared = True
            return ring
        try:
            rec = decode_member(member_id, kv.value, int(kv.lease), int(kv.mod_revision))
        except InvalidMember as e:
            self.metrics.invalid_members.inc()
            log.warning("router_invalid_member", key=kv.key.decode(errors="replace"), error=str(e))
            entry.members.pop(member_id, None)
            return ring
        entry.members[member_id] = rec
        return ring

    def _apply_delete(self, raw: dict[str, _Raw], key: bytes) -> str | None:
        parsed = self._parse_key(key)
        if parsed is None:
            return None
        ring, member_id = parsed
        entry = raw.get(ring)
        if entry is None:
            return ring
        if member_id is None:
            entry.declared = False
        else:
            entry.members.pop(member_id, None)
        if not entry.declared and not entry.members:
            del raw[ring]
        return ring

    async def _rebuild(self, names: Iterable[str], revision: int) -> None:
        """Build the rings in `names` from the raw keys, then swap them in at `revision`."""
        loop = asyncio.get_running_loop()
        built: dict[str, RingSnapshot | None] = {}
        for name in sorted(names):
            entry = self._raw.get(name)
            if entry is None:
                built[name] = None
                continue
            members = dict(entry.members)
            ring: Ring | None = None
            if members:
                started = time.perf_counter()
                ring = await loop.run_in_executor(None, self._build, members)
                self.metrics.rebuild_seconds.observe(time.perf_counter() - started)
            ordered = sorted(members.values(), key=lambda m: m.id.encode())
            built[name] = RingSnapshot(name, members, ring, revision, entry.declared, ordered)
        # The swap: synchronous, so no answer sees some rings new and others old.
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

    def _build(self, members: dict[str, MemberRecord]) -> Ring:
        return Ring({i: Member(i, m.weight) for i, m in members.items()}, self.params)

    # --- reads -----------------------------------------------------------------------

    def snapshot(self, name: str) -> tuple[RingSnapshot | None, int]:
        return self.rings.get(name), self.revision

    def spec(self, name: str) -> dict[str, Any] | None:
        snap = self.rings.get(name)
        if snap is None or snap.ring is None:
            return None
        return snap.ring.to_spec()

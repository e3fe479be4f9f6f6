"""Placement of keys on members: a balanced slot table that changes minimally.

Pure and deterministic; no I/O. Specified byte-exactly in docs/router.md
("synod-slot-table-v2"):

* key -> slot:  ``slot = xxh3_64(key, key_seed) mod S`` (S is a power of two);
* the **slot table** gives each slot an owner. Every member holds its quota of
  slots, proportional to its weight (largest remainder), so the load is balanced
  up to the keys' own randomness;
* the table is not a function of the member set alone: it is the previous table
  carried forward by :func:`transition`, which moves only the slots it must (the
  removed members' slots, and just enough slots to give an added member its quota),
  so no slot ever moves between two unchanged members. The router keeps the table
  in the consensus service, so every replica, restart and client sees the same one.
* ``lookup_n(key, n)``: the owner, then the owners of the following slots
  (``slot + 1``, ``slot + 2``, ... wrapping), skipping members already chosen;
  members that own no slot come last, in id order.

Why history and not a pure function of the member set: a placement that depends only
on the set and never moves keys between unchanged members is a rendezvous ranking per
slot, whose balance is binomial (max/mean ~1.12 at 100 members and 65,536 slots).
Remembering the previous table lets every member hold exactly its quota instead.
"""

from __future__ import annotations

import heapq
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import xxhash

__all__ = [
    "ALGORITHM",
    "MAX_WEIGHT",
    "HashFn",
    "Member",
    "Ring",
    "RingParams",
    "SlotTable",
    "TableError",
    "quotas",
    "splitmix64",
    "transition",
    "xxh3_64",
]

ALGORITHM = "synod-slot-table-v2"
MAX_WEIGHT = 1024
MAX_MEMBERS = 65535  # owner indices are u16
MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB

HashFn = Callable[[bytes, int], int]
"""``hash_fn(data, seed) -> int`` in ``[0, 2**64)``; the default is XXH3-64 with seed."""


def xxh3_64(data: bytes, seed: int) -> int:
    """XXH3_64bits_withSeed(data, seed) as an unsigned integer."""
    return xxhash.xxh3_64_intdigest(data, seed)


def splitmix64(x: int) -> int:
    """SplitMix64 output function of state ``x`` (gamma added first), unsigned 64-bit."""
    z = (x + GAMMA) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


@dataclass(frozen=True)
class Member:
    """A placement target. ``weight`` is a positive integer (relative capacity)."""

    id: str
    weight: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("member id must be a non-empty string")
        if len(self.id.encode("utf-8")) > 0xFFFF:
            raise ValueError("member id must be at most 65535 bytes of UTF-8")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int):
            raise ValueError(f"member {self.id!r}: weight must be an int")
        if not 1 <= self.weight <= MAX_WEIGHT:
            raise ValueError(f"member {self.id!r}: weight must be in 1..{MAX_WEIGHT}")


@dataclass(frozen=True)
class RingParams:
    """Parameters of a table; stored in it, so a table is self-describing."""

    algorithm: str = ALGORITHM
    slots: int = 1 << 16
    key_seed: int = 0
    member_seed: int = 0x53594E4F445F4D42  # ASCII "SYNOD_MB"
    slot_seed: int = 0x53594E4F445F534C  # ASCII "SYNOD_SL"
    hash: str = "xxh3_64"
    mix: str = "splitmix64"

    def __post_init__(self) -> None:
        if self.algorithm != ALGORITHM:
            raise ValueError(f"unsupported algorithm {self.algorithm!r}")
        if self.slots < 1 or self.slots & (self.slots - 1) or self.slots > 1 << 20:
            raise ValueError("slots must be a power of two in 1..2**20")
        for name in ("key_seed", "member_seed", "slot_seed"):
            value = getattr(self, name)
            if not 0 <= value <= MASK64:
                raise ValueError(f"{name} must be an unsigned 64-bit integer")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sort_key(m: Member) -> bytes:
    return m.id.encode("utf-8")


def quotas(members: Sequence[Member], slots: int) -> list[int]:
    """Slots each member should hold: ``slots * w / W`` by largest remainder.

    ``members`` must be sorted by id bytes; leftover slots go to the largest
    remainders, ties to the smaller id.
    """
    total = sum(m.weight for m in members)
    base = [slots * m.weight // total for m in members]
    rem = [slots * m.weight % total for m in members]
    extra = slots - sum(base)
    for i in sorted(range(len(members)), key=lambda i: (-rem[i], i))[:extra]:
        base[i] += 1
    return base


# --- the numpy parts of the specification ------------------------------------------------

_U = np.uint64


def _np_splitmix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 on a uint64 array (wrapping arithmetic, like :func:`splitmix64`)."""
    z = z + _U(GAMMA)
    z = (z ^ (z >> _U(30))) * _U(MIX1)
    z = (z ^ (z >> _U(27))) * _U(MIX2)
    out: np.ndarray = z ^ (z >> _U(31))
    return out


@lru_cache(maxsize=8)
def _salt_order(slots: int, slot_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(salt t(s) per slot, rank of each slot when sorted by salt).

    ``t(s) = splitmix64(s XOR slot_seed)`` is a bijection of 64-bit integers, so the
    order is strict.
    """
    with np.errstate(over="ignore"):
        salt = _np_splitmix(np.arange(slots, dtype=np.uint64) ^ _U(slot_seed))
    rank = np.empty(slots, dtype=np.int64)
    rank[np.argsort(salt, kind="stable")] = np.arange(slots)
    salt.setflags(write=False)
    rank.setflags(write=False)
    return salt, rank


# --- the table ----------------------------------------------------------------------------


class TableError(ValueError):
    """A stored table that cannot be decoded; the message names the byte offset."""


_MAGIC = b"SYNT"
_VERSION = 2
_HEADER = struct.Struct("<4sHHQQQII")  # magic, version, reserved, 3 seeds, slots, members


@dataclass(frozen=True, eq=False)
class SlotTable:
    """Members (sorted by UTF-8 id bytes) and the owner of every slot.

    ``owners[s]`` is an index into ``members``; every member's count of slots is its
    quota, up to the few slots that minimal movement leaves over (see :func:`transition`).
    """

    params: RingParams
    members: tuple[Member, ...]
    owners: np.ndarray  # uint16, shape (slots,)

    def __post_init__(self) -> None:
        if self.owners.shape != (self.params.slots,):
            raise ValueError("owners must have one entry per slot")

    def counts(self) -> list[int]:
        return np.bincount(self.owners, minlength=len(self.members)).tolist()  # type: ignore[no-any-return]

    def weights(self) -> dict[str, int]:
        return {m.id: m.weight for m in self.members}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SlotTable):
            return NotImplemented
        return (
            self.params == other.params
            and self.members == other.members
            and bool(np.array_equal(self.owners, other.owners))
        )

    __hash__ = None  # type: ignore[assignment]

    # --- wire format (docs/router.md, "The stored table") ----------------------------------

    def encode(self) -> bytes:
        p = self.params
        parts = [
            _HEADER.pack(
                _MAGIC,
                _VERSION,
                0,
                p.key_seed,
                p.member_seed,
                p.slot_seed,
                p.slots,
                len(self.members),
            )
        ]
        for m in self.members:
            raw = m.id.encode("utf-8")
            parts.append(struct.pack("<H", len(raw)) + raw + struct.pack("<H", m.weight))
        parts.append(self.owners.astype("<u2").tobytes())
        body = b"".join(parts)
        return body + struct.pack("<Q", xxh3_64(body, 0))

    @classmethod
    def decode(cls, data: bytes) -> SlotTable:
        """Parse :meth:`encode`'s output; TableError with the offset of the first problem."""
        if len(data) < _HEADER.size + 8:
            raise TableError(f"table truncated: {len(data)} bytes, header needs {_HEADER.size}")
        body, (digest,) = data[:-8], struct.unpack("<Q", data[-8:])
        if xxh3_64(body, 0) != digest:
            raise TableError(f"table checksum mismatch at offset {len(body)}")
        magic, version, _, key_seed, member_seed, slot_seed, slots, n = _HEADER.unpack_from(body, 0)
        if magic != _MAGIC:
            raise TableError(f"bad magic {magic!r} at offset 0")
        if version != _VERSION:
            raise TableError(f"unsupported table version {version} at offset 4")
        try:
            params = RingParams(
                slots=slots, key_seed=key_seed, member_seed=member_seed, slot_seed=slot_seed
            )
        except ValueError as e:
            raise TableError(f"bad parameters at offset 8: {e}") from None
        if not 1 <= n <= min(MAX_MEMBERS, slots):
            raise TableError(f"bad member count {n} at offset 36")
        off = _HEADER.size
        members: list[Member] = []
        for i in range(n):
            if off + 2 > len(body):
                raise TableError(f"member {i} truncated at offset {off}")
            (length,) = struct.unpack_from("<H", body, off)
            raw = body[off + 2 : off + 2 + length]
            if len(raw) != length or off + 4 + length > len(body):
                raise TableError(f"member {i} truncated at offset {off}")
            (weight,) = struct.unpack_from("<H", body, off + 2 + length)
            try:
                member = Member(raw.decode("utf-8"), weight)
            except (UnicodeDecodeError, ValueError) as e:
                raise TableError(f"member {i} invalid at offset {off}: {e}") from None
            if members and _sort_key(members[-1]) >= raw:
                raise TableError(f"member {i} out of order or duplicated at offset {off}")
            members.append(member)
            off += 4 + length
        if len(body) - off != 2 * slots:
            raise TableError(
                f"owner array at offset {off} has {len(body) - off} bytes, expected {2 * slots}"
            )
        owners = np.frombuffer(body, dtype="<u2", offset=off).astype(np.uint16)
        if slots and int(owners.max()) >= n:
            bad = int(np.flatnonzero(owners >= n)[0])
            raise TableError(f"owner index out of range at offset {off + 2 * bad}")
        return cls(params, tuple(members), owners)


def _normalise(members: Iterable[Member]) -> tuple[Member, ...]:
    ordered = sorted(members, key=_sort_key)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.id == b.id:
            raise ValueError(f"duplicate member id {a.id!r}")
    return tuple(ordered)


def transition(
    prev: SlotTable | None, members: Iterable[Member], params: RingParams | None = None
) -> SlotTable:
    """The table for ``members``, moving as few slots of ``prev`` as possible.

    The exact rules (docs/router.md, "Transition") in short: every member has a quota
    (:func:`quotas`). Slots of removed members are orphans. A member *changed* if it is
    new or its weight changed. Unchanged members give slots above their quota only if
    some member was added or grew, and take slots below their quota only if some
    member was removed or shrank; changed members always do both. Donors give the
    slots they have the least affinity for; the pool (orphans and donations, in salt
    order) is dealt round-robin to the takers in id order.

    ``params`` defaults to ``prev.params``; a table with other parameters (or none)
    is rebuilt from scratch.
    """
    if params is None:
        params = prev.params if prev is not None else RingParams()
    new = _normalise(members)
    if not new:
        raise ValueError("a ring needs at least one member")
    n, slots = len(new), params.slots
    if n > min(MAX_MEMBERS, slots):
        raise ValueError(f"at most {min(MAX_MEMBERS, slots)} members with {slots} slots")
    if prev is not None and prev.params != params:
        prev = None
    quota = np.array(quotas(new, slots), dtype=np.int64)
    index = {m.id: i for i, m in enumerate(new)}

    if prev is None:
        owner = np.full(slots, -1, dtype=np.int64)
        changed = np.ones(n, dtype=bool)
        may_give = may_take = True
    else:
        old_weight = prev.weights()
        remap = np.array([index.get(m.id, -1) for m in prev.members], dtype=np.int64)
        owner = remap[prev.owners]
        changed = np.array([old_weight.get(m.id) != m.weight for m in new], dtype=bool)
        grew = any(m.id not in old_weight or m.weight > old_weight[m.id] for m in new)
        shrank = len(old_weight) > sum(m.id in old_weight for m in new) or any(
            m.id in old_weight and m.weight < old_weight[m.id] for m in new
        )
        may_give, may_take = grew, shrank

    held = owner >= 0
    count = np.bincount(owner[held], minlength=n)
    give = np.where(changed | may_give, np.maximum(count - quota, 0), 0)
    need = np.where(changed | may_take, np.maximum(quota - count, 0), 0)

    salt, salt_rank = _salt_order(slots, params.slot_seed)
    # Donations: each donor gives up the `give` slots it has the least affinity for,
    # affinity(s, m) = splitmix64(t(s) XOR xxh3(id(m), member_seed)).
    donated = np.zeros(slots, dtype=bool)
    donors = np.flatnonzero(give)
    if donors.size:
        member_hash = np.array(
            [xxh3_64(m.id.encode("utf-8"), params.member_seed) for m in new], dtype=np.uint64
        )
        cand = np.flatnonzero(held & (give[np.maximum(owner, 0)] > 0))
        with np.errstate(over="ignore"):
            affinity = _np_splitmix(salt[cand] ^ member_hash[owner[cand]])
        order = np.lexsort((cand, affinity, owner[cand]))
        sorted_owner = owner[cand][order]
        starts = np.searchsorted(sorted_owner, sorted_owner, side="left")
        rank_in_owner = np.arange(order.size) - starts
        donated[cand[order[rank_in_owner < give[sorted_owner]]]] = True

    pool = np.flatnonzero(~held | donated)
    pool = pool[np.argsort(salt_rank[pool], kind="stable")]

    # More pool than needs: the rest goes, a slot at a time, to the eligible member
    # furthest below its quota (ties: smaller id). Eligible = may take this time.
    surplus = int(pool.size - need.sum())
    if surplus > 0:
        eligible = np.flatnonzero(changed | may_take)
        if not eligible.size:  # defensive: a pool always comes with a taker
            eligible = np.arange(n)
        after = count - give + need
        heap = [(int(after[i] - quota[i]), int(i)) for i in eligible]
        heapq.heapify(heap)
        for _ in range(surplus):
            over, i = heapq.heappop(heap)
            need[i] += 1
            heapq.heappush(heap, (over + 1, i))

    # Round-robin deal: round k gives one slot to each taker with need > k, in id order.
    takers = np.flatnonzero(need)
    if takers.size and pool.size:
        who = np.repeat(takers, need[takers])
        starts = np.repeat(np.cumsum(need[takers]) - need[takers], need[takers])
        round_no = np.arange(who.size) - starts
        deal = who[np.lexsort((who, round_no))][: pool.size]
        owner[pool[: deal.size]] = deal
    if (owner < 0).any():  # cannot happen: the pool never exceeds the deal
        raise AssertionError("transition left a slot without owner")
    return SlotTable(params, new, owner.astype(np.uint16))


class Ring:
    """Lookups on a :class:`SlotTable`.

    ``hash_fn`` is injectable for tests (a readable fake hash makes exact placements
    easy to assert); a ring built with another hash is not the specified algorithm.
    """

    def __init__(self, table: SlotTable, *, hash_fn: HashFn | None = None) -> None:
        self.table = table
        self._params = table.params
        self._hash: HashFn = hash_fn if hash_fn is not None else xxhash.xxh3_64_intdigest
        self._mask = table.params.slots - 1
        self._ids: tuple[str, ...] = tuple(m.id for m in table.members)
        # One id string per slot: lookup is one hash and one tuple index.
        self._owners: tuple[str, ...] = tuple(map(self._ids.__getitem__, table.owners.tolist()))
        counts = table.counts()
        self._slotless = tuple(self._ids[i] for i, c in enumerate(counts) if c == 0)

    @classmethod
    def build(cls, members: Iterable[Member], params: RingParams | None = None) -> Ring:
        """A ring from scratch (no previous table): what a new ring starts from."""
        return cls(transition(None, members, params))

    def slot(self, key: bytes) -> int:
        return self._hash(key, self._params.key_seed) & self._mask

    def lookup(self, key: bytes) -> str:
        """The owner of ``key``."""
        return self._owners[self._hash(key, self._params.key_seed) & self._mask]

    def lookup_n(self, key: bytes, n: int) -> list[str]:
        """The first ``n`` distinct members for ``key`` (owner first)."""
        if n < 1 or n > len(self._ids):
            raise ValueError(f"n must be in 1..{len(self._ids)}, got {n}")
        s = self._hash(key, self._params.key_seed) & self._mask
        owners, mask = self._owners, self._mask
        out = [owners[s]]
        if n == 1:
            return out
        seen = set(out)
        for step in range(1, mask + 1):
            m = owners[(s + step) & mask]
            if m not in seen:
                seen.add(m)
                out.append(m)
                if len(out) == n:
                    return out
        out.extend(m for m in self._slotless[: n - len(out)])
        return out

    def slot_owners(self) -> list[str]:
        """Owner of every slot (index = slot)."""
        return list(self._owners)

    @property
    def members(self) -> dict[str, Member]:
        return {m.id: m for m in self.table.members}

    @property
    def params(self) -> RingParams:
        return self._params

    def nbytes(self) -> int:
        """Memory of the lookup structure: the per-slot tuple (ids are shared strings)
        plus the u16 table it was built from."""
        return (
            sys.getsizeof(self._owners)
            + self.table.owners.nbytes
            + sum(sys.getsizeof(i) for i in self._ids)
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            **self._params.to_dict(),
            "members": [{"id": m.id, "weight": m.weight} for m in self.table.members],
        }

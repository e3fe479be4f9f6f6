"""Placement of keys on members: a weighted rendezvous (HRW) table of slots.

Pure and deterministic; no I/O.  The algorithm is specified byte-exactly in
docs/router.md ("synod-hrw-table-v1"):

* key -> slot:   ``slot = xxh3_64(key, key_seed) mod slots`` (slots is a power of two)
* vnode hash:    ``v(m, j) = xxh3_64(utf8(m) || u32le(j), member_seed)`` for
  ``j = 0 .. weight(m) - 1``
* slot salt:     ``t(s) = splitmix64(s XOR slot_seed)``
* score:         ``score(s, m) = max_j splitmix64(t(s) XOR v(m, j))`` (unsigned 64-bit)
* ranking of s:  members by score descending, ties by UTF-8 id bytes ascending.

``lookup(key)`` is the first member of the ranking of the key's slot and
``lookup_n(key, n)`` the first ``n``.  The first ``replicas`` ranks of every
slot are precomputed (vectorised with numpy); longer lists are computed on demand.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
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
    "ScoreFn",
    "default_score",
    "splitmix64",
    "xxh3_64",
]

ALGORITHM = "synod-hrw-table-v1"
MAX_WEIGHT = 1024
MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB

HashFn = Callable[[bytes, int], int]
"""``hash_fn(data, seed) -> int`` in ``[0, 2**64)``; the default is XXH3-64 with seed."""

ScoreFn = Callable[[int, int], int]
"""``score_fn(slot, vnode_hash) -> int``; higher wins.  The default is :func:`default_score`."""


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
    """A placement target.  ``weight`` is a positive integer (relative capacity)."""

    id: str
    weight: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("member id must be a non-empty string")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int):
            raise ValueError(f"member {self.id!r}: weight must be an int")
        if not 1 <= self.weight <= MAX_WEIGHT:
            raise ValueError(f"member {self.id!r}: weight must be in 1..{MAX_WEIGHT}")


@dataclass(frozen=True)
class RingParams:
    """Everything a client in another language needs besides the member list."""

    algorithm: str = ALGORITHM
    slots: int = 1 << 16
    key_seed: int = 0
    member_seed: int = 0x53594E4F445F4D42  # ASCII "SYNOD_MB"
    slot_seed: int = 0x53594E4F445F534C  # ASCII "SYNOD_SL"
    replicas: int = 3
    hash: str = "xxh3_64"
    mix: str = "splitmix64"

    def __post_init__(self) -> None:
        if self.algorithm != ALGORITHM:
            raise ValueError(f"unsupported algorithm {self.algorithm!r}")
        if self.slots < 1 or self.slots & (self.slots - 1) or self.slots > 1 << 24:
            raise ValueError("slots must be a power of two in 1..2**24")
        for name in ("key_seed", "member_seed", "slot_seed"):
            value = getattr(self, name)
            if not 0 <= value <= MASK64:
                raise ValueError(f"{name} must be an unsigned 64-bit integer")
        if self.replicas < 1:
            raise ValueError("replicas must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def vnode_bytes(member_id: str, j: int) -> bytes:
    """Input of the vnode hash: UTF-8 id followed by ``j`` as little-endian u32."""
    return member_id.encode("utf-8") + struct.pack("<I", j)


def slot_salt(slot: int, slot_seed: int) -> int:
    return splitmix64(slot ^ slot_seed)


def default_score(slot_seed: int) -> ScoreFn:
    """The specified score: ``splitmix64(splitmix64(slot ^ slot_seed) ^ vnode_hash)``."""

    def score(slot: int, vnode_hash: int) -> int:
        return splitmix64(splitmix64(slot ^ slot_seed) ^ vnode_hash)

    return score


# --- vectorised build (numpy, default score only) ------------------------------------

_U = np.uint64
_NP_GAMMA, _NP_MIX1, _NP_MIX2 = _U(GAMMA), _U(MIX1), _U(MIX2)
_S30, _S27, _S31 = _U(30), _U(27), _U(31)
_THREADS = 2  # build threads (numpy releases the GIL); the result does not depend on it


def _np_splitmix(z: np.ndarray, tmp: np.ndarray) -> None:
    """In-place SplitMix64 on a uint64 array (wrapping arithmetic, like the scalar one)."""
    np.add(z, _NP_GAMMA, out=z)
    np.right_shift(z, _S30, out=tmp)
    np.bitwise_xor(z, tmp, out=z)
    np.multiply(z, _NP_MIX1, out=z)
    np.right_shift(z, _S27, out=tmp)
    np.bitwise_xor(z, tmp, out=z)
    np.multiply(z, _NP_MIX2, out=z)
    np.right_shift(z, _S31, out=tmp)
    np.bitwise_xor(z, tmp, out=z)


def _np_top(
    slots: int, slot_seed: int, vnodes: list[int], owner_of_vnode: list[int], r: int
) -> np.ndarray:
    """Top ``r`` member indices per slot, shape (slots, r), by (score desc, index asc)."""
    n_members = owner_of_vnode[-1] + 1
    weighted = len(vnodes) != n_members
    vh = np.array(vnodes, dtype=np.uint64)
    starts = np.flatnonzero(np.diff(np.array([-1, *owner_of_vnode]))) if weighted else None
    salt = np.arange(slots, dtype=np.uint64) ^ _U(slot_seed)
    _np_splitmix(salt, np.empty_like(salt))
    out = np.empty((slots, r), dtype=np.int64)
    chunk = max(1, min(slots, (1 << 18) // max(1, len(vnodes))))

    def run(lo: int, hi: int) -> None:
        z = np.empty((hi - lo, len(vnodes)), dtype=np.uint64)
        np.bitwise_xor(salt[lo:hi, None], vh[None, :], out=z)
        _np_splitmix(z, np.empty_like(z))
        scores = np.maximum.reduceat(z, starts, axis=1) if starts is not None else z
        rows = np.arange(hi - lo)
        for k in range(r):
            best = scores.argmax(axis=1)  # first maximum: the smallest index wins ties
            out[lo:hi, k] = best
            if k + 1 < r:
                if bool((scores[rows, best] == 0).any()):
                    raise _ZeroScore  # 2**-64 event: let the exact path decide
                scores[rows, best] = 0

    bounds = [(lo, min(slots, lo + chunk)) for lo in range(0, slots, chunk)]
    if _THREADS < 2 or len(bounds) < 4 or slots * len(vnodes) < 1 << 20:
        for lo, hi in bounds:
            run(lo, hi)
    else:  # numpy releases the GIL: two threads halve a large build (result is identical)
        with ThreadPoolExecutor(max_workers=_THREADS) as pool:
            for fut in [pool.submit(run, lo, hi) for lo, hi in bounds]:
                fut.result()
    return out


class _ZeroScore(Exception):
    pass


class Ring:
    """Weighted rendezvous placement precomputed into ``params.slots`` slots.

    ``members`` maps id -> :class:`Member` (an iterable of members is accepted too).
    ``hash_fn`` and ``score_fn`` are injectable for tests; a ring built with them is
    not the specified algorithm unless they are the defaults.
    """

    def __init__(
        self,
        members: Mapping[str, Member] | Iterable[Member],
        params: RingParams | None = None,
        *,
        hash_fn: HashFn | None = None,
        score_fn: ScoreFn | None = None,
    ) -> None:
        self._params = params if params is not None else RingParams()
        items = list(members.items()) if isinstance(members, Mapping) else None
        if items is not None:
            for key, member in items:
                if key != member.id:
                    raise ValueError(f"mapping key {key!r} != member id {member.id!r}")
            member_list = [m for _, m in items]
        else:
            member_list = list(members)
        if not member_list:
            raise ValueError("a ring needs at least one member")
        ids = [m.id for m in member_list]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate member ids")
        member_list.sort(key=lambda m: m.id.encode("utf-8"))
        self._members: tuple[Member, ...] = tuple(member_list)
        self._ids: tuple[str, ...] = tuple(m.id for m in member_list)
        p = self._params
        self._default = hash_fn is None and score_fn is None
        self._hash: HashFn = hash_fn if hash_fn is not None else xxhash.xxh3_64_intdigest
        self._score: ScoreFn = score_fn if score_fn is not None else default_score(p.slot_seed)
        self._mask = p.slots - 1
        self._vnodes: list[int] = []
        self._vowner: list[int] = []
        for idx, m in enumerate(self._members):
            for j in range(m.weight):
                self._vnodes.append(self._hash(vnode_bytes(m.id, j), p.member_seed))
                self._vowner.append(idx)
        self._r = min(p.replicas, len(self._members))
        self._top, owner_idx = self._build_top()
        self._owners: tuple[str, ...] = tuple(map(self._ids.__getitem__, owner_idx))

    # --- build ------------------------------------------------------------------

    def _build_top(self) -> tuple[array[int], list[int]]:
        """(flattened top-r table, owner index per slot)."""
        p, r = self._params, self._r
        code = "H" if len(self._members) > 255 else "B"
        if self._default:
            try:
                top = _np_top(p.slots, p.slot_seed, self._vnodes, self._vowner, r)
            except _ZeroScore:
                pass
            else:
                flat: array[int] = array(code)
                flat.frombytes(top.astype(np.uint16 if code == "H" else np.uint8).tobytes())
                owners: list[int] = top[:, 0].tolist()
                return flat, owners
        flat = array(code)
        for s in range(p.slots):
            flat.extend(self._rank(s)[:r])
        return flat, list(flat[::r])

    def _member_scores(self, slot: int) -> list[int]:
        scores: list[int | None] = [None] * len(self._members)
        score = self._score
        for v, idx in zip(self._vnodes, self._vowner, strict=True):
            sc = score(slot, v)
            prev = scores[idx]
            if prev is None or sc > prev:
                scores[idx] = sc
        return [s for s in scores if s is not None]

    def _rank(self, slot: int) -> list[int]:
        """Member indices of ``slot`` by (score desc, id bytes asc): the exact definition."""
        scores = self._member_scores(slot)
        return sorted(range(len(scores)), key=lambda i: (-scores[i], i))

    # --- queries ----------------------------------------------------------------

    def slot(self, key: bytes) -> int:
        return self._hash(key, self._params.key_seed) & self._mask

    def lookup(self, key: bytes) -> str:
        """The owner of ``key``."""
        return self._owners[self._hash(key, self._params.key_seed) & self._mask]

    def lookup_n(self, key: bytes, n: int) -> list[str]:
        """The first ``n`` distinct members for ``key`` (owner first)."""
        if n < 1 or n > len(self._members):
            raise ValueError(f"n must be in 1..{len(self._members)}, got {n}")
        s = self.slot(key)
        if n <= self._r:
            base = s * self._r
            return [self._ids[i] for i in self._top[base : base + n]]
        return [self._ids[i] for i in self._rank(s)[:n]]

    def slot_owners(self) -> list[str]:
        """Owner of every slot (index = slot)."""
        return list(self._owners)

    @property
    def members(self) -> Mapping[str, Member]:
        return {m.id: m for m in self._members}

    @property
    def params(self) -> RingParams:
        return self._params

    def nbytes(self) -> int:
        """Approximate memory of the lookup structure (slot tables, not shared strings)."""
        return (
            sys.getsizeof(self._owners)
            + sys.getsizeof(self._top)
            + 8 * len(self._vnodes) * 2
            + sum(sys.getsizeof(i) for i in self._ids)
        )

    def to_spec(self) -> dict[str, Any]:
        """Parameters and members: all another implementation needs to reproduce the ring."""
        return {
            **self._params.to_dict(),
            "members": [{"id": m.id, "weight": m.weight} for m in self._members],
        }

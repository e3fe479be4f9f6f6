"""tests/router/vectors.json against Ring and against a spec-only reference.

The reference below is written from docs/router.md alone (scalar, no numpy): quotas,
the transition, the stored table's bytes and the lookups. A change to either the
implementation or the vectors that breaks the spec fails here.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import xxhash

from synod.router.ring import Member, Ring, RingParams, SlotTable, transition

VECTORS = json.loads((Path(__file__).parent / "vectors.json").read_text(encoding="utf-8"))
SCENARIOS = VECTORS["scenarios"]
M64 = (1 << 64) - 1


# --- the reference, from docs/router.md -------------------------------------------------


def splitmix(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def h(data: bytes, seed: int) -> int:
    return xxhash.xxh3_64_intdigest(data, seed)


class RefTable:
    def __init__(self, params: dict[str, Any], members: list[tuple[str, int]], owner: list[str]):
        self.params, self.members, self.owner = params, members, owner

    def encode(self) -> bytes:
        p = self.params
        out = b"SYNT" + struct.pack("<HH", 2, 0)
        out += struct.pack("<QQQ", p["key_seed"], p["member_seed"], p["slot_seed"])
        out += struct.pack("<II", p["slots"], len(self.members))
        for mid, weight in self.members:
            raw = mid.encode("utf-8")
            out += struct.pack("<H", len(raw)) + raw + struct.pack("<H", weight)
        index = {mid: i for i, (mid, _) in enumerate(self.members)}
        out += b"".join(struct.pack("<H", index[o]) for o in self.owner)
        return out + struct.pack("<Q", h(out, 0))


def ref_transition(
    prev: RefTable | None, members: list[tuple[str, int]], params: dict[str, Any]
) -> RefTable:
    S = params["slots"]
    new = sorted(members, key=lambda m: m[0].encode("utf-8"))
    ids = [m for m, _ in new]
    weight = dict(new)
    W = sum(weight.values())
    quota = {m: S * w // W for m, w in new}
    rem = {m: S * w % W for m, w in new}
    for i in sorted(range(len(ids)), key=lambda i: (-rem[ids[i]], i))[: S - sum(quota.values())]:
        quota[ids[i]] += 1
    if prev is None:
        owner: list[str | None] = [None] * S
        changed = set(ids)
        may_give = may_take = True
    else:
        old = dict(prev.members)
        owner = [o if o in weight else None for o in prev.owner]
        changed = {m for m in ids if old.get(m) != weight[m]}
        may_give = any(m not in old or weight[m] > old[m] for m in ids)
        may_take = any(m not in weight for m in old) or any(
            m in old and weight[m] < old[m] for m in ids
        )
    count = {m: sum(1 for o in owner if o == m) for m in ids}
    give = {m: max(0, count[m] - quota[m]) if m in changed or may_give else 0 for m in ids}
    need = {m: max(0, quota[m] - count[m]) if m in changed or may_take else 0 for m in ids}
    salt = [splitmix(s ^ params["slot_seed"]) for s in range(S)]
    pool = [s for s in range(S) if owner[s] is None]
    for m in ids:
        if give[m]:
            mh = h(m.encode("utf-8"), params["member_seed"])
            mine = sorted((splitmix(salt[s] ^ mh), s) for s in range(S) if owner[s] == m)
            pool += [s for _, s in mine[: give[m]]]
    pool.sort(key=lambda s: salt[s])
    eligible = [m for m in ids if m in changed or may_take]
    for _ in range(len(pool) - sum(need.values())):
        best = min(
            eligible,
            key=lambda m: (count[m] - give[m] + need[m] - quota[m], ids.index(m)),
        )
        need[best] += 1
    dealt = 0
    k = 0
    while dealt < len(pool):
        for m in ids:
            if need[m] > k and dealt < len(pool):
                owner[pool[dealt]] = m
                dealt += 1
        k += 1
    assert all(o is not None for o in owner)
    return RefTable(params, new, [o for o in owner if o is not None])


def ref_lookup_n(table: RefTable, params: dict[str, Any], key: bytes, n: int) -> list[str]:
    S = params["slots"]
    s = h(key, params["key_seed"]) % S
    out: list[str] = []
    for step in range(S):
        o = table.owner[(s + step) % S]
        if o not in out:
            out.append(o)
    out += [m for m, _ in table.members if m not in out]
    return out[:n]


# --- the tests ---------------------------------------------------------------------------


def members_of(step: dict[str, Any]) -> list[Member]:
    return [Member(m["id"], m["weight"]) for m in step["members"]]


def check_keys(step: dict[str, Any], slot: Any, lookup: Any, lookup_n: Any) -> None:
    for case in step["keys"]:
        key = bytes.fromhex(case["key_hex"])
        assert slot(key) == case["slot"]
        assert lookup(key) == case["owner"]
        top = next(v for k, v in case.items() if k.startswith("top"))
        assert lookup_n(key, len(top)) == top
        assert lookup_n(key, len(case["all"])) == case["all"]


@pytest.mark.parametrize("vec", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_ring_reproduces_vectors(vec: dict[str, Any]) -> None:
    params = RingParams(**vec["params"])
    table: SlotTable | None = None
    for step in vec["steps"]:
        table = transition(table, members_of(step), params)
        encoded = table.encode()
        assert f"{xxhash.xxh3_64_intdigest(encoded, 0):016x}" == step["table_xxh3"]
        assert SlotTable.decode(encoded) == table
        ring = Ring(table)
        assert dict(zip(ring.members, table.counts(), strict=True)) == step["slot_counts"]
        assert ring.slot_owners()[:16] == step["owners_of_slots_0_to_15"]
        check_keys(step, ring.slot, ring.lookup, ring.lookup_n)


@pytest.mark.parametrize("vec", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_reference_reproduces_vectors(vec: dict[str, Any]) -> None:
    params = vec["params"]
    for name, hexed in vec["seeds_hex"].items():
        assert int(hexed, 16) == params[name]
    ref: RefTable | None = None
    for step in vec["steps"]:
        ref = ref_transition(ref, [(m["id"], m["weight"]) for m in step["members"]], params)
        encoded = ref.encode()
        assert len(encoded) == step["table_bytes"]
        assert f"{h(encoded, 0):016x}" == step["table_xxh3"]
        table = ref

        def slot(key: bytes) -> int:
            return h(key, params["key_seed"]) % params["slots"]

        check_keys(
            step,
            slot,
            lambda k, t=table: t.owner[slot(k)],
            lambda k, n, t=table: ref_lookup_n(t, params, k, n),
        )
        for case in step["keys"]:
            assert (
                f"{h(bytes.fromhex(case['key_hex']), params['key_seed']):016x}"
                == (case["key_hash"])
            )


def test_vectors_cover_the_interesting_cases() -> None:
    names = {s["name"] for s in SCENARIOS}
    assert len(names) == len(SCENARIOS) >= 4
    assert VECTORS["algorithm"] == RingParams().algorithm
    weights = {m["weight"] for s in SCENARIOS for st in s["steps"] for m in st["members"]}
    assert len(weights) > 2
    assert any(len(s["steps"]) >= 3 for s in SCENARIOS)
    assert any(
        any(ord(c) > 127 for m in s["steps"][0]["members"] for c in m["id"]) for s in SCENARIOS
    )

"""Property tests of synod.router.ring (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synod.router.ring import (
    Member,
    Ring,
    RingParams,
    SlotTable,
    TableError,
    quotas,
    transition,
)

SMALL = RingParams(slots=1024)
ids = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
id_sets = st.lists(ids, min_size=1, max_size=12, unique=True)
keys = st.binary(max_size=40)
SET = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def table_of(
    names: list[str], params: RingParams = SMALL, weights: dict[str, int] | None = None
) -> SlotTable:
    w = weights or {}
    return transition(None, [Member(n, w.get(n, 1)) for n in names], params)


def owners(table: SlotTable) -> list[str]:
    return Ring(table).slot_owners()


@SET
@given(names=id_sets, new=ids, weight=st.integers(1, 3))
def test_adding_moves_only_to_the_new_member(names: list[str], new: str, weight: int) -> None:
    if new in names:
        return
    before = table_of(names)
    after = transition(before, [*before.members, Member(new, weight)])
    moved = 0
    for b, a in zip(owners(before), owners(after), strict=True):
        assert a == b or a == new
        moved += a != b
    assert moved == after.counts()[[m.id for m in after.members].index(new)]


@SET
@given(names=st.lists(ids, min_size=2, max_size=12, unique=True), data=st.data())
def test_removing_any_member_moves_only_its_keys(names: list[str], data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(names))
    before = table_of(names)
    after = transition(before, [m for m in before.members if m.id != gone])
    for b, a in zip(owners(before), owners(after), strict=True):
        assert a == b or b == gone
        assert a != gone


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, int]]:
    """A sequence of member sets: each step adds, removes or reweighs members."""
    pool = [f"m{i}" for i in range(16)]
    current = {m: 1 for m in draw(st.lists(st.sampled_from(pool), min_size=1, unique=True))}
    steps = [dict(current)]
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["add", "remove", "reweigh", "swap"]))
        absent = [m for m in pool if m not in current]
        if op in ("add", "swap") and absent:
            current[draw(st.sampled_from(absent))] = draw(st.integers(1, 4))
        if op in ("remove", "swap") and len(current) > 1:
            del current[draw(st.sampled_from(sorted(current)))]
        if op == "reweigh":
            current[draw(st.sampled_from(sorted(current)))] = draw(st.integers(1, 4))
        steps.append(dict(current))
    return steps


@SET
@given(steps=histories())
def test_any_history_stays_balanced_and_moves_minimally(steps: list[dict[str, int]]) -> None:
    table: SlotTable | None = None
    for members in steps:
        prev = table
        table = transition(prev, [Member(m, w) for m, w in members.items()], SMALL)
        counts = dict(zip([m.id for m in table.members], table.counts(), strict=True))
        quota = dict(zip([m.id for m in table.members], quotas(table.members, 1024), strict=True))
        # Every member within two slots of its quota, whatever the history.
        assert all(abs(counts[m] - quota[m]) <= 2 for m in members), (counts, quota)
        if prev is None:
            assert counts == quota
            continue
        old = prev.weights()
        unchanged = {m for m, w in members.items() if old.get(m) == w}
        before, after = owners(prev), owners(table)
        between = sum(
            b != a and b in unchanged and a in unchanged for b, a in zip(before, after, strict=True)
        )
        # Only a step that both grows and shrinks may move slots between unchanged members,
        # and then only the rounding slots.
        grows = any(old.get(m, 0) < w for m, w in members.items())
        shrinks = any(members.get(m, 0) < w for m, w in old.items())
        if not (grows and shrinks):
            assert between == 0
        else:
            assert between <= 2 * len(members)
        # A step with no change changes nothing.
        again = transition(table, table.members)
        assert again == table


@SET
@given(names=id_sets, key=keys, data=st.data())
def test_replicas_distinct_and_prefix_consistent(
    names: list[str], key: bytes, data: st.DataObject
) -> None:
    ring = Ring(table_of(names))
    n = data.draw(st.integers(1, len(names)))
    got = ring.lookup_n(key, n)
    assert len(got) == n == len(set(got))
    assert set(got) <= set(names)
    assert got[0] == ring.lookup(key) == ring.lookup_n(key, 1)[0]
    full = ring.lookup_n(key, len(names))
    assert full[:n] == got
    with pytest.raises(ValueError):
        ring.lookup_n(key, 0)
    with pytest.raises(ValueError):
        ring.lookup_n(key, len(names) + 1)


def test_replicas_include_members_without_slots() -> None:
    # 4 slots, weights 1000 : 1000 : 1: "z"'s quota rounds to no slot; it still appears, last.
    table = table_of(["a", "b", "z"], RingParams(slots=4), {"a": 1000, "b": 1000})
    ring = Ring(table)
    assert dict(zip(ring.members, table.counts(), strict=True)) == {"a": 2, "b": 2, "z": 0}
    for k in (b"a", b"b", b"c"):
        assert ring.lookup_n(k, 3)[-1] == "z"
        assert ring.lookup_n(k, 2) == ring.lookup_n(k, 3)[:2]


@settings(max_examples=10, deadline=None)
@given(n=st.integers(2, 100), prefix=st.text(min_size=1, max_size=5))
def test_fresh_table_holds_exact_quotas(n: int, prefix: str) -> None:
    table = table_of([f"{prefix}-{i}" for i in range(n)], RingParams())
    counts = table.counts()
    assert max(counts) - min(counts) <= 1
    assert sum(counts) == 1 << 16


@settings(max_examples=10, deadline=None)
@given(n=st.integers(3, 30), w=st.integers(2, 9), prefix=st.text(min_size=1, max_size=5))
def test_weights_honoured(n: int, w: int, prefix: str) -> None:
    names = [f"{prefix}-{i}" for i in range(n)]
    table = table_of(names, RingParams(), weights={names[0]: w})
    counts = Counter(owners(table))
    others = sum(counts[x] for x in names[1:]) / (n - 1)
    assert abs(counts[names[0]] / others / w - 1) < 0.01


def test_table_round_trips_and_reports_damage_with_offsets() -> None:
    table = table_of(["b", "a", "ç"], weights={"b": 2})
    data = table.encode()
    assert SlotTable.decode(data) == table
    with pytest.raises(TableError, match="checksum mismatch at offset"):
        SlotTable.decode(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.raises(TableError, match="truncated"):
        SlotTable.decode(data[:10])
    with pytest.raises(TableError, match="checksum"):
        SlotTable.decode(data[:-1])


def test_members_params_and_spec() -> None:
    ring = Ring(table_of(["b", "a"], weights={"b": 2}))
    assert ring.members == {"a": Member("a"), "b": Member("b", 2)}
    spec = ring.to_spec()
    assert spec["algorithm"] == "synod-slot-table-v2"
    assert spec["members"] == [{"id": "a", "weight": 1}, {"id": "b", "weight": 2}]
    fields = {k: v for k, v in spec.items() if k != "members"}
    assert RingParams(**fields) == ring.params
    with pytest.raises(ValueError):
        transition(None, [])
    with pytest.raises(ValueError, match="duplicate"):
        transition(None, [Member("x"), Member("x", 2)])
    with pytest.raises(ValueError):
        Member("x", 0)
    with pytest.raises(ValueError):
        RingParams(slots=1000)
    with pytest.raises(ValueError, match="at most 4 members"):
        transition(None, [Member(str(i)) for i in range(5)], RingParams(slots=4))


def test_other_parameters_rebuild_from_scratch() -> None:
    old = table_of(["a", "b", "c"])
    other = RingParams(slots=2048)
    assert transition(old, old.members, other) == transition(None, old.members, other)


def test_injected_hash_gives_readable_placements() -> None:
    # groupcache style: a fake hash (the key's digits) makes placements exact.
    table = table_of(["a", "b"], RingParams(slots=4))
    ring = Ring(table, hash_fn=lambda data, seed: int(data.decode()))
    by_slot = ring.slot_owners()
    for k in range(8):
        assert ring.lookup(str(k).encode()) == by_slot[k % 4]
    assert np.array_equal(np.bincount(table.owners), [2, 2])


_CHILD = """
import json, sys
from synod.router.ring import Member, Ring, transition
names = json.loads(sys.argv[1])
t = transition(None, [Member(n, 1 + i % 3) for i, n in enumerate(names)])
t = transition(t, [m for m in t.members if m.id != names[2]])
ring = Ring(t)
print(json.dumps([ring.lookup_n(f"k{i}".encode(), 3) for i in range(2000)]))
"""


def test_identical_placement_across_processes() -> None:
    names = [f"node-{i}" for i in range(7)] + ["zürich"]
    t = transition(None, [Member(n, 1 + i % 3) for i, n in enumerate(names)])
    ring = Ring(transition(t, [m for m in t.members if m.id != names[2]]))
    mine = [ring.lookup_n(f"k{i}".encode(), 3) for i in range(2000)]
    for hashseed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(names)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        ).stdout
        assert json.loads(out) == mine

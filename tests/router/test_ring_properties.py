"""Property tests of synod.router.ring (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synod.router.ring import Member, Ring, RingParams

SMALL = RingParams(slots=1024)
ids = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
id_sets = st.lists(ids, min_size=1, max_size=12, unique=True)
keys = st.binary(max_size=40)
SET = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ring_of(
    names: list[str], params: RingParams = SMALL, weights: dict[str, int] | None = None
) -> Ring:
    w = weights or {}
    return Ring({n: Member(n, w.get(n, 1)) for n in names}, params)


@SET
@given(names=id_sets, new=ids, weight=st.integers(1, 3))
def test_adding_moves_only_to_the_new_member(names: list[str], new: str, weight: int) -> None:
    if new in names:
        return
    before = ring_of(names).slot_owners()
    after = ring_of([*names, new], weights={new: weight}).slot_owners()
    for b, a in zip(before, after, strict=True):
        assert a == b or a == new


@SET
@given(names=st.lists(ids, min_size=2, max_size=12, unique=True), data=st.data())
def test_removing_any_member_moves_only_its_keys(names: list[str], data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(names))
    before = ring_of(names).slot_owners()
    after = ring_of([n for n in names if n != gone]).slot_owners()
    for b, a in zip(before, after, strict=True):
        assert a == b or b == gone
        assert a != gone


@SET
@given(names=id_sets, key=keys, data=st.data())
def test_replicas_distinct_and_prefix_consistent(
    names: list[str], key: bytes, data: st.DataObject
) -> None:
    ring = ring_of(names)
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


@SET
@given(names=st.lists(ids, min_size=2, max_size=8, unique=True), key=keys)
def test_replica_order_is_stable_under_removal(names: list[str], key: bytes) -> None:
    """Removing a member removes it from every list and keeps the others' order."""
    ring = ring_of(names)
    full = ring.lookup_n(key, len(names))
    gone = full[0]
    smaller = ring_of([n for n in names if n != gone])
    assert smaller.lookup_n(key, len(names) - 1) == full[1:]


@settings(max_examples=10, deadline=None)
@given(n=st.integers(2, 10), prefix=st.text(min_size=1, max_size=5))
def test_balance_loose(n: int, prefix: str) -> None:
    ring = ring_of([f"{prefix}-{i}" for i in range(n)], RingParams())
    counts = Counter(ring.slot_owners())
    assert len(counts) == n
    mean = ring.params.slots / n
    assert max(counts.values()) / mean < 1.10  # ~8 sigma at n = 10: not flaky
    assert min(counts.values()) / mean > 0.90


@settings(max_examples=10, deadline=None)
@given(n=st.integers(3, 8), prefix=st.text(min_size=1, max_size=5))
def test_weights_honoured(n: int, prefix: str) -> None:
    names = [f"{prefix}-{i}" for i in range(n)]
    ring = ring_of(names, RingParams(), weights={names[0]: 2})
    counts = Counter(ring.slot_owners())
    others = sum(counts[x] for x in names[1:]) / (n - 1)
    assert 1.8 < counts[names[0]] / others < 2.2


def test_members_params_and_spec() -> None:
    ring = ring_of(["b", "a"], weights={"b": 2})
    assert ring.members == {"a": Member("a"), "b": Member("b", 2)}
    spec = ring.to_spec()
    assert spec["algorithm"] == "synod-hrw-table-v1"
    assert spec["members"] == [{"id": "a", "weight": 1}, {"id": "b", "weight": 2}]
    fields = {k: v for k, v in spec.items() if k != "members"}
    assert RingParams(**fields) == ring.params
    with pytest.raises(ValueError):
        Ring({})
    with pytest.raises(ValueError):
        Ring({"x": Member("y")})
    with pytest.raises(ValueError):
        Member("x", 0)
    with pytest.raises(ValueError):
        RingParams(slots=1000)


_CHILD = """
import json, sys
from synod.router.ring import Member, Ring
names = json.loads(sys.argv[1])
ring = Ring({n: Member(n, 1 + i % 3) for i, n in enumerate(names)})
keys = [f"k{i}".encode() for i in range(2000)]
print(json.dumps([ring.lookup_n(k, 3) for k in keys]))
"""


def test_identical_placement_across_processes() -> None:
    names = [f"node-{i}" for i in range(7)] + ["zürich"]
    ring = Ring({n: Member(n, 1 + i % 3) for i, n in enumerate(names)})
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

#!/usr/bin/env python3
"""Measure the router placement (synod.router.ring) at N = 10 and N = 100.

Not a test: prints the quality table used in docs/router.md.

    .venv/bin/python tools/ring_quality.py [--keys 1000000] [--seed 1]

Columns: max/mean load; keys moved on adding a member / ideal (keys/(N+1)); moved on
removing the middle member, and the most loaded one, / ideal (keys/N); share of keys
moved between unchanged members (all three changes); time of ``ring.lookup`` / time of
``xxh3_64(key) % N`` (interleaved rounds, median ratio); lookup structure in memory
(and the stored table's size); CPU ms (best of 5) to build a table from scratch, to add
a member, and to load a stored table into a Ring (what a replica does per change);
weight check (a member of weight 2 gets x times a weight-1 member's keys).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
import xxhash

from synod.router.ring import Member, Ring, SlotTable, transition


def owners_of(ring: Ring, key_slots: np.ndarray, universe: dict[str, int]) -> np.ndarray:
    table = np.array([universe[m] for m in ring.slot_owners()], dtype=np.int32)
    result: np.ndarray = table[key_slots]
    return result


def time_lookup(ring: Ring, keys: list[bytes], n: int, rounds: int = 7) -> float:
    h = xxhash.xxh3_64_intdigest
    lookup = ring.lookup

    def base() -> None:
        for k in keys:
            h(k) % n

    def ours() -> None:
        for k in keys:
            lookup(k)

    def clock(fn: Callable[[], None]) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    ratios = []
    for _ in range(rounds):  # interleaved: base, ours, base, ours ...
        b = clock(base)
        o = clock(ours)
        ratios.append(o / b)
    return statistics.median(ratios)


def measure(n: int, keys: list[bytes], rng: random.Random) -> dict[str, float]:
    ids = [f"node-{i:03d}" for i in range(n)]
    members = [Member(i) for i in ids]
    table = transition(None, members)
    ring = Ring(table)
    p = ring.params
    universe = {m: k for k, m in enumerate([*ids, "node-new"])}
    key_slots = np.array(
        [xxhash.xxh3_64_intdigest(k, p.key_seed) & (p.slots - 1) for k in keys], dtype=np.int64
    )
    k_total = len(keys)
    base = owners_of(ring, key_slots, universe)
    counts = np.bincount(base, minlength=n)[:n]
    max_mean = counts.max() / (k_total / n)

    added = Ring(transition(table, [*members, Member("node-new")]))
    after = owners_of(added, key_slots, universe)
    moved = after != base
    add_ratio = moved.sum() / (k_total / (n + 1))
    bad_add = (moved & (after != universe["node-new"])).sum()

    def remove(gone: str) -> tuple[float, int]:
        removed = Ring(transition(table, [m for m in members if m.id != gone]))
        after_r = owners_of(removed, key_slots, universe)
        moved_r = after_r != base
        return moved_r.sum() / (k_total / n), int((moved_r & (base != universe[gone])).sum())

    rm_ratio, bad_rm = remove(ids[n // 2])
    worst_rm, bad_worst = remove(ids[int(counts.argmax())])  # the most loaded member

    weighted = Ring(transition(table, [Member(ids[0], 2), *members[1:]]))
    wo = owners_of(weighted, key_slots, universe)
    wc = np.bincount(wo, minlength=n)[:n]
    weight_ratio = wc[0] / (np.delete(wc, 0).mean())

    def best_ms(fn: Callable[[], object]) -> float:
        # CPU time of this process (builds are single-threaded): on a shared machine the
        # wall clock mostly measures the neighbours.
        times = []
        for _ in range(5):
            t = time.process_time()
            fn()
            times.append((time.process_time() - t) * 1000)
        return min(times)

    stored = table.encode()
    sample = keys[: min(len(keys), 200_000)]
    rng.shuffle(sample)
    return {
        "max_mean": float(max_mean),
        "add": float(add_ratio),
        "remove_mid": float(rm_ratio),
        "remove_worst": float(worst_rm),
        "unchanged_pct": 100.0 * float(bad_add + bad_rm + bad_worst) / k_total,
        "lookup_x": time_lookup(ring, sample, n),
        "bytes": float(ring.nbytes()),
        "stored_bytes": float(len(stored)),
        "scratch_ms": best_ms(lambda: transition(None, members)),
        "add_ms": best_ms(lambda: transition(table, [*members, Member("node-new")])),
        "load_ms": best_ms(lambda: Ring(SlotTable.decode(stored))),
        "weight2": float(weight_ratio),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    keys = [rng.randbytes(16) for _ in range(args.keys)]
    print(f"keys={args.keys} seed={args.seed} slots={Ring.build([Member('x')]).params.slots}")
    print(
        "| N | max/mean | moved add ÷ ideal | moved remove-middle ÷ ideal "
        "| moved remove-most-loaded ÷ ideal | moved between unchanged | lookup ÷ xxh3%N "
        "| structure (stored) | CPU: build from scratch / add one / load stored "
        "| weight-2 share |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in (10, 100):
        r = measure(n, keys, rng)
        print(
            f"| {n} | {r['max_mean']:.3f} | {r['add']:.3f} | {r['remove_mid']:.3f} "
            f"| {r['remove_worst']:.3f} | {r['unchanged_pct']:.2f}% | {r['lookup_x']:.2f}× "
            f"| {r['bytes'] / 1024:.0f} KiB ({r['stored_bytes'] / 1024:.0f} KiB) "
            f"| {r['scratch_ms']:.1f} / {r['add_ms']:.1f} / {r['load_ms']:.1f} ms "
            f"| {r['weight2']:.3f}× |"
        )


if __name__ == "__main__":
    main()

"""`python -m synod.consensus.sim`: run seeds, print violations, end with one summary line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from synod import logging as synod_logging

from .cluster import SimResult, run_seed


def report(r: SimResult, out: list[str]) -> None:
    if r.violation is None:
        return
    out.append(f"seed {r.seed}: VIOLATION {r.violation}")
    out.append(f"  replay: make sim SEED={r.seed}")
    out.extend(f"  | {line}" for line in r.trace[-25:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synod.consensus.sim", description=__doc__)
    ap.add_argument("--seeds", type=int, default=200, help="how many seeds to run")
    ap.add_argument("--first", type=int, default=1, help="first seed (seeds are consecutive)")
    ap.add_argument("--seed", type=int, default=None, help="replay this one seed, with its trace")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    # The core logs elections and transfers; thousands of runs need only the verdicts.
    synod_logging.configure(level="warning")

    if args.seed is not None:
        seeds = [args.seed]
    else:
        seeds = list(range(args.first, args.first + args.seeds))
    out: list[str] = []
    violations = 0
    results: Iterator[SimResult]
    if len(seeds) == 1 or args.jobs <= 1:
        results = map(run_seed, seeds)
        pool = None
    else:
        pool = ProcessPoolExecutor(args.jobs)
        results = pool.map(run_seed, seeds, chunksize=4)
    for r in results:
        if r.violation is not None:
            violations += 1
            report(r, out)
            print("\n".join(out), flush=True)
            out.clear()
        elif args.seed is not None:
            print(f"seed {r.seed}: ok {r.stats}")
            print("\n".join(f"  | {line}" for line in r.trace[-25:]))
    if pool is not None:
        pool.shutdown()
    print(f"sim: {len(seeds)} seeds, {violations} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())

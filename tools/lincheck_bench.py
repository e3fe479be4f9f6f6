"""How long the linearizability checker takes on simulated register histories.

    .venv/bin/python tools/lincheck_bench.py [--seeds 30] [--ops 200] [--time-limit 10]

For several mixes of concurrency and info rate, with unique and with repeated
(0..4) written values, checks one key's simulated history per seed (valid by
construction; see tests/check/register_sim.py), then the same history with
the read nine tenths of the way through changed to a value never written (not
linearizable, found only after the search has ruled out every order of the
ops before it: the worst case). Prints median and worst seconds and how many
seeds ran out of budget (unknown) for both. The machine is shared: quote
medians from one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "check"))

from register_sim import simulate  # noqa: E402

from synod.check.history import Op  # noqa: E402
from synod.check.linearizability import Budget, check_key  # noqa: E402

NEVER_WRITTEN = -1


def timed(ops: list[Op], time_limit: float) -> tuple[float, str, int]:
    started = time.perf_counter()
    kv = check_key("r", ops, budget=Budget(time_limit=time_limit))
    return time.perf_counter() - started, kv.verdict, kv.info_ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--time-limit", type=float, default=10.0)
    args = parser.parse_args()
    print(f"{args.ops} ops per key, {args.seeds} seeds per row, budget {args.time_limit} s")
    print("                                valid history               one bad read")
    print("procs  info  values  info kept  median  worst    unknown   median  worst    unknown")
    for procs, rate in ((4, 0.1), (4, 0.2), (10, 0.2), (10, 0.3)):
        for unique in (True, False):
            good: list[float] = []
            bad: list[float] = []
            kept: list[int] = []
            unknown = [0, 0]
            for seed in range(args.seeds):
                ops = simulate(seed, args.ops, procs, rate, unique)
                took, verdict, info = timed(ops, args.time_limit)
                good.append(took)
                kept.append(info)
                if verdict == "invalid":
                    sys.exit(f"seed {seed}: linearizable by construction, judged invalid")
                unknown[0] += verdict == "unknown"
                reads = [i for i, op in enumerate(ops) if op.f == "read" and op.outcome == "ok"]
                i = reads[len(reads) * 9 // 10]
                ops[i] = replace(ops[i], result=NEVER_WRITTEN)
                took, verdict, _ = timed(ops, args.time_limit)
                bad.append(took)
                if verdict == "valid":
                    sys.exit(f"seed {seed}: a read of a value never written, judged valid")
                unknown[1] += verdict == "unknown"
            print(
                f"{procs:>5}  {rate:>4}  {'unique' if unique else '0..4':<6}"
                f"  {statistics.mean(kept):>9.1f}"
                f"  {statistics.median(good):>6.3f}  {max(good):>6.3f}  {unknown[0]:>7}"
                f"   {statistics.median(bad):>6.3f}  {max(bad):>6.3f}  {unknown[1]:>7}"
            )


if __name__ == "__main__":
    main()

"""How long the linearizability checker takes on simulated register histories.

    .venv/bin/python tools/lincheck_bench.py [--seeds 30] [--ops 200] [--processes 5]

For several mixes of concurrency and info rate, with unique and with repeated
(0..4) written values, checks one key's simulated history per seed (valid by
construction; see tests/check/register_sim.py) and prints the median and worst
time, the most states explored, and how many seeds ran out of budget. The
machine is shared: quote medians from one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "check"))

from register_sim import simulate  # noqa: E402

from synod.check.linearizability import Budget, check_key  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--time-limit", type=float, default=10.0)
    args = parser.parse_args()
    print(f"{args.ops} ops per key, {args.seeds} seeds per row, budget {args.time_limit} s")
    print("procs  info  values   info kept  median s  worst s  max states  unknown")
    for procs, rate in ((5, 0.1), (5, 0.2), (10, 0.2), (10, 0.3)):
        for unique in (True, False):
            times: list[float] = []
            kept: list[int] = []
            states = 0
            unknown = 0
            for seed in range(args.seeds):
                ops = simulate(seed, args.ops, procs, rate, unique)
                started = time.perf_counter()
                kv = check_key("r", ops, budget=Budget(time_limit=args.time_limit))
                times.append(time.perf_counter() - started)
                kept.append(kv.info_ops)
                states = max(states, kv.states)
                if kv.verdict == "unknown":
                    unknown += 1
                elif kv.verdict != "valid":
                    sys.exit(f"seed {seed}: valid by construction, judged {kv.verdict}")
            print(
                f"{procs:>5}  {rate:>4}  {'unique' if unique else '0..4':<7}"
                f"  {statistics.mean(kept):>9.1f}  {statistics.median(times):>8.3f}"
                f"  {max(times):>7.3f}  {states:>10}  {unknown:>7}"
            )


if __name__ == "__main__":
    main()

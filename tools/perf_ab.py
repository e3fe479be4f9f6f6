"""A/B two Synod variants in one run, for profiling work (issue 10).

    .venv/bin/python tools/perf_ab.py --rounds 6 --seconds 2 \\
        --a=--commit-broadcast-delay=0 --b=--commit-broadcast-delay=2
    .venv/bin/python tools/perf_ab.py --a=PYTHONPATH=/path/to/old/checkout/services

Each variant (written `--a=...`, since it may start with a dash) is a string
of member flags and NAME=value environment settings (PYTHONPATH pointing at
another checkout's `services/` runs that code). Both
3-member clusters run at once; each round runs every scenario of
`perf_compare.py` on A and B, alternating which goes first, so both see the
same machine. Prints every run, then the medians and the ratio B/A, with the
CPU all members used per operation (steadier than latency on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import perf_compare  # noqa: E402
from cluster_harness import LocalCluster  # noqa: E402


def start(variant: str) -> tuple[LocalCluster, perf_compare.System]:
    env: dict[str, str] = {}
    args: list[str] = []
    for tok in shlex.split(variant):
        if "=" in tok and not tok.startswith("-"):
            k, v = tok.split("=", 1)
            env[k] = v
        else:
            args.append(tok)
    saved = dict(os.environ)
    os.environ.update(env)  # the members inherit the environment at start
    try:
        c = LocalCluster(Path(tempfile.mkdtemp(prefix="perf-ab-")), extra_args=args)
        c.start(timeout=90)
        c.leader()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    eps = [m.endpoint for m in c.members]
    lead, fol = perf_compare.leader_of(eps)
    pid_of = {m.endpoint: m.proc.pid for m in c.members if m.proc is not None}
    return c, perf_compare.System(
        variant or "(defaults)", lead, fol, eps, list(pid_of.values()), pid_of
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", default="", help="variant A: member flags and NAME=value settings")
    ap.add_argument("--b", default="", help="variant B")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--scenarios", default="put_seq_leader,put_seq_follower,put_64")
    args = ap.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    clusters: list[LocalCluster] = []
    try:
        systems = []
        for v in (args.a, args.b):
            c, s = start(v)
            clusters.append(c)
            systems.append(s)
        results: dict[tuple[int, str], list[perf_compare.Result]] = {}
        cpu: dict[tuple[int, str], list[float]] = {}  # CPU of all members per operation, us
        for r in range(args.rounds):
            for scen in scenarios:
                order = [0, 1] if r % 2 == 0 else [1, 0]
                for i in order:
                    pids = systems[i].pids
                    before = sum(perf_compare.cpu_seconds(p) for p in pids)
                    res = perf_compare.run_scenario(systems[i], scen, args.seconds)
                    used = sum(perf_compare.cpu_seconds(p) for p in pids) - before
                    # The window is `seconds` long (connecting and warm-up come first).
                    per_op = used / max(1.0, res.ops_per_s * args.seconds) * 1e6
                    results.setdefault((i, scen), []).append(res)
                    cpu.setdefault((i, scen), []).append(per_op)
                    print(
                        f"round {r} {'AB'[i]} {scen:17} ops/s={res.ops_per_s:7.0f} "
                        f"p50={res.p50_ms:6.2f}ms cpu/op={per_op:5.0f}us",
                        flush=True,
                    )
        print(f"\nA = {systems[0].name}\nB = {systems[1].name}")
        for scen in scenarios:
            a, b = results[(0, scen)], results[(1, scen)]
            pa, pb = (statistics.median(x.p50_ms for x in xs) for xs in (a, b))
            oa, ob = (statistics.median(x.ops_per_s for x in xs) for xs in (a, b))
            ca, cb = (statistics.median(cpu[(i, scen)]) for i in (0, 1))
            print(
                f"{scen:17} A p50={pa:6.2f} ops/s={oa:6.0f} cpu/op={ca:5.0f}us"
                f" | B p50={pb:6.2f} ops/s={ob:6.0f} cpu/op={cb:5.0f}us"
                f" | B/A p50={pb / pa:.2f} ops/s={ob / oa:.2f} cpu/op={cb / ca:.2f}"
            )
    finally:
        for c in clusters:
            c.stop()


if __name__ == "__main__":
    main()

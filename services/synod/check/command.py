"""``synod check``: its flags, turned into a RunConfig (runner.py does the run)."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from synod.check.nemesis import parse_faults
from synod.check.runner import WORKLOADS, RunConfig, run

#: what ``--faults all`` means for the short CI run and by default
DEFAULT_FAULTS = "all"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=60.0, help="seconds of faults (default 60)")
    p.add_argument(
        "--workload",
        default="register,mutex",
        help=f"comma-separated: {', '.join(WORKLOADS)}, or all (default register,mutex)",
    )
    p.add_argument("--seed", type=int, default=None, help="replay this seed (default: random)")
    p.add_argument(
        "--faults",
        default=DEFAULT_FAULTS,
        help="comma-separated fault kinds or groups: all, kill, pause, partition, membership, "
        "replicas, none, or single kinds such as partition-follower (default all)",
    )
    p.add_argument("--members", type=int, default=3, choices=[3, 5], help="consensus members")
    p.add_argument("--results", default=None, help="results folder (default check-results/<seed>)")
    p.add_argument(
        "--endpoints",
        default=None,
        help="run the register, set, watch and lease workloads against these etcd v3 endpoints "
        "(host:port,...) instead of a cluster of ours; no nemesis",
    )
    p.add_argument(
        "--register-workers", type=int, default=4, help="concurrent register clients (default 4)"
    )
    p.add_argument(
        "--read-ratio",
        type=float,
        default=0.4,
        help="share of register operations that are reads; the rest are half writes, "
        "half CAS (default 0.4)",
    )
    p.add_argument(
        "--fault-hold",
        default="1.5,3.0",
        metavar="MIN,MAX",
        help="seconds each fault lasts, drawn from [MIN, MAX] (default 1.5,3.0)",
    )
    p.add_argument(
        "--liveness-bound",
        type=float,
        default=20.0,
        help="seconds after healing within which every workload must make progress (default 20)",
    )
    p.add_argument("--recovery", type=float, default=6.0, help="seconds of work after healing")
    p.add_argument(
        "--network",
        default="auto",
        choices=["auto", "netns", "proxy"],
        help="netns: a network namespace per member (root); proxy: loopback addresses and a "
        "fault-injecting proxy; auto: netns when possible (default)",
    )
    p.add_argument("--keep-data", action="store_true", help="keep the members' data folders")
    # Test-only: members serve linearizable reads locally (no ReadIndex), to show
    # that the checkers catch stale reads. Hidden from --help on purpose.
    p.add_argument("--unsafe-local-reads", action="store_true", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    words = [w.strip() for w in args.workload.split(",") if w.strip()]
    workloads = list(WORKLOADS) if "all" in words else words
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown or not workloads:
        sys.stderr.write(f"synod check: unknown workload(s) {unknown}; use {WORKLOADS} or all\n")
        return 2
    try:
        faults = parse_faults(args.faults)
    except ValueError as e:
        sys.stderr.write(f"synod check: --faults: {e}\n")
        return 2
    endpoints = None
    if args.endpoints:
        endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    try:
        lo, hi = (float(x) for x in args.fault_hold.split(","))
    except ValueError:
        sys.stderr.write(f"synod check: --fault-hold: {args.fault_hold!r} is not MIN,MAX\n")
        return 2
    cfg = RunConfig(
        seed=seed,
        duration=args.duration,
        workloads=workloads,
        faults=faults,
        faults_spec=args.faults,
        members=args.members,
        results=Path(args.results or f"check-results/{seed}"),
        endpoints=endpoints,
        unsafe_local_reads=args.unsafe_local_reads,
        recovery=args.recovery,
        liveness=args.liveness_bound,
        register_workers=args.register_workers,
        read_ratio=args.read_ratio,
        fault_hold=(lo, hi),
        keep_data=args.keep_data,
        network=args.network,
    )
    return run(cfg)

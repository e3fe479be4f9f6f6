"""Side-by-side Put/Range measurements of Synod and etcd, for profiling work (issue 10).

    .venv/bin/python tools/perf_compare.py --rounds 3 --seconds 3
    .venv/bin/python tools/perf_compare.py --only synod --synod-args=--unsafe-no-fsync

Starts a 3-member Synod cluster and a 3-member etcd cluster on loopback (fsync
on, heartbeat 50 ms, election 500 ms for both), then runs each scenario once per
round against each system, alternating, so both see the same machine load.
Prints every run and, at the end, the median of each figure with the ratio
Synod/etcd. The load generator runs in this process (Python, grpc.aio) and is
the same code for both systems.

Scenarios:
    put_seq_leader   1 Put in flight, to the leader: p50/p99 latency
    put_seq_follower 1 Put in flight, to a follower (forwarded): p50/p99 latency
    put_8            8 Puts in flight over all members: ops/s
    put_64           64 Puts in flight over all members: ops/s
    range_64         64 linearizable Ranges in flight over all members: ops/s

`--hold` keeps the clusters running after the runs (and prints the member
pids), to attach py-spy: `py-spy record --pid PID -o out.svg`.

This is a private driver for profiling, not `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from cluster_harness import LocalCluster  # noqa: E402
from etcd_harness import EtcdCluster  # noqa: E402

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc  # noqa: E402

SCENARIOS = ("put_seq_leader", "put_seq_follower", "put_8", "put_64", "range_64")


@dataclass
class Result:
    ops_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass
class System:
    name: str
    leader: str
    follower: str
    endpoints: list[str]
    pids: list[int] = field(default_factory=list)
    pid_of: dict[str, int] = field(default_factory=dict)


async def load(endpoints: list[str], inflight: int, seconds: float, kind: str) -> Result:
    chans = [grpc.aio.insecure_channel(e) for e in endpoints]
    stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]
    for s in stubs:  # connect and warm up outside the measured window
        await s.Put(rpc_pb2.PutRequest(key=b"warm", value=b"x"), timeout=10)
    n = 0
    lat: list[float] = []
    value = b"x" * 100
    stop = time.monotonic() + seconds

    async def worker(i: int) -> None:
        nonlocal n
        s = stubs[i % len(stubs)]
        k = 0
        while time.monotonic() < stop:
            t = time.perf_counter()
            if kind == "put":
                await s.Put(rpc_pb2.PutRequest(key=b"b/%d/%d" % (i, k % 100), value=value))
            else:
                await s.Range(rpc_pb2.RangeRequest(key=b"b/%d/0" % i))
            lat.append(time.perf_counter() - t)
            n += 1
            k += 1

    t0 = time.monotonic()
    await asyncio.gather(*[worker(i) for i in range(inflight)])
    elapsed = time.monotonic() - t0
    for c in chans:
        await c.close(None)
    lat.sort()
    return Result(n / elapsed, lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000)


def run_scenario(sysm: System, scenario: str, seconds: float) -> Result:
    if scenario == "put_seq_leader":
        coro = load([sysm.leader], 1, seconds, "put")
    elif scenario == "put_seq_follower":
        coro = load([sysm.follower], 1, seconds, "put")
    elif scenario == "put_8":
        coro = load(sysm.endpoints, 8, seconds, "put")
    elif scenario == "put_64":
        coro = load(sysm.endpoints, 64, seconds, "put")
    else:
        coro = load(sysm.endpoints, 64, seconds, "range")
    return asyncio.run(coro)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_pyspy(
    s: System, out: Path, tag: str, seconds: float, native: bool
) -> list[subprocess.Popen[bytes]]:
    out.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")
    procs = []
    for role, ep in (("leader", s.leader), ("follower", s.follower)):
        procs.append(
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(s.pid_of[ep]),
                    "--format",
                    "raw",
                    "--duration",
                    str(int(seconds) + 1),
                    "-o",
                    str(out / f"{tag}-{role}.txt"),
                    *(["--native"] if native else ["--nonblocking"]),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        )
    time.sleep(0.3)  # py-spy attaches; the load starts after (warm-up Puts come first anyway)
    return procs


def leader_of(endpoints: list[str]) -> tuple[str, str]:
    """(leader endpoint, a follower endpoint)."""
    ids: dict[str, tuple[int, int]] = {}
    for e in endpoints:
        with grpc.insecure_channel(e) as ch:
            st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=5)
            ids[e] = (st.header.member_id, st.leader)
    leader = next(e for e, (mid, lead) in ids.items() if mid == lead)
    follower = next(e for e in endpoints if e != leader)
    return leader, follower


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--only", choices=("synod", "etcd"))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--synod-args", default="", help="extra flags for every Synod member")
    ap.add_argument("--hold", action="store_true", help="keep the clusters up at the end")
    ap.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    ap.add_argument(
        "--pyspy",
        metavar="DIR",
        help="record Synod's leader and a follower with py-spy (collapsed stacks) in each run",
    )
    args = ap.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]

    base = Path(tempfile.mkdtemp(prefix="perf-"))
    stops: list[Callable[[], Any]] = []
    systems: list[System] = []
    try:
        if args.only != "etcd":
            (base / "synod").mkdir()
            sc = LocalCluster(base / "synod", extra_args=args.synod_args.split())
            stops.append(sc.stop)
            sc.start(timeout=90)
            sc.leader()
            eps = [m.endpoint for m in sc.members]
            lead, fol = leader_of(eps)
            pid_of = {m.endpoint: m.proc.pid for m in sc.members if m.proc is not None}
            systems.append(System("synod", lead, fol, eps, list(pid_of.values()), pid_of))
        if args.only != "synod":
            (base / "etcd").mkdir()
            ec = EtcdCluster(base / "etcd", size=3)
            stops.append(ec.stop)
            ec.start(timeout=90)
            eps = ec.endpoints
            lead, fol = leader_of(eps)
            pid_of = {m.endpoint: m.proc.pid for m in ec.members if m.proc is not None}
            systems.append(System("etcd", lead, fol, eps, list(pid_of.values()), pid_of))
        for s in systems:
            print(f"{s.name}: leader {s.leader}, pids {s.pids}", flush=True)

        results: dict[tuple[str, str], list[Result]] = {}
        for r in range(args.rounds):
            for scen in scenarios:
                order = systems if r % 2 == 0 else systems[::-1]
                for s in order:
                    spies = []
                    if args.pyspy and s.name == "synod":
                        spies = start_pyspy(
                            s, Path(args.pyspy), f"r{r}-{scen}", args.seconds, args.native
                        )
                    cpu0 = {ep: cpu_seconds(pid) for ep, pid in s.pid_of.items()}
                    t0 = time.monotonic()
                    res = run_scenario(s, scen, args.seconds)
                    wall = time.monotonic() - t0
                    cpu = {ep: cpu_seconds(pid) - cpu0[ep] for ep, pid in s.pid_of.items()}
                    for p in spies:
                        p.wait()
                    results.setdefault((s.name, scen), []).append(res)
                    print(
                        f"round {r} {s.name:5} {scen:17} ops/s={res.ops_per_s:7.0f} "
                        f"p50={res.p50_ms:6.2f}ms p99={res.p99_ms:6.2f}ms "
                        f"cpu% leader={100 * cpu[s.leader] / wall:3.0f} others="
                        + ",".join(
                            f"{100 * c / wall:3.0f}" for ep, c in cpu.items() if ep != s.leader
                        ),
                        flush=True,
                    )
        if not results:
            scenarios = []
        print("\nmedians (ratio = synod/etcd)")
        for scen in scenarios:
            row = {}
            for s in systems:
                rs = results[(s.name, scen)]
                row[s.name] = Result(
                    statistics.median(x.ops_per_s for x in rs),
                    statistics.median(x.p50_ms for x in rs),
                    statistics.median(x.p99_ms for x in rs),
                )
            line = f"{scen:17}"
            for name, m in row.items():
                line += f" | {name} ops/s={m.ops_per_s:6.0f} p50={m.p50_ms:5.2f}"
                line += f" p99={m.p99_ms:6.2f}"
            if len(row) == 2:
                a, b = row["synod"], row["etcd"]
                line += (
                    f" | ratio ops/s={a.ops_per_s / b.ops_per_s:.2f} p50={a.p50_ms / b.p50_ms:.2f}"
                )
            print(line, flush=True)
        if args.hold:
            print("holding; Ctrl-C to stop", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        for stop in stops:
            stop()


if __name__ == "__main__":
    main()

"""One checking run, start to finish (``synod check``).

1. Draw the fault schedule from the seed and print it (and the seed).
2. Start the cluster: members in network namespaces (netns.py), lock and
   router replicas (cluster.py). With ``--endpoints`` there is no cluster of
   ours: the register, set and watch workloads run against those endpoints,
   without a nemesis.
3. Run the workloads for ``duration`` seconds while the nemesis (a thread)
   carries out the schedule.
4. Heal everything, let the workloads run ``recovery`` more seconds (the
   liveness check looks at them), stop them, wait for the watchers to reach
   the final revision, and do the final reads.
5. Run the checkers, write the results folder, print the summary; the exit
   status is 0 only if every checker says valid.

Teardown (processes, namespaces, bridge, nft rules) runs in ``finally``, and
SIGTERM is turned into the same path as Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import structlog

from synod.check import report
from synod.check.checkers import CheckParams, check_all
from synod.check.cluster import ChaosCluster
from synod.check.history import History
from synod.check.lease_workload import LeaseWorkload
from synod.check.nemesis import Fault, Nemesis, make_schedule
from synod.check.netns import NetnsNetwork, sweep_stale, unavailable_reason
from synod.check.network import Network
from synod.check.proxy import ProxyNetwork
from synod.check.resource import FencedResource
from synod.check.watch_checker import WatchLog
from synod.check.workloads import (
    Channels,
    MutexWorkload,
    Recorder,
    RegisterWorkload,
    SetWorkload,
    WatchWorkload,
)

log = structlog.get_logger("synod.check")

WORKLOADS = ("register", "set", "watch", "mutex", "lease")
#: workloads that need our lock service, so not available with --endpoints
NEEDS_CLUSTER = ("mutex",)


@dataclass
class RunConfig:
    seed: int
    duration: float = 60.0
    workloads: list[str] = field(default_factory=lambda: ["register", "mutex"])
    faults: list[str] = field(default_factory=list)
    faults_spec: str = ""
    members: int = 3
    results: Path = Path("check-results")
    endpoints: list[str] | None = None
    unsafe_local_reads: bool = False
    lock_replicas: int = 2
    router_replicas: int = 1
    heartbeat_ms: int = 100
    election_ms: int = 1000
    #: seconds the workloads keep running after everything is healed
    recovery: float = 6.0
    #: the liveness bound: ok operations must resume within this after healing
    liveness: float = 20.0
    register_workers: int = 4
    lease_workers: int = 3
    #: share of register operations that are reads (the rest: half writes, half CAS)
    read_ratio: float = 0.4
    fault_gap: tuple[float, float] = (1.0, 2.5)
    fault_hold: tuple[float, float] = (1.5, 3.0)
    keep_data: bool = False
    #: auto (namespaces if possible, else the proxy), netns or proxy
    network: str = "auto"


class Interrupted(Exception):
    """SIGTERM arrived: stop, heal, tear down."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def run(cfg: RunConfig) -> int:
    print(f"synod check: seed {cfg.seed}", flush=True)
    cfg.results.mkdir(parents=True, exist_ok=True)
    external = cfg.endpoints is not None
    if external:
        dropped = [w for w in cfg.workloads if w in NEEDS_CLUSTER]
        if dropped:
            print(
                f"synod check: --endpoints: skipping {','.join(dropped)} (needs our lock service)"
            )
        cfg.workloads = [w for w in cfg.workloads if w not in NEEDS_CLUSTER]
        if cfg.faults:
            print("synod check: --endpoints: no nemesis against a cluster we did not start")
        cfg.faults = []
    names = [f"m{i + 1}" for i in range(cfg.members)]
    schedule = make_schedule(
        cfg.seed, cfg.duration, cfg.faults, cfg.members, gap=cfg.fault_gap, hold=cfg.fault_hold
    )
    schedule_text = "\n".join(f.describe(names) for f in schedule) or "(no faults)"
    print(f"synod check: fault schedule ({len(schedule)} faults):\n{schedule_text}", flush=True)
    (cfg.results / "schedule.txt").write_text(schedule_text + "\n")

    history = History(seed=cfg.seed)
    watch_logs: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="synod-check-"))
    net: Network | None = None
    cluster: ChaosCluster | None = None
    try:
        if external:
            assert cfg.endpoints is not None
            endpoints = cfg.endpoints
        else:
            swept = sweep_stale()
            if swept:
                print(f"synod check: removed namespaces left by dead runs {swept}")
            net = _network(cfg.network, names)
            if net is None:
                return 2
            net.setup()
            member_args = ["--unsafe-local-reads"] if cfg.unsafe_local_reads else []
            cluster = ChaosCluster(
                net,
                workdir,
                lock_replicas=cfg.lock_replicas if "mutex" in cfg.workloads else 0,
                router_replicas=cfg.router_replicas,
                heartbeat_ms=cfg.heartbeat_ms,
                election_ms=cfg.election_ms,
                member_args=member_args,
            )
            t = time.monotonic()
            cluster.start()
            print(f"synod check: cluster up in {time.monotonic() - t:.1f}s: "
                  f"members {', '.join(cluster.endpoints)}", flush=True)  # fmt: skip
            endpoints = cluster.endpoints
        extra = asyncio.run(_drive(cfg, history, endpoints, cluster, schedule, watch_logs))
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"synod check: interrupted ({e!r}); cleaning up", file=sys.stderr)
        history.write_jsonl(cfg.results / "history.jsonl")
        return 130
    except Exception:
        # A harness bug: keep what was recorded, say where, and fail the run.
        traceback.print_exc()
        history.write_jsonl(cfg.results / "history.jsonl")
        print(f"synod check: harness error; history so far in {cfg.results}/", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        if cluster is not None:
            cluster.stop()
            _keep_logs(workdir, cfg.results)
        if net is not None:
            net.teardown()
        if not cfg.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
    return _finish(cfg, history, watch_logs, extra)


def _network(kind: str, names: list[str]) -> Network | None:
    """The network the members run on: namespaces, or the proxy fallback (see network.py)."""
    if kind == "proxy":
        print("synod check: network: loopback addresses + fault-injecting proxy (--network proxy)")
        return ProxyNetwork(names)
    reason = unavailable_reason()
    if reason is None:
        print("synod check: network: a namespace per member on a bridge, nft partitions")
        return NetnsNetwork(names)
    if kind == "netns":
        print(f"synod check: network namespaces unavailable: {reason}", file=sys.stderr)
        return None
    print(
        f"synod check: network namespaces unavailable ({reason}); falling back to loopback "
        "addresses and a fault-injecting proxy between members (docs/reliability.md)",
        flush=True,
    )
    return ProxyNetwork(names)


def _keep_logs(workdir: Path, results: Path) -> None:
    logs = results / "logs"
    logs.mkdir(exist_ok=True)
    for f in workdir.glob("*.log"):
        shutil.copy(f, logs / f.name)


async def _drive(
    cfg: RunConfig,
    history: History,
    endpoints: list[str],
    cluster: ChaosCluster | None,
    schedule: list[Fault],
    watch_logs: list[dict[str, Any]],
) -> dict[str, Any]:
    rng = random.Random(cfg.seed + 1)  # the workloads' choices (not the fault schedule's)
    prefix = f"check-{cfg.seed}-{random.randrange(1 << 32):08x}"
    recorder = Recorder(history)
    channels = Channels(endpoints)
    stop = asyncio.Event()
    register = set_ = watch = mutex = None
    lease: LeaseWorkload | None = None
    tasks: list[asyncio.Task[None]] = []
    if "watch" in cfg.workloads:
        watch = WatchWorkload(endpoints)
        await watch.start()
    if "register" in cfg.workloads:
        register = RegisterWorkload(
            recorder, channels, f"{prefix}/reg", rng, workers=cfg.register_workers,
            read_ratio=cfg.read_ratio,
        )  # fmt: skip
        tasks.append(asyncio.create_task(register.run(stop)))
    if "set" in cfg.workloads:
        set_ = SetWorkload(recorder, channels, f"{prefix}/set")
        tasks.append(asyncio.create_task(set_.run(stop)))
    if "mutex" in cfg.workloads:
        assert cluster is not None
        mutex = MutexWorkload(
            recorder, cluster.lock_endpoints, f"{prefix}/mutex", FencedResource(), rng
        )
        tasks.append(asyncio.create_task(mutex.run(stop)))
    if "lease" in cfg.workloads:
        lease = LeaseWorkload(recorder, channels, f"{prefix}/lease", rng, workers=cfg.lease_workers)
        tasks.append(asyncio.create_task(lease.run(stop)))
    if watch is not None and not tasks:
        # Watchers need writes to watch: a register workload of one.
        register = RegisterWorkload(recorder, channels, f"{prefix}/reg", rng, workers=1)
        tasks.append(asyncio.create_task(register.run(stop)))

    started = time.monotonic()
    nemesis: Nemesis | None = None
    nemesis_thread: asyncio.Future[None] | None = None
    if cluster is not None:
        nemesis = Nemesis(cluster, history, schedule)
        nemesis_thread = asyncio.ensure_future(asyncio.to_thread(nemesis.run, started))
    extra: dict[str, Any] = {}
    healed_at = started
    try:
        await asyncio.sleep(cfg.duration)  # the run's length: the workloads work meanwhile
        if nemesis is not None and nemesis_thread is not None and cluster is not None:
            nemesis.stop.set()
            await nemesis_thread
            try:
                await asyncio.to_thread(nemesis.heal_all)
                healed = time.monotonic()
                await asyncio.to_thread(cluster.wait_members, 60.0)
                extra["healed_after"] = round(time.monotonic() - healed, 2)
            except (TimeoutError, RuntimeError, grpc.RpcError) as e:
                # Reported as a failed check (the cluster did not come back), not a crash:
                # the history so far is still checked and written.
                extra["recovery_error"] = f"{type(e).__name__}: {e}"
                print(f"synod check: the cluster did not recover: {e}", file=sys.stderr)
        healed_at = history.faults[-1].at if history.faults else started
        running = [w.name for w in (register, set_, mutex, lease) if w is not None]
        await _recover(history, running, healed_at, cfg.recovery, cfg.liveness)
    finally:
        stop.set()
        if nemesis is not None:
            nemesis.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    deadline = time.monotonic() + 60
    if register is not None:
        await register.final_reads(deadline)
    if set_ is not None:
        await set_.final_reads(deadline)
    if lease is not None:
        # its own deadline: it first waits (up to ~TTL + bound) for the leases to be due
        await lease.final_reads(healed_at, time.monotonic() + 60)
    if watch is not None:
        final_rev = await _current_revision(endpoints)
        await watch.finish(final_rev, time.monotonic() + 30)
        watch_logs.extend(watch.records())
        extra["watch"] = {
            "start_revision": watch.start_revision,
            "final_revision": final_rev,
        }
    if mutex is not None:
        await mutex.drain()
        extra["resource"] = {
            "highest": mutex.resource.highest,
            "writes": len(mutex.resource.writes),
            "refused": sum(1 for _, ok in mutex.resource.writes if not ok),
        }
    await channels.close()
    return extra


async def _recover(
    history: History, workloads: list[str], healed_at: float, at_least: float, bound: float
) -> None:
    """Keep the workloads going after healing: ``at_least`` seconds, and until each has
    an ok operation after the heal (what the liveness check looks for), or ``bound``
    (+1 s) has passed without one, so the liveness check can say so rather than not know."""

    def recovered(workload: str) -> bool:
        return any(
            op.workload == workload and op.outcome == "ok" and op.complete > healed_at
            for op in reversed(history.ops)
        )

    while True:
        elapsed = time.monotonic() - healed_at
        if elapsed >= at_least and all(map(recovered, workloads)):
            return
        if elapsed > bound + 1:
            return
        await asyncio.sleep(0.2)


async def _current_revision(endpoints: list[str]) -> int:
    from synod.client.etcd import EtcdClient

    async with EtcdClient(endpoints, timeout=10) as c:
        resp = await c.get(b"\0", range_end=b"\0", count_only=True)
        return int(resp.header.revision)


# --- checking and reporting ----------------------------------------------------------


def check(
    history: History, watch_logs: list[dict[str, Any]], cfg: RunConfig
) -> tuple[list[report.CheckerLine], dict[str, Any]]:
    """Run every checker (checkers.py); the summary's lines, and the full report as data."""
    params = CheckParams(
        liveness_bound=cfg.liveness,
        # the runner records one heal-all when everything is healed (nemesis.heal_all)
        heal_kinds=frozenset({"heal-all"}),
    )
    result = check_all(history, [WatchLog.from_record(r) for r in watch_logs], params)
    lines = []
    for r in result.results:
        detail = " ".join(f"{k}={v}" for k, v in r.counts.items())
        lines.append(report.CheckerLine(r.checker, r.verdict, detail, list(r.problems)))
    for name in result.not_run:
        lines.append(report.CheckerLine(name, "not run", "no input"))
    return lines, result.to_record()


def _finish(
    cfg: RunConfig, history: History, watch_logs: list[dict[str, Any]], extra: dict[str, Any]
) -> int:
    out = cfg.results
    history.write_jsonl(out / "history.jsonl")
    (out / "watches.json").write_text(json.dumps(watch_logs))
    lines, record = check(history, watch_logs, cfg)
    if "recovery_error" in extra:
        lines.append(report.CheckerLine("recovery", "invalid", problems=[extra["recovery_error"]]))
    (out / "checkers.json").write_text(json.dumps(record, indent=2, default=str))
    meta = {
        "duration": cfg.duration,
        "members": cfg.members if cfg.endpoints is None else f"external {cfg.endpoints}",
        "workloads": cfg.workloads,
        "faults_spec": cfg.faults_spec or "none",
    }
    text = report.summary_text(history, lines, meta)
    (out / "summary.txt").write_text(text)
    (out / "summary.json").write_text(
        json.dumps(
            {
                "seed": cfg.seed,
                "result": report.overall(lines),
                "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
                "outcomes": {w: dict(c) for w, c in report.outcome_counts(history).items()},
                "faults": len(history.faults),
                "checkers": [asdict(line) for line in lines],
                **extra,
            },
            indent=2,
        )
    )
    (out / "timeline.html").write_text(
        report.timeline_html(history, f"synod check seed {cfg.seed}")
    )
    print(text, end="")
    print(f"synod check: results in {out}/ (summary.txt, history.jsonl, timeline.html)")
    print(f"synod check: seed {cfg.seed}", flush=True)
    return 0 if report.overall(lines) == "valid" else 1

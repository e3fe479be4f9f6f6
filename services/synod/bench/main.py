"""`synod bench`: start both stacks, run every scenario, write the table, JSON and charts."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from synod.bench import failover, kv, leases, locks, procstat, report, resources, router, watch
from synod.bench.clusters import Stack, etcd_binary, etcd_stack, synod_stack
from synod.bench.runner import Progress, Recorder, plan, run_all
from synod.bench.scenario import Scale, Scenario

# Resources before failover: restarting a killed member resets its peak RSS.
SCENARIOS: list[Scenario] = [
    *kv.SCENARIOS,
    *watch.SCENARIOS,
    *leases.SCENARIOS,
    *locks.SCENARIOS,
    *router.SCENARIOS,
    *resources.SCENARIOS,
    *failover.SCENARIOS,
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", choices=["synod", "etcd", "both"], default="both",
                   help="which systems to measure (default: both; etcd needs etcd-server)")
    p.add_argument("--quick", action="store_true",
                   help="tiny windows and counts: a smoke test of the suite, not numbers")
    p.add_argument("--out", default="bench-out",
                   help="directory for bench.json, bench-table.md and the bench-*.png charts")
    p.add_argument("--repeat", type=int, default=None,
                   help="measured repetitions per scenario after the warm-up "
                        "(default 3, 1 with --quick)")
    p.add_argument("--scenario", action="append", default=[], metavar="SUBSTRING",
                   help="run only scenarios whose name contains this (repeatable)")
    p.add_argument("--from-json", metavar="BENCH_JSON", default=None,
                   help="measure nothing: redraw the table and charts of a saved bench.json")
    p.add_argument("--keep-data", action="store_true",
                   help="keep the members' data directories and logs (printed at the end)")
    # fmt: skip


def _outputs(rec: Recorder, doc: dict[str, object], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-table.md").write_text(report.markdown_table(rec) + "\n")
    pngs = report.charts(rec, out)
    print(report.terminal_table(rec))
    print(f"\nloadavg before {doc.get('loadavg_before')}, after {doc.get('loadavg_after')}; "
          f"{doc.get('seconds')} s")  # fmt: skip
    for f in doc.get("failures") or []:  # type: ignore[attr-defined]
        print(f"FAILED: {f['scenario']} on {f['system']} (repetition {f['repetition']}): "
              f"{f['error'][:300]}")  # fmt: skip
    print(f"wrote {out / 'bench.json'}, {out / 'bench-table.md'}, " + ", ".join(map(str, pngs)))


def run(args: argparse.Namespace) -> int:
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        rec = Recorder.from_json(saved)
        kept = {k: v for k, v in saved.items()
                if k not in ("figures", "runs", "latency_samples_ms")}  # fmt: skip
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        doc = report.to_json(rec, kept)  # written again in this version's form
        report.write_json(out / "bench.json", doc)
        _outputs(rec, doc, out)
        return 0
    systems = ["synod", "etcd"] if args.only == "both" else [args.only]
    if "etcd" in systems and etcd_binary() is None:
        print("synod bench: etcd is not installed (Debian package etcd-server; `make deps` "
              "installs it as root). Use --only synod to measure Synod alone.", file=sys.stderr)
        return 2
    scale = Scale.quick() if args.quick else Scale.full()
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    scenarios = [s for s in SCENARIOS
                 if not args.scenario or any(x in s.name for x in args.scenario)]  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="synod-bench-"))
    meta: dict[str, object] = {
        "command": " ".join(["synod", "bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"]
        else " ".join(sys.argv),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": procstat.machine_info(),
        "settings": {"systems": systems, "quick": args.quick, "repeat": repeat,
                     "scale": scale.__dict__, "members": 3, "fsync": True,
                     "heartbeat_ms": 100, "election_ms": 1000},
        "loadavg_before": procstat.loadavg(),
    }  # fmt: skip
    print(f"synod bench: {', '.join(systems)}; {len(scenarios)} scenarios; data in {data}",
          file=sys.stderr)  # fmt: skip
    stacks: dict[str, Stack] = {}
    code = 0
    t0 = time.monotonic()
    try:
        for system in systems:
            print(f"synod bench: starting {system} ...", file=sys.stderr)
            make = synod_stack if system == "synod" else etcd_stack
            stacks[system] = make(data / system)
            stacks[system].start()
        progress = Progress(plan(scenarios, systems, scale, repeat))

        def save_partial(rec: Recorder) -> None:
            # A crash or Ctrl-C later still leaves what was measured so far.
            partial = {**meta, "partial": True, "loadavg_after": procstat.loadavg()}
            report.write_json(out / "bench.json", report.to_json(rec, partial))

        rec = asyncio.run(run_all(scenarios, stacks, scale, repeat, progress, save_partial))
    except (RuntimeError, TimeoutError, OSError) as e:
        print(f"\nsynod bench: failed: {e}", file=sys.stderr)
        code = 1
        args.keep_data = True
    except KeyboardInterrupt:
        print("\nsynod bench: interrupted", file=sys.stderr)
        code = 130
    finally:
        for stack in stacks.values():
            stack.stop()
        if args.keep_data:
            print(f"synod bench: data and logs kept in {data}", file=sys.stderr)
        else:
            shutil.rmtree(data, ignore_errors=True)
    if code:
        return code
    meta["loadavg_after"] = procstat.loadavg()
    meta["seconds"] = round(time.monotonic() - t0, 1)
    doc = report.to_json(rec, meta)
    report.write_json(out / "bench.json", doc)
    _outputs(rec, doc, out)
    return 0

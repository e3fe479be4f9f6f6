"""`synod check` end to end: the short CI run, the broken mode, and --endpoints on etcd.

These start real clusters (members in network namespaces) and run for about a
minute, so they share one xdist worker (group "chaos") and never run at the same time
as each other. Each prints the seed that replays it.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from etcd_harness import ETCD_BIN, EtcdCluster
from harness_run import synod_check
from stale_reads import stale_reads

from synod.check.nemesis import make_schedule, parse_faults

pytestmark = [pytest.mark.xdist_group("chaos"), pytest.mark.timeout(400)]


def _seed() -> int:
    seed = random.randrange(1 << 31)
    print(f"seed {seed} (replay: synod check --seed {seed} with the same flags)")
    return seed


def _seed_drawing_every_group(duration: float, spec: str) -> int:
    """A random seed whose fault schedule has at least one fault of each group in
    ``spec``: 7 faults from 3 groups may, by chance, miss one (the run stays valid, but
    it would not be the run this test is about)."""
    groups = spec.split(",")
    while True:
        seed = _seed()
        kinds = {f.kind for f in make_schedule(seed, duration, parse_faults(spec), 3)}
        if all(kinds & set(parse_faults(g)) for g in groups):
            return seed


def test_short_run_under_kills_partitions_and_pauses_passes(tmp_path: Path) -> None:
    """The CI run: 3 members, kills + partitions + pauses, register and mutex workloads.
    (Namespaces where possible; elsewhere synod check falls back to the proxy network.)"""
    seed = _seed_drawing_every_group(30, "kill,partition,pause")
    run = synod_check(
        tmp_path / "results", "--seed", str(seed), "--duration", "30", "--recovery", "4",
        "--workload", "register,mutex", "--faults", "kill,partition,pause",
    )  # fmt: skip
    assert f"synod check: seed {seed}" in run.output
    h = run.history
    assert h.seed == seed
    kinds = {f.kind for f in h.faults}
    assert {"kill", "restart", "heal-all"} <= kinds
    assert kinds & {"partition", "pause"}
    for workload in ("register", "mutex"):
        ops = list(h.of(workload))
        assert sum(op.outcome == "ok" for op in ops) > 50, f"{workload}: too little progress"
    acquires = [op for op in h.of("mutex") if op.f == "acquire" and op.outcome == "ok"]
    tokens = [op.result for op in sorted(acquires, key=lambda op: op.complete)]
    assert len(set(tokens)) == len(tokens), "a fencing token was granted twice"
    assert stale_reads(h) == []
    for name in ("summary.txt", "summary.json", "checkers.json", "timeline.html"):
        assert (run.results / name).stat().st_size > 0
    # The schedule carried out is the one the seed draws (replayable).
    drawn = make_schedule(seed, 30, parse_faults("kill,partition,pause"), 3)
    assert (run.results / "schedule.txt").read_text() == (
        "\n".join(f.describe(["m1", "m2", "m3"]) for f in drawn) + "\n"
    )
    assert run.returncode == 0, run.summary
    assert "RESULT: VALID" in run.summary


def test_broken_mode_stale_reads_are_caught(tmp_path: Path) -> None:
    """Members that serve reads without ReadIndex, a follower isolated repeatedly,
    clients bound to every member, mostly reads: the clients on the isolated
    follower read many times (between writes that hang there until their
    deadline) while the majority moves on, so stale reads are all but certain."""
    seed = _seed()
    run = synod_check(
        tmp_path / "results", "--seed", str(seed), "--duration", "12",
        "--workload", "register", "--faults", "partition-follower", "--fault-hold", "3,4",
        "--register-workers", "6", "--read-ratio", "0.9", "--recovery", "2",
        "--unsafe-local-reads",
    )  # fmt: skip
    assert {f.kind for f in run.history.faults} >= {"partition", "heal"}
    assert stale_reads(run.history), "no stale read in the broken mode's history"
    assert run.returncode == 1, run.summary
    assert "RESULT: INVALID" in run.summary
    assert any(
        line.split()[:2] == ["linearizability", "INVALID"] for line in run.summary.splitlines()
    ), run.summary


@pytest.mark.skipif(not shutil.which(ETCD_BIN), reason="etcd not installed")
def test_endpoints_runs_register_set_watch_lease_against_real_etcd(tmp_path: Path) -> None:
    seed = _seed()
    (tmp_path / "etcd").mkdir()
    etcd = EtcdCluster(tmp_path / "etcd", size=3).start()
    try:
        run = synod_check(
            tmp_path / "results", "--seed", str(seed), "--duration", "6",
            "--workload", "all", "--endpoints", ",".join(etcd.endpoints), "--recovery", "1",
        )  # fmt: skip
    finally:
        etcd.stop()
    assert "skipping mutex" in run.output
    assert "no nemesis" in run.output
    h = run.history
    assert h.faults == []
    assert {op.workload for op in h.ops} == {"register", "set", "lease"}
    final = [op for op in h.of("set") if op.f == "read" and op.outcome == "ok"]
    assert final, "no final read of the set"
    added = {op.value for op in h.of("set") if op.f == "add" and op.outcome == "ok"}
    assert added and added <= set(final[-1].result)
    assert stale_reads(h) == []
    watches = json.loads((run.results / "watches.json").read_text())
    assert len(watches) == 3
    revisions = [[e["revision"] for e in w["events"]] for w in watches]
    assert revisions[0] and revisions[0] == revisions[1] == revisions[2]
    assert all(w["end_revision"] is not None for w in watches), "a watcher fell behind"
    assert run.returncode == 0, run.summary
    assert "RESULT: VALID" in run.summary

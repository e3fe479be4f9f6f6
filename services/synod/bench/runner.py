"""Runs scenarios against the stacks: warm-up, then repetitions, alternating the systems.

Within a scenario, each repetition runs on every system before the next one
starts, and the order flips every repetition (Synod first, then etcd first),
so slow drifts of the shared machine's load land on both systems alike.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synod.bench import procstat
from synod.bench.clusters import Stack
from synod.bench.scenario import Result, Scale, Scenario

#: a run that takes longer is recorded as failed (a hung call must not hang the bench)
RUN_TIMEOUT_S = 300.0

#: latency samples kept per (distribution, system) for the charts and the JSON
SAMPLES_KEPT = 20_000


@dataclass
class Stats:
    values: list[float] = field(default_factory=list)
    gen_cpu: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "median": self.median,
            "min": min(self.values, default=0.0),
            "max": max(self.values, default=0.0),
            "values": self.values,
            "generator_cpu_cores": self.gen_cpu,
            "errors": self.errors,
        }


@dataclass
class Recorder:
    stats: dict[tuple[str, str], Stats] = field(default_factory=dict)  # (figure, system)
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    runs: list[dict[str, object]] = field(default_factory=list)
    failures: list[dict[str, object]] = field(default_factory=list)

    @staticmethod
    def from_json(doc: dict[str, Any]) -> Recorder:
        """The recorder a bench.json was written from (to redraw the table and charts)."""
        rec = Recorder(runs=list(doc.get("runs", [])), failures=list(doc.get("failures", [])))
        for f in doc["figures"]:
            for system in ("synod", "etcd"):
                if system in f:
                    j = f[system]
                    rec.stats[(f["key"], system)] = Stats(
                        list(j["values"]), list(j["generator_cpu_cores"]), int(j["errors"])
                    )
        for name, lat in doc.get("latency_samples_ms", {}).items():
            dist, _, system = name.rpartition("/")
            rec.samples[(dist, system)] = list(lat)
        return rec

    def add(self, scenario: Scenario, system: str, rep: int, r: Result) -> None:
        for key, v in r.values.items():
            s = self.stats.setdefault((key, system), Stats())
            s.values.append(v)
            s.gen_cpu.append(round(r.gen_cpu, 3))
            s.errors += r.errors
        for name, lat in r.samples.items():
            kept = self.samples.setdefault((name, system), [])
            kept.extend(lat[: max(0, SAMPLES_KEPT - len(kept))])
        self.runs.append(
            {
                "scenario": scenario.name, "system": system, "repetition": rep,
                "values": r.values, "generator_cpu_cores": round(r.gen_cpu, 3),
                "errors": r.errors, "extra": r.extra, "loadavg": procstat.loadavg(),
            }
        )  # fmt: skip


class Progress:
    """One line on the terminal, redrawn: a bar, the step count and what runs now."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.done = 0
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()

    def show(self, what: str) -> None:
        width = 30
        filled = int(width * self.done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        line = f"[{bar}] {self.done}/{self.total} {time.monotonic() - self.t0:5.0f}s  {what}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line[:150])
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def step(self) -> None:
        self.done += 1

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def plan(scenarios: list[Scenario], systems: list[str], scale: Scale, repeat: int) -> int:
    steps = 0
    for sc in scenarios:
        n = len([s for s in systems if s == "synod" or not sc.synod_only])
        steps += n * (int(sc.warmup) + sc.repeat(scale, repeat))
    return steps


async def run_all(
    scenarios: list[Scenario],
    stacks: dict[str, Stack],
    scale: Scale,
    repeat: int,
    progress: Progress,
    after_scenario: Callable[[Recorder], None] | None = None,
) -> Recorder:
    """Every scenario on every system; a run that raises is recorded in `failures`."""
    rec = Recorder()
    for sc in scenarios:
        systems = [s for s in stacks if s == "synod" or not sc.synod_only]
        reps = sc.repeat(scale, repeat)
        warm = int(sc.warmup)
        for i in range(warm + reps):
            order = systems if i % 2 == 0 else systems[::-1]
            for system in order:
                label = "warm-up" if i < warm else f"{i - warm + 1}/{reps}"
                progress.show(f"{sc.name} · {system} · {label}")
                try:
                    async with asyncio.timeout(RUN_TIMEOUT_S):
                        result = await sc.run(stacks[system], scale, i < warm)
                except Exception as e:  # noqa: BLE001 - one failed run must not lose the rest
                    failed = {"scenario": sc.name, "system": system, "repetition": i - warm}
                    rec.failures.append({**failed, "error": repr(e)[:2000]})
                else:
                    if i >= warm:
                        rec.add(sc, system, i - warm, result)
                progress.step()
        if after_scenario is not None:
            after_scenario(rec)
    progress.show("done")
    progress.finish()
    return rec

"""Every checker over one run: :func:`check_all` and its summary table.

The checkers are pure functions of the recorded history (no I/O, no clock
except the linearizability search's own time budget):

- ``linearizability`` (``linearizability.py``): the ``register`` workload, per key;
- ``set`` (``set_checker.py``), ``mutex`` (``mutex_checker.py``);
- ``lease`` (``lease_checker.py``): no early expiry, no resurrection, and lapsed
  leases gone within TTL + a bound once the faults are over;
- ``watch`` (``watch_checker.py``): the watch logs, recorded beside the history;
- ``liveness`` (``liveness.py``): recovery after the final heal, every workload.

A checker runs when its input is there (ops of its workload, watch logs); the
others are listed as not run. The run's verdict is ``invalid`` if any checker
found a violation, else ``unknown`` if any could not decide, else ``valid``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from synod.check.history import History
from synod.check.lease_checker import DEFAULT_BOUND, DEFAULT_EPS, check_leases
from synod.check.linearizability import Budget, KeyVerdict, check_registers
from synod.check.liveness import DEFAULT_HEAL_KINDS, check_liveness
from synod.check.mutex_checker import check_mutex
from synod.check.set_checker import check_set
from synod.check.verdict import CheckResult, Verdict, combine
from synod.check.watch_checker import WatchEvent, WatchLog, check_watches

__all__ = [
    "Budget",
    "CheckParams",
    "CheckResult",
    "Report",
    "Verdict",
    "WatchEvent",
    "WatchLog",
    "check_all",
    "render_summary",
]

CHECKERS = ("linearizability", "set", "mutex", "lease", "watch", "liveness")


@dataclass(frozen=True)
class CheckParams:
    """Knobs of :func:`check_all`."""

    budget: Budget = field(default_factory=Budget)  # per register key
    liveness_bound: float = 10.0  # seconds from the final heal to each workload's first ok op
    heal_kinds: frozenset[str] = DEFAULT_HEAL_KINDS  # fault kinds that end the faults
    liveness_workloads: tuple[str, ...] | None = None  # None: every workload in the history
    lease_eps: float = DEFAULT_EPS  # lease_checker.py: allowance on early expiry
    lease_bound: float = DEFAULT_BOUND  # lease_checker.py: past TTL, once healed


@dataclass
class Report:
    """The verdicts on one run, with what the summary table shows."""

    seed: int
    ops: dict[str, Counter[str]]  # workload -> outcome -> count
    faults: Counter[str]  # fault kind -> count
    results: list[CheckResult]
    not_run: list[str]
    register_keys: list[KeyVerdict] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return combine(r.verdict for r in self.results)

    def result(self, checker: str) -> CheckResult | None:
        return next((r for r in self.results if r.checker == checker), None)

    def to_record(self) -> dict[str, Any]:
        """The report as plain JSON-able data, for the results folder."""
        return {
            "seed": self.seed,
            "verdict": self.verdict,
            "ops": {workload: dict(outcomes) for workload, outcomes in self.ops.items()},
            "faults": dict(self.faults),
            "results": [asdict(r) for r in self.results],
            "not_run": list(self.not_run),
        }


def check_all(
    history: History, watch_logs: Sequence[WatchLog] = (), params: CheckParams | None = None
) -> Report:
    params = params or CheckParams()
    workloads = {op.workload for op in history.ops}
    results: list[CheckResult] = []
    not_run: list[str] = []
    register_keys: list[KeyVerdict] = []
    if "register" in workloads:
        lin, register_keys = check_registers(history, budget=params.budget)
        results.append(lin)
    else:
        not_run.append("linearizability")
    for name, workload, run in (("set", "set", check_set), ("mutex", "mutex", check_mutex)):
        if workload in workloads:
            results.append(run(history))
        else:
            not_run.append(name)
    if "lease" in workloads:
        results.append(
            check_leases(
                history,
                eps=params.lease_eps,
                bound=params.lease_bound,
                heal_kinds=params.heal_kinds,
            )
        )
    else:
        not_run.append("lease")
    if watch_logs:
        results.append(check_watches(list(watch_logs)))
    else:
        not_run.append("watch")
    if history.ops:
        results.append(
            check_liveness(
                history, params.liveness_bound, params.heal_kinds, params.liveness_workloads
            )
        )
    else:
        not_run.append("liveness")

    ops: dict[str, Counter[str]] = {}
    for op in history.ops:
        ops.setdefault(op.workload, Counter())[op.outcome] += 1
    faults = Counter(fault.kind for fault in history.faults)
    return Report(history.seed, ops, faults, results, not_run, register_keys)


def render_summary(report: Report, max_problems: int = 20) -> str:
    """A plain-text summary: operations by workload and outcome, faults by kind,
    each checker's verdict and counts, then the problems found."""
    lines = [f"seed {report.seed}", ""]
    rows: list[tuple[str, ...]] = [("workload", "ops", "ok", "fail", "info")]
    total: Counter[str] = Counter()
    for workload, outcomes in sorted(report.ops.items()):
        total.update(outcomes)
        rows.append((workload, *_outcome_cells(outcomes)))
    rows.append(("total", *_outcome_cells(total)))
    lines += _table(rows)
    lines.append("")
    faults = ", ".join(f"{kind} {n}" for kind, n in sorted(report.faults.items()))
    lines.append(f"faults: {sum(report.faults.values())}" + (f" ({faults})" if faults else ""))
    lines.append("")
    rows = [("checker", "verdict", "counts")]
    for r in report.results:
        counts = " ".join(f"{k}={v}" for k, v in r.counts.items())
        rows.append((r.checker, r.verdict.upper(), counts))
    for name in report.not_run:
        rows.append((name, "not run", "no input"))
    lines += _table(rows)
    lines.append("")
    lines.append(f"verdict: {report.verdict.upper()}")
    for r in report.results:
        if not r.problems:
            continue
        lines.append("")
        lines.append(f"{r.checker} ({r.verdict}): {len(r.problems)} problem(s)")
        for problem in r.problems[:max_problems]:
            lines.append("  " + problem.replace("\n", "\n  "))
        if len(r.problems) > max_problems:
            lines.append(f"  ... and {len(r.problems) - max_problems} more")
    return "\n".join(lines) + "\n"


def _outcome_cells(outcomes: Counter[str]) -> tuple[str, ...]:
    return tuple(
        str(n) for n in (sum(outcomes.values()), outcomes["ok"], outcomes["fail"], outcomes["info"])
    )


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]

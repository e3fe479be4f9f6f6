"""The liveness check: once the faults are over, every workload makes progress
again within a stated bound.

The **final heal** is the last fault event (by ``at``); it must be of a kind
that ends a fault (by default ``heal-all``, which the harness records once it
has healed everything, and ``heal``, ``restart``, ``resume``, ``member-add``,
which may trail it), otherwise the check is ``unknown``: the run ended inside
a fault. With no faults at all, the first op's invocation stands in for it.

For each workload, its **recovery time** is from the final heal to the first
``ok`` op that completed after it (an op invoked before the heal and served
after it counts: the system served it). Longer than ``bound`` seconds is a
violation; so is no ``ok`` op at all while the workload kept trying past the
bound. If the workload's ops end before ``heal + bound`` without an ``ok``,
the history cannot tell (``unknown``): the run stopped too soon.
"""

from __future__ import annotations

from collections.abc import Iterable

from synod.check.history import History
from synod.check.verdict import CheckResult, Verdict, combine

DEFAULT_HEAL_KINDS = frozenset({"heal-all", "heal", "restart", "resume", "member-add"})


def check_liveness(
    history: History,
    bound: float,
    heal_kinds: Iterable[str] = DEFAULT_HEAL_KINDS,
    workloads: Iterable[str] | None = None,
) -> CheckResult:
    names = sorted(set(workloads) if workloads is not None else {op.workload for op in history.ops})
    counts: dict[str, int] = {"workloads": len(names), "bound_ms": round(bound * 1000)}
    problems: list[str] = []
    if not history.ops:
        return CheckResult("liveness", "unknown", counts, ["liveness: no operations recorded"])
    if history.faults:
        last = max(history.faults, key=lambda f: f.at)
        if last.kind not in set(heal_kinds):
            problems.append(
                f"liveness: the last fault ({last.kind} of {', '.join(last.targets) or '-'} "
                f"at {last.at:.6f}) is not a heal; cannot tell when faults ended"
            )
            return CheckResult("liveness", "unknown", counts, problems)
        healed = last.at
    else:
        healed = min(op.invoke for op in history.ops)

    verdicts: list[Verdict] = []
    for name in names:
        ops = [op for op in history.of(name)]
        firsts = [op.complete for op in ops if op.outcome == "ok" and op.complete >= healed]
        if firsts:
            recovery = min(firsts) - healed
            counts[f"{name}_ms"] = round(recovery * 1000)
            if recovery > bound:
                problems.append(
                    f"liveness: {name} took {recovery:.3f} s after the final heal at "
                    f"{healed:.6f} to complete an ok op (bound {bound} s)"
                )
                verdicts.append("invalid")
            else:
                verdicts.append("valid")
            continue
        last_seen = max((max(op.invoke, op.complete) for op in ops), default=float("-inf"))
        if last_seen >= healed + bound:
            problems.append(
                f"liveness: {name} completed no ok op in the {last_seen - healed:.3f} s after "
                f"the final heal at {healed:.6f} (bound {bound} s)"
            )
            verdicts.append("invalid")
        else:
            ended = (
                "before it"
                if last_seen < healed
                else f"{last_seen - healed:.3f} s after it, within the bound ({bound} s)"
            )
            problems.append(
                f"liveness: {name} has no ok op after the final heal at {healed:.6f} and its "
                f"ops end {ended}: the run stopped too soon to tell"
            )
            verdicts.append("unknown")
    return CheckResult("liveness", combine(verdicts), counts, problems)

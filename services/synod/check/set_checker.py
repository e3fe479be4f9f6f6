"""The set checker: no acknowledged add is lost, nothing appears that was not added.

Reads the ``set`` workload's ops (see ``history.py``): ``add`` of an element,
``read`` returning the sorted list of all elements, per set (``key``).

- The **final reads** of a set are its ``ok`` reads invoked after every add
  to it had completed (ok, fail or given up): the harness does them after
  healing. A set without one is ``unknown``.
- **lost**: an element whose add was ``ok`` but that a final read lacks, or
  that one final read had and a later one (invoked after it completed) lacks.
- **unexpected**: an element in a final read that was never added, or whose
  add ``fail``ed (it certainly did not happen).
- **recovered**: an element whose add ended ``info`` and that a final read has
  (allowed: the add took effect after all). Reported, not a violation.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from synod.check.history import History, Op
from synod.check.verdict import CheckResult, Verdict, combine

_SHOWN = 10  # elements listed per problem line


def check_set(history: History, workload: str = "set") -> CheckResult:
    counts = dict.fromkeys(
        ("sets", "ok_adds", "info_adds", "fail_adds", "final_reads", "lost", "unexpected"), 0
    )
    counts["recovered"] = 0
    problems: list[str] = []
    verdicts: list[Verdict] = []
    for key, ops in sorted(history.by_key(workload).items()):
        verdict = _check_one(key, ops, counts, problems)
        verdicts.append(verdict)
    counts["sets"] = len(verdicts)
    return CheckResult("set", combine(verdicts), counts, problems)


def _check_one(key: str, ops: list[Op], counts: dict[str, int], problems: list[str]) -> Verdict:
    adds = [op for op in ops if op.f == "add"]
    by_outcome: dict[str, set[Hashable]] = {"ok": set(), "info": set(), "fail": set()}
    for op in adds:
        by_outcome[op.outcome].add(_element(op.value))
    ok_adds, info_adds = by_outcome["ok"], by_outcome["info"]
    # an element added once ok and once failed was added
    fail_adds = by_outcome["fail"] - ok_adds - info_adds
    counts["ok_adds"] += len(ok_adds)
    counts["info_adds"] += len(info_adds - ok_adds)
    counts["fail_adds"] += len(fail_adds)

    last_add = max((op.complete for op in adds), default=float("-inf"))
    finals = sorted(
        (op for op in ops if op.f == "read" and op.outcome == "ok" and op.invoke >= last_add),
        key=lambda op: op.invoke,
    )
    counts["final_reads"] += len(finals)
    if not finals:
        problems.append(f"set {key!r}: no ok read invoked after every add completed; cannot tell")
        return "unknown"

    lost: set[Hashable] = set()
    unexpected: set[Hashable] = set()
    recovered: set[Hashable] = set()
    for i, read in enumerate(finals):
        seen = {_element(e) for e in read.result or ()}
        missing = ok_adds - seen
        if missing:
            problems.append(
                f"set {key!r}: final read by p{read.process} [{read.invoke:.6f} .. "
                f"{read.complete:.6f}] lacks {len(missing)} acknowledged adds: "
                + _listed(missing, adds)
            )
        extra = seen - ok_adds - info_adds
        if extra:
            failed = extra & fail_adds
            problems.append(
                f"set {key!r}: final read by p{read.process} [{read.invoke:.6f} .. "
                f"{read.complete:.6f}] has {len(extra)} elements never added"
                + (f" ({len(failed)} of them from failed adds)" if failed else "")
                + f": {_sorted(extra)[:_SHOWN]}"
            )
        for earlier in finals[:i]:
            if earlier.complete < read.invoke:
                gone = {_element(e) for e in earlier.result or ()} - seen
                gone -= missing | extra  # already reported
                if gone:
                    problems.append(
                        f"set {key!r}: {len(gone)} elements read at {earlier.complete:.6f} "
                        f"are gone by the read at {read.invoke:.6f}: {_sorted(gone)[:_SHOWN]}"
                    )
                    lost |= gone
        lost |= missing
        unexpected |= extra
        recovered |= seen & (info_adds - ok_adds)
    counts["lost"] += len(lost)
    counts["unexpected"] += len(unexpected)
    counts["recovered"] += len(recovered)
    return "invalid" if lost or unexpected else "valid"


def _element(value: Any) -> Hashable:
    return tuple(value) if isinstance(value, list) else value


def _sorted(elements: Iterable[Hashable]) -> list[Hashable]:
    return sorted(elements, key=repr)


def _listed(elements: set[Hashable], adds: list[Op]) -> str:
    # each with when its add was acknowledged, so the reader can look it up
    acked: dict[Hashable, Op] = {}
    for op in sorted(adds, key=lambda o: o.complete):
        if op.outcome == "ok":
            acked.setdefault(_element(op.value), op)
    shown = [
        f"{e!r} (added by p{acked[e].process}, ok at {acked[e].complete:.6f})"
        for e in _sorted(elements)[:_SHOWN]
    ]
    more = f" and {len(elements) - _SHOWN} more" if len(elements) > _SHOWN else ""
    return ", ".join(shown) + more

"""check_all over a whole run: which checkers run, the overall verdict, the table."""

from __future__ import annotations

import json

from synod.check.checkers import CheckParams, WatchEvent, WatchLog, check_all, render_summary
from synod.check.history import FaultEvent, History, Op, Outcome
from synod.check.linearizability import Budget


def o(
    workload: str,
    f: str,
    value: object,
    t0: float,
    t1: float,
    outcome: Outcome = "ok",
    result: object = None,
    key: str = "k",
    process: int = 1,
) -> Op:
    return Op(
        process=process,
        workload=workload,
        f=f,
        key=key,
        value=value,
        invoke=t0,
        complete=t1,
        outcome=outcome,
        result=result,
    )


def run(stale: bool = False) -> History:
    ops = [
        o("register", "write", 1, 0, 1),
        o("register", "write", 2, 2, 3, process=2),
        o("register", "read", None, 4, 5, result=1 if stale else 2),
        o("register", "cas", [2, 3], 5, 6, "fail", process=3),
        o("mutex", "acquire", None, 0, 1, result=7),
        o("mutex", "write", 7, 1.5, 1.5),
        o("mutex", "write", 7, 4.5, 4.5),
        o("set", "add", 1, 0, 1),
        o("set", "add", 2, 0, 6, "info", process=4),
        o("set", "read", None, 7, 8, result=[1]),
    ]
    faults = [
        FaultEvent(2, "kill", ("n1",)),
        FaultEvent(3, "restart", ("n1",)),
        FaultEvent(4, "heal"),
    ]
    return History(seed=42, ops=ops, faults=faults)


def test_clean_run_is_valid_and_table_lists_every_checker() -> None:
    logs = [WatchLog("w1", 1, [WatchEvent(2, "k", "put")])]
    report = check_all(run(), logs, CheckParams(liveness_bound=5.0))
    assert report.verdict == "valid", render_summary(report)
    assert [r.checker for r in report.results] == [
        "linearizability",
        "set",
        "mutex",
        "watch",
        "liveness",
    ]
    text = render_summary(report)
    assert "seed 42" in text and "verdict: VALID" in text
    assert "faults: 3 (heal 1, kill 1, restart 1)" in text
    register_row = next(line for line in text.splitlines() if line.startswith("register"))
    assert register_row.split() == ["register", "4", "3", "1", "0"]
    record = json.loads(json.dumps(report.to_record()))
    assert record["verdict"] == "valid" and record["ops"]["set"] == {"ok": 2, "info": 1}


def test_violation_makes_the_run_invalid_and_is_explained() -> None:
    report = check_all(run(stale=True), params=CheckParams(liveness_bound=5.0))
    assert report.verdict == "invalid"
    lin = report.result("linearizability")
    assert lin is not None and lin.verdict == "invalid"
    text = render_summary(report)
    assert "linearizability  INVALID" in text and "cannot place" in text
    assert "watch            not run" in text


def test_unknown_is_reported_as_such_not_as_a_pass() -> None:
    report = check_all(run(), params=CheckParams(budget=Budget(max_states=1, time_limit=None)))
    assert report.verdict == "unknown"
    assert "verdict: UNKNOWN" in render_summary(report)

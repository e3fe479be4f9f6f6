"""The liveness check: progress within the bound after the final heal."""

from __future__ import annotations

from synod.check.history import FaultEvent, History, Op, Outcome
from synod.check.liveness import check_liveness


def o(workload: str, t0: float, t1: float, outcome: Outcome = "ok") -> Op:
    return Op(
        process=1,
        workload=workload,
        f="read",
        key="k",
        value=None,
        invoke=t0,
        complete=t1,
        outcome=outcome,
    )


FAULTS = [FaultEvent(1, "partition", ("n1",)), FaultEvent(5, "heal")]


def test_progress_within_the_bound_is_valid() -> None:
    h = History(seed=1, ops=[o("register", 4, 6), o("mutex", 4.5, 7.5)], faults=FAULTS)
    r = check_liveness(h, bound=3.0)
    assert r.verdict == "valid", r.problems
    assert (r.counts["register_ms"], r.counts["mutex_ms"]) == (1000, 2500)


def test_slow_recovery_is_invalid() -> None:
    h = History(seed=1, ops=[o("register", 4, 6), o("mutex", 4.5, 9)], faults=FAULTS)
    r = check_liveness(h, bound=3.0)
    assert r.verdict == "invalid"
    assert "mutex took 4.000 s" in r.problems[0]


def test_no_progress_while_still_trying_is_invalid() -> None:
    ops = [o("register", 6, 7, "info"), o("register", 8, 10, "fail")]
    r = check_liveness(History(seed=1, ops=ops, faults=FAULTS), bound=3.0)
    assert r.verdict == "invalid"


def test_run_ending_too_soon_is_unknown() -> None:
    ops = [o("register", 5.5, 6, "fail")]
    assert check_liveness(History(seed=1, ops=ops, faults=FAULTS), bound=3.0).verdict == "unknown"


def test_faults_not_ending_in_a_heal_is_unknown() -> None:
    faults = [*FAULTS, FaultEvent(6, "kill", ("n2",))]
    h = History(seed=1, ops=[o("register", 4, 6.5)], faults=faults)
    r = check_liveness(h, bound=3.0)
    assert r.verdict == "unknown" and "kill of n2" in r.problems[0]
    assert check_liveness(h, bound=3.0, heal_kinds={"heal", "kill"}).verdict == "valid"


def test_final_heal_is_the_last_healing_event() -> None:
    faults = [*FAULTS, FaultEvent(6, "heal-all"), FaultEvent(6.5, "restart", ("n2",))]
    h = History(seed=1, ops=[o("register", 4, 7)], faults=faults)
    r = check_liveness(h, bound=3.0)
    assert r.verdict == "valid" and r.counts["register_ms"] == 500

"""The set checker on hand-written histories: lost, unexpected and recovered adds."""

from __future__ import annotations

from typing import Any

from synod.check.history import History, Op, Outcome
from synod.check.set_checker import check_set


def add(e: int, t0: float, t1: float, outcome: Outcome = "ok", key: str = "s") -> Op:
    return Op(
        process=e,
        workload="set",
        f="add",
        key=key,
        value=e,
        invoke=t0,
        complete=t1,
        outcome=outcome,
    )


def read(elements: list[Any], t0: float, t1: float, key: str = "s") -> Op:
    return Op(
        process=999,
        workload="set",
        f="read",
        key=key,
        value=None,
        invoke=t0,
        complete=t1,
        outcome="ok",
        result=sorted(elements),
    )


def check(*ops: Op) -> Any:
    return check_set(History(seed=1, ops=list(ops)))


def test_every_acknowledged_add_present_is_valid() -> None:
    r = check(add(1, 0, 1), add(2, 0.5, 1.5), add(3, 1, 2, "fail"), read([1, 2], 10, 11))
    assert r.verdict == "valid", r.problems
    assert (r.counts["ok_adds"], r.counts["fail_adds"], r.counts["final_reads"]) == (2, 1, 1)


def test_lost_acknowledged_add_is_invalid() -> None:
    r = check(add(1, 0, 1), add(2, 0.5, 1.5), read([1], 10, 11))
    assert r.verdict == "invalid"
    assert r.counts["lost"] == 1
    assert "2 (added by p2, ok at 1.500000)" in r.problems[0]


def test_info_adds_may_or_may_not_be_there() -> None:
    r = check(add(1, 0, 1), add(2, 0, 5, "info"), add(3, 0, 5, "info"), read([1, 3], 10, 11))
    assert r.verdict == "valid", r.problems
    assert (r.counts["recovered"], r.counts["info_adds"]) == (1, 2)


def test_elements_never_added_or_failed_are_unexpected() -> None:
    r = check(add(1, 0, 1), add(2, 0, 1, "fail"), read([1, 2, 7], 10, 11))
    assert r.verdict == "invalid"
    assert r.counts["unexpected"] == 2
    assert "1 of them from failed adds" in r.problems[0]


def test_element_vanishing_between_final_reads_is_lost() -> None:
    r = check(add(1, 0, 1), add(2, 0, 5, "info"), read([1, 2], 10, 11), read([1], 12, 13))
    assert r.verdict == "invalid"
    assert r.counts["lost"] == 1
    assert "gone" in r.problems[0]


def test_reads_during_the_run_are_not_final_reads() -> None:
    # a read before the last add completed is not held to contain everything
    r = check(add(1, 0, 1), read([], 0.5, 0.6), add(2, 2, 3), read([1, 2], 10, 11))
    assert r.verdict == "valid", r.problems
    assert r.counts["final_reads"] == 1


def test_no_final_read_is_unknown() -> None:
    r = check(add(1, 0, 1), add(2, 0, 5), read([1], 3, 4))
    assert r.verdict == "unknown"


def test_sets_are_checked_separately() -> None:
    r = check(
        add(1, 0, 1, key="a"),
        add(2, 0, 1, key="b"),
        read([1], 5, 6, key="a"),
        read([1], 5, 6, key="b"),
    )
    assert r.verdict == "invalid"
    assert r.counts["sets"] == 2 and r.counts["lost"] == 1 and r.counts["unexpected"] == 1

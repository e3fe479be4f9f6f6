"""The fenced-mutex checker: token order of grants, stale tokens at the resource."""

from __future__ import annotations

from typing import Any

from synod.check.history import History, Op, Outcome
from synod.check.mutex_checker import check_mutex


def acquire(p: int, token: int | None, t0: float, t1: float, outcome: Outcome = "ok") -> Op:
    return Op(
        process=p,
        workload="mutex",
        f="acquire",
        key="m",
        value=None,
        invoke=t0,
        complete=t1,
        outcome=outcome,
        result=token,
    )


def write(p: int, token: int, at: float, outcome: Outcome = "ok") -> Op:
    # as the resource records it: decided at `at`
    return Op(
        process=p,
        workload="mutex",
        f="write",
        key="m",
        value=token,
        invoke=at,
        complete=at,
        outcome=outcome,
    )


def release(p: int, token: int, t0: float, t1: float) -> Op:
    return Op(
        process=p,
        workload="mutex",
        f="release",
        key="m",
        value=token,
        invoke=t0,
        complete=t1,
        outcome="ok",
    )


def check(*ops: Op) -> Any:
    return check_mutex(History(seed=1, ops=list(ops)))


def good_run() -> list[Op]:
    return [
        acquire(1, 10, 0, 1),
        write(1, 10, 1.1),
        write(1, 10, 1.2),
        release(1, 10, 1.3, 1.4),
        acquire(2, 12, 0.5, 1.5),
        write(2, 12, 1.6),
        release(2, 12, 1.7, 1.8),
        acquire(3, None, 2, 3, "info"),
        acquire(4, 15, 2.5, 4),
        write(4, 15, 4.1),
    ]


def test_good_run_is_valid() -> None:
    r = check(*good_run())
    assert r.verdict == "valid", r.problems
    assert r.counts["acquires_ok"] == 3 and r.counts["acquires_info"] == 1
    assert (r.counts["writes_accepted"], r.counts["holders"]) == (4, 3)


def test_paused_holder_refused_is_valid() -> None:
    # holder 10 pauses, loses the lock; 12 writes; 10 wakes and is refused
    r = check(
        acquire(1, 10, 0, 1),
        write(1, 10, 1.1),
        acquire(2, 12, 0.5, 5),
        write(2, 12, 5.1),
        write(1, 10, 6, "fail"),
    )
    assert r.verdict == "valid", r.problems
    assert r.counts["writes_refused"] == 1


def test_stale_token_accepted_is_invalid() -> None:
    r = check(
        acquire(1, 10, 0, 1),
        write(1, 10, 1.1),
        acquire(2, 12, 0.5, 5),
        write(2, 12, 5.1),
        write(1, 10, 6),
    )
    assert r.verdict == "invalid"
    assert r.counts["stale_accepted"] == 1 and r.counts["interleaved"] == 1
    assert "stale token accepted" in r.problems[0] and "6.000000" in r.problems[0]


def test_decision_ties_are_ordered_by_history_position() -> None:
    ops = [acquire(1, 10, 0, 1), acquire(2, 12, 0.5, 2), write(2, 12, 3), write(1, 10, 3)]
    assert check(*ops).verdict == "invalid"
    ops[2], ops[3] = ops[3], ops[2]
    assert check(*ops).verdict == "valid"


def test_tokens_must_increase_across_non_overlapping_grants() -> None:
    r = check(acquire(1, 12, 0, 1), acquire(2, 10, 2, 3))
    assert r.verdict == "invalid"
    assert r.counts["token_order"] == 1
    assert "tokens decrease" in r.problems[0]


def test_overlapping_grants_may_come_in_either_order() -> None:
    # a waiter's token is fixed when it queues, so the later grant may hold the
    # lower token if the acquires overlapped
    assert check(acquire(1, 12, 0, 5), acquire(2, 10, 1, 6)).verdict == "valid"


def test_same_token_granted_twice_is_invalid() -> None:
    r = check(acquire(1, 10, 0, 5), acquire(2, 10, 1, 6))
    assert r.verdict == "invalid"
    assert "granted 2 times" in r.problems[0]


def test_resource_records_that_cannot_be_trusted_are_invalid() -> None:
    never_granted = check(acquire(1, 10, 0, 1), write(1, 11, 2))
    assert never_granted.verdict == "invalid"
    assert "no ok acquire returned" in never_granted.problems[0]
    wrongly_refused = check(acquire(1, 10, 0, 1), write(1, 10, 2, "fail"))
    assert wrongly_refused.verdict == "invalid"
    assert "resource bug" in wrongly_refused.problems[0]

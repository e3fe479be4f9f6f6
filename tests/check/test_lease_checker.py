"""The lease checker on hand-written histories: correct runs, early expiry,
resurrection, leases that never lapse, and info operations.

Times are seconds on the harness's monotonic clock; lease 7 has key "k", TTL 2 s.
"""

from __future__ import annotations

from typing import Any

from synod.check.history import FaultEvent, History, Op, Outcome
from synod.check.lease_checker import check_leases
from synod.check.verdict import CheckResult

L = 7
KEY = "k"


def op(
    f: str, t0: float, t1: float, value: Any = L, result: Any = None,
    outcome: Outcome = "ok", key: str = KEY, process: int = 0,
) -> Op:  # fmt: skip
    return Op(process, "lease", f, key, value, t0, t1, outcome, result)


def grant(t0: float, t1: float, ttl: int = 2, lease: int = L, key: str = KEY) -> Op:
    return op("grant", t0, t1, ttl, [lease, ttl], key=key)


def put(t0: float, t1: float, outcome: Outcome = "ok", key: str = KEY) -> Op:
    return op("put", t0, t1, outcome=outcome, key=key)


def keepalive(t0: float, t1: float, ttl: int | None = 2, outcome: Outcome = "ok") -> Op:
    return op("keepalive", t0, t1, result=ttl if outcome == "ok" else None, outcome=outcome)


def revoke(t0: float, t1: float, outcome: Outcome = "ok") -> Op:
    return op("revoke", t0, t1, outcome=outcome)


def present(t0: float, t1: float, lease: int = L, key: str = KEY) -> Op:
    return op("read", t0, t1, None, lease, key=key)


def absent(t0: float, t1: float, key: str = KEY) -> Op:
    return op("read", t0, t1, None, None, key=key)


def check(*ops: Op, faults: list[FaultEvent] | None = None, **kw: Any) -> CheckResult:
    h = History(seed=1, ops=sorted(ops, key=lambda o: o.complete), faults=faults or [])
    return check_leases(h, **kw)


def correct_run() -> list[Op]:
    """Granted at 0, kept alive at 1.0 and 2.5 (deadline >= 4.5), then lapsed:
    present until the deadline, gone after it, and still gone at the end."""
    return [
        grant(0.0, 0.1),
        put(0.2, 0.3),
        present(0.4, 0.5),
        keepalive(1.0, 1.1),
        present(1.2, 1.3),
        keepalive(2.5, 2.6),
        present(3.0, 3.1),
        present(4.3, 4.6),  # completes after the conservative deadline: may go either way
        absent(4.6, 4.9),  # invoked before the real deadline (<= 4.6), served after it
        absent(5.0, 5.1),
        absent(20.0, 20.1),  # the final read, long after TTL + bound
    ]


def test_a_correct_run_is_valid() -> None:
    r = check(*correct_run())
    assert r.verdict == "valid", r.problems
    assert r.counts["leases"] == 1
    assert r.counts["keepalives"] == 2
    assert r.counts["lapsed_checked"] == 1


def test_a_read_invoked_before_the_deadline_may_miss_the_key() -> None:
    """Only the read's completion bounds when it was served: invoked at 4.0 (before
    4.5) but completing at 4.8, it may legitimately have found the key gone."""
    r = check(grant(0, 0.1), put(0.2, 0.3), keepalive(2.5, 2.6), absent(4.0, 4.8), absent(20, 21))
    assert r.verdict == "valid", r.problems


def test_early_expiry_is_invalid() -> None:
    """A keepalive invoked at 2.5 (TTL 2) keeps the lease to 4.5 at least; a read that
    completed at 3.5 finding the key gone means it expired about a second early."""
    r = check(grant(0, 0.1), put(0.2, 0.3), keepalive(2.5, 2.6), absent(3.3, 3.5), absent(20, 21))
    assert r.verdict == "invalid"
    assert len(r.problems) == 1
    assert "lease 7 key k: expired early" in r.problems[0]
    assert "4.500" in r.problems[0] and "3.500" in r.problems[0]


def test_expiry_before_the_granted_ttl_is_invalid() -> None:
    r = check(grant(0, 0.1, ttl=3), put(0.2, 0.3), absent(1.0, 1.1), absent(20, 21))
    assert r.verdict == "invalid"
    assert "expired early: grant ok invoked at 0.000 (TTL 3 s)" in r.problems[0]


def test_eps_tolerates_rounding_only() -> None:
    ops = [grant(0, 0.1), put(0.2, 0.3), absent(1.95, 1.96), absent(20, 21)]
    assert check(*ops).verdict == "valid"  # 40 ms before the deadline, within eps 0.1
    assert check(*ops, eps=0.0).verdict == "invalid"


def test_a_keepalive_answering_zero_early_is_invalid() -> None:
    r = check(grant(0, 0.1), put(0.2, 0.3), keepalive(1.0, 1.1), keepalive(1.5, 1.6, ttl=0),
              absent(20, 21))  # fmt: skip
    assert r.verdict == "invalid"
    assert "answered TTL 0" in r.problems[0]


def test_a_revoked_lease_may_go_at_once() -> None:
    r = check(grant(0, 0.1), put(0.2, 0.3), revoke(0.5, 0.6), absent(0.7, 0.8), absent(20, 21))
    assert r.verdict == "valid", r.problems
    # an info revoke may have taken effect at any time after its invoke, too
    r = check(grant(0, 0.1), put(0.2, 0.3), revoke(0.5, 2.5, "info"), absent(0.7, 0.8),
              absent(20, 21))  # fmt: skip
    assert r.verdict == "valid", r.problems


def test_a_key_surviving_its_revoke_is_invalid() -> None:
    r = check(grant(0, 0.1), put(0.2, 0.3), revoke(0.5, 0.6), present(0.7, 0.8), absent(20, 21))
    assert r.verdict == "invalid"
    assert "resurrected: revoke ok at 0.600" in r.problems[0]


def test_a_key_that_reappears_after_it_was_gone_is_invalid() -> None:
    r = check(grant(0, 0.1), put(0.2, 0.3), absent(2.5, 2.6), present(2.8, 2.9), absent(20, 21))
    assert r.verdict == "invalid"
    assert "resurrected: read completed at 2.600 found the key gone" in r.problems[0]


def test_a_lease_renewed_after_its_key_was_gone_is_invalid() -> None:
    r = check(grant(0, 0.1), put(0.2, 0.3), absent(2.5, 2.6), keepalive(2.8, 2.9),
              absent(20, 21))  # fmt: skip
    assert r.verdict == "invalid"
    assert any("came back" in p for p in r.problems), r.problems


def test_a_key_on_the_wrong_lease_or_before_its_put_is_invalid() -> None:
    r = check(grant(0, 0.1), put(0.2, 0.3), present(0.4, 0.5, lease=8), absent(20, 21))
    assert r.verdict == "invalid"
    assert "attached to lease 8" in r.problems[0]
    r = check(grant(0, 0.1), present(0.15, 0.18), put(0.2, 0.3), absent(20, 21))
    assert r.verdict == "invalid"
    assert "before any put" in r.problems[0]


def test_a_lapsed_lease_that_is_never_removed_is_invalid() -> None:
    """Last extension completed at 2.6, TTL 2, bound 5: due by 9.6; still there at 12."""
    r = check(grant(0, 0.1), put(0.2, 0.3), keepalive(2.5, 2.6), present(8.0, 8.1),
              present(12.0, 12.1))  # fmt: skip
    assert r.verdict == "invalid"
    assert "never expired" in r.problems[0] and "9.600" in r.problems[0]
    # the bound is a parameter: with 10 s it is not due yet, and nothing read it after
    r = check(grant(0, 0.1), put(0.2, 0.3), keepalive(2.5, 2.6), present(12.0, 12.1), bound=10)
    assert r.verdict == "unknown"
    assert "no read after their due time" in r.problems[0]


def test_liveness_counts_from_the_heal_and_only_after_it() -> None:
    """Faults until 10 (a new leader then may give the lease its whole TTL again):
    due by 10 + 2 + 5 = 17, not 0.1 + 2 + 5."""
    heal = [FaultEvent(1.0, "kill", ("m1",)), FaultEvent(10.0, "heal-all")]
    ops = [grant(0, 0.1), put(0.2, 0.3), present(12.0, 12.1), absent(18, 18.1)]
    assert check(*ops, faults=heal).verdict == "valid"
    r = check(grant(0, 0.1), put(0.2, 0.3), present(17.5, 17.6), faults=heal)
    assert r.verdict == "invalid"
    # a run that ends inside a fault: liveness is not checked (unknown), safety still is
    inside = [FaultEvent(1.0, "kill", ("m1",))]
    r = check(*ops, faults=inside)
    assert r.verdict == "unknown"
    r = check(grant(0, 0.1), put(0.2, 0.3), absent(1.0, 1.1), faults=inside)
    assert r.verdict == "invalid"


def test_info_keepalives_may_or_may_not_have_extended_the_lease() -> None:
    # It may have extended it: the key may stay past the grant's TTL...
    base = [grant(0, 0.1), put(0.2, 0.3), keepalive(1.5, 3.5, None, "info")]
    r = check(*base, present(4.0, 4.1), absent(20, 21))
    assert r.verdict == "valid", r.problems
    # ...or not: the key may go at the grant's deadline...
    r = check(*base, absent(2.1, 2.2), absent(20, 21))
    assert r.verdict == "valid", r.problems
    # ...but it cannot be relied on for safety either way, and liveness counts it
    # as a possible extension up to its completion: due by 3.5 + 2 + 5 = 10.5.
    r = check(*base, present(10.0, 10.1), absent(10.6, 10.7))
    assert r.verdict == "valid", r.problems
    r = check(*base, present(11.0, 11.1))
    assert r.verdict == "invalid"


def test_info_puts_are_not_held_to_presence() -> None:
    """A put whose outcome is unknown may never have applied: its key being absent
    proves nothing, and a late appearance is allowed while the lease lives."""
    r = check(grant(0, 0.1), put(0.2, 2.2, "info"), absent(0.5, 0.6), present(1.0, 1.1),
              absent(20, 21))  # fmt: skip
    assert r.verdict == "valid", r.problems


def test_leases_are_checked_independently() -> None:
    ok = correct_run()
    bad = [grant(0, 0.1, lease=9, key="j"), put(0.2, 0.3, key="j"), absent(0.5, 0.6, key="j"),
           absent(20, 21, key="j")]  # fmt: skip
    r = check(*ok, *bad)
    assert r.verdict == "invalid"
    assert r.counts["leases"] == 2
    assert len(r.problems) == 1 and "lease 9 key j" in r.problems[0]


def test_check_all_reports_a_lease_line() -> None:
    from synod.check.checkers import check_all, render_summary

    report = check_all(History(seed=1, ops=correct_run()))
    lease = report.result("lease")
    assert lease is not None and lease.verdict == "valid", lease
    assert any(
        line.split()[:2] == ["lease", "VALID"] for line in render_summary(report).splitlines()
    )
    assert "lease" in check_all(History(seed=1, ops=[])).not_run

"""The harness's pure parts: the seeded schedule, fault parsing, the fenced resource,
the workloads' outcome rules, and the report (summary and timeline)."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from synod.check import report
from synod.check.history import FaultEvent, History, Op
from synod.check.nemesis import FAULT_KINDS, make_schedule, parse_faults
from synod.check.resource import FencedResource
from synod.check.workloads import KeyPool, write_outcome


def test_same_seed_same_schedule_and_different_seeds_differ() -> None:
    a = make_schedule(42, 120, list(FAULT_KINDS), 5)
    b = make_schedule(42, 120, list(FAULT_KINDS), 5)
    c = make_schedule(43, 120, list(FAULT_KINDS), 5)
    assert a == b
    assert a != c
    assert len(a) >= 20  # one fault every few seconds


def test_schedule_faults_are_sequential_and_end_in_time() -> None:
    s = make_schedule(7, 60, ["kill-leader", "pause-member", "partition-halves"], 3)
    for f, nxt in zip(s, s[1:], strict=False):
        assert f.at + f.hold < nxt.at
    assert all(f.at + f.hold <= 60 for f in s)
    assert all(sorted(f.order) == [0, 1, 2] for f in s)
    assert {f.kind for f in s} == {"kill-leader", "pause-member", "partition-halves"}


def test_parse_faults_groups_and_kinds() -> None:
    assert parse_faults("kill,partition-leader") == [
        "kill-leader",
        "kill-member",
        "partition-leader",
    ]
    assert parse_faults("all") == list(FAULT_KINDS)
    assert parse_faults("none") == []
    with pytest.raises(ValueError, match="unknown fault"):
        parse_faults("meteor")


def test_fenced_resource_refuses_older_tokens_only() -> None:
    r = FencedResource()
    assert r.write(5)
    assert r.write(5)  # the same holder writes again
    assert r.write(9)
    assert not r.write(5)  # a holder that lost the lock, writing after a newer one
    assert r.writes == [(5, True), (5, True), (9, True), (5, False)]


def test_key_pool_retires_keys_after_per_key_ops() -> None:
    import random

    pool = KeyPool("p", active=2, per_key=10)
    rng = random.Random(1)
    picks = [pool.pick(rng) for _ in range(100)]
    assert all(picks.count(k) <= 10 for k in set(picks))
    assert len(pool.used()) >= 10


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_write_errors_are_info_unless_they_prove_non_application() -> None:
    assert (
        write_outcome(_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")) == "info"
    )
    assert write_outcome(_rpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed")) == "info"
    assert write_outcome(_rpc_error(grpc.StatusCode.UNAVAILABLE, "no leader")) == "info"
    never_sent = _rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    assert write_outcome(never_sent) == "fail"
    assert write_outcome(_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "empty key")) == "fail"
    assert write_outcome(TimeoutError()) == "info"


def _history() -> History:
    h = History(seed=3)
    h.ops += [
        Op(0, "register", "write", "k", 1, 10.0, 10.1, "ok"),
        Op(1, "register", "read", "k", None, 10.05, 10.2, "ok", 1),
        Op(2, "register", "cas", "k", [2, 3], 10.3, 10.4, "fail"),
        Op(3, "register", "write", "k", 4, 10.5, 12.5, "info", error="DEADLINE_EXCEEDED"),
    ]
    h.faults += [
        FaultEvent(10.2, "partition", ("m1", "m2", "m3"), {"fault": "partition-leader",
                                                            "groups": [["m1"], ["m2", "m3"]]}),
        FaultEvent(11.0, "heal", (), {"fault": "partition-leader"}),
        FaultEvent(11.5, "kill", ("m2",), {"fault": "kill-member"}),
        FaultEvent(12.0, "restart", ("m2",), {"fault": "restart"}),
        FaultEvent(12.2, "pause", ("m3",), {"fault": "pause-leader"}),
    ]  # fmt: skip
    return h


def test_fault_bands_pair_each_fault_with_its_heal() -> None:
    bands = report.fault_bands(_history().faults, end=13.0)
    assert [(b[0], b[1], b[2]) for b in bands] == [
        (10.2, 11.0, "partition"),
        (11.5, 12.0, "kill"),
        (12.2, 13.0, "pause"),  # never resumed: open to the end
    ]


def test_summary_counts_outcomes_and_verdicts() -> None:
    lines = [
        report.CheckerLine("linearizability", "valid", "keys=1"),
        report.CheckerLine("mutex", "invalid", problems=["token 3 accepted after 5"]),
    ]
    text = report.summary_text(_history(), lines, {"duration": 1, "members": 3})
    assert "register  4    2   1     1" in text
    assert "partition-leader  1" in text
    assert "mutex            INVALID" in text
    assert "token 3 accepted after 5" in text
    assert text.rstrip().endswith("RESULT: INVALID  (seed 3)")
    assert report.overall([report.CheckerLine("a", "valid")]) == "valid"
    assert (
        report.overall([report.CheckerLine("a", "valid"), report.CheckerLine("b", "unknown")])
        == "unknown"
    )
    assert report.overall([]) == "unknown"


def test_timeline_has_a_bar_per_op_and_a_band_per_fault() -> None:
    page = report.timeline_html(_history(), "t")
    bar = 'height="10" fill="{}"'  # operation bars are one row high
    assert page.count(bar.format("#2e9d4f")) == 2  # ok
    assert page.count(bar.format("#d33c3c")) == 1  # fail
    assert page.count(bar.format("#e6a117")) == 1  # info
    assert page.count("fill-opacity") == 3
    assert "partition-leader m1 | m2,m3" in page

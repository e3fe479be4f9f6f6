"""The linearizability checker on hand-written register histories whose verdict
is known, and on simulated ones (valid by construction, then made stale)."""

from __future__ import annotations

import os
import random
from dataclasses import replace
from typing import Any

import pytest
from register_sim import simulate, stale_read

from synod.check.history import History, Op, Outcome
from synod.check.linearizability import Budget, check_key, check_registers
from synod.check.models import ILLEGAL, RegisterModel

_pids = iter(range(10_000))


def op(
    f: str,
    value: Any,
    invoke: float,
    complete: float,
    outcome: Outcome = "ok",
    result: Any = None,
    process: int | None = None,
    key: str = "r",
) -> Op:
    return Op(
        process=next(_pids) if process is None else process,
        workload="register",
        f=f,
        key=key,
        value=value,
        invoke=invoke,
        complete=complete,
        outcome=outcome,
        result=result,
    )


def w(v: int, t0: float, t1: float, outcome: Outcome = "ok") -> Op:
    return op("write", v, t0, t1, outcome)


def r(v: int | None, t0: float, t1: float) -> Op:
    return op("read", None, t0, t1, "ok", v)


def cas(expected: int | None, new: int, t0: float, t1: float, outcome: Outcome = "ok") -> Op:
    return op("cas", [expected, new], t0, t1, outcome)


def verdict(*ops: Op) -> str:
    return check_key("r", list(ops), budget=Budget(time_limit=None)).verdict


# --- sequential and simple histories


def test_empty_and_initial_read_are_linearizable() -> None:
    assert verdict() == "valid"
    assert verdict(r(None, 0, 1)) == "valid"
    assert verdict(r(1, 0, 1)) == "invalid"  # nothing ever wrote 1


def test_known_good_sequential_history() -> None:
    assert verdict(w(1, 0, 1), r(1, 2, 3), cas(1, 2, 4, 5), r(2, 6, 7), w(3, 8, 9)) == "valid"


def test_stale_read_is_caught_and_explained() -> None:
    stale = r(1, 4, 5)
    kv = check_key("r", [w(1, 0, 1), w(2, 2, 3), stale], budget=Budget(time_limit=None))
    assert kv.verdict == "invalid"
    assert kv.stuck == stale
    assert [s.op.value for s in kv.prefix] == [1, 2]
    assert kv.state == 2
    text = kv.explain(RegisterModel())
    assert "key 'r'" in text and "read -> 1" in text and "5.000000" in text, text


def test_lost_write_is_caught() -> None:
    # write 2 was acknowledged, yet later reads still see 1
    assert verdict(w(1, 0, 1), r(1, 1.5, 2), w(2, 3, 4), r(1, 5, 6)) == "invalid"
    assert verdict(w(1, 0, 1), w(2, 3, 4), r(None, 5, 6)) == "invalid"


def test_non_linearizable_cas() -> None:
    # two CASes from the same expected value cannot both succeed, concurrent or not
    assert verdict(w(0, 0, 1), cas(0, 1, 2, 3), cas(0, 2, 4, 5)) == "invalid"
    assert verdict(w(0, 0, 1), cas(0, 1, 2, 5), cas(0, 2, 3, 4)) == "invalid"
    # ... but one of them failing its compare is fine (a fail op never took effect)
    assert verdict(w(0, 0, 1), cas(0, 1, 2, 5), cas(0, 2, 3, 4, "fail"), r(1, 6, 7)) == "valid"


def test_concurrent_ops_linearizable_in_only_one_order() -> None:
    # write 1 and write 2 overlap; the reads force 2 first, then 1
    assert verdict(w(1, 0, 10), w(2, 1, 9), r(2, 2, 3), r(1, 11, 12)) == "valid"
    assert verdict(w(1, 0, 10), w(2, 1, 9), r(1, 2, 3), r(2, 11, 12)) == "valid"
    # reads that need 2, then 1, then 2 again cannot be explained by one write each
    assert verdict(w(1, 0, 10), w(2, 1, 9), r(2, 2, 3), r(1, 4, 5), r(2, 11, 12)) == "invalid"


def test_fail_ops_never_take_effect() -> None:
    # a write recorded fail certainly did not happen: nobody may read its value
    assert verdict(w(1, 0, 1), w(2, 2, 3, "fail"), r(2, 4, 5)) == "invalid"
    assert verdict(w(1, 0, 1), w(2, 2, 3, "info"), r(2, 4, 5)) == "valid"


def test_ties_count_as_concurrent() -> None:
    # a read invoked at the instant a write completes may go before it
    assert verdict(w(1, 0, 1), w(2, 2, 3), r(1, 3, 4)) == "valid"


# --- info ops: may take effect at any time after invocation, or never


def test_info_op_may_take_effect_after_the_client_gave_up() -> None:
    late = w(2, 2, 3, "info")  # gave up at 3
    history = [w(1, 0, 1), late, r(1, 4, 5), r(2, 10, 11)]
    kv = check_key("r", history, budget=Budget(time_limit=None))
    assert kv.verdict == "valid"
    assert kv.info_ops == 1  # searched, not dropped
    # the same write acknowledged at 3 must have taken effect by then: stale read
    assert verdict(w(1, 0, 1), w(2, 2, 3), r(1, 4, 5), r(2, 10, 11)) == "invalid"


def test_info_op_that_must_never_take_effect() -> None:
    # cas 1->2 of unknown outcome: before the read of 1 it breaks the read; after
    # it, it breaks cas 1->3; later the register is never 1 again. So it never
    # took effect, and the history is valid only because info ops are optional.
    unknown = cas(1, 2, 1.5, 2, "info")
    history = [w(1, 0, 1), unknown, r(1, 3, 4), cas(1, 3, 5, 6), r(3, 7, 8), w(2, 9, 10)]
    history.append(r(2, 11, 12))
    kv = check_key("r", history, budget=Budget(time_limit=None))
    assert kv.verdict == "valid"
    assert kv.info_ops == 1
    # had it been acknowledged, no order works
    acked = [cas(1, 2, 1.5, 2) if o is unknown else o for o in history]
    assert verdict(*acked) == "invalid"


def test_info_op_cannot_take_effect_before_invocation() -> None:
    # the read of 2 completes before the only write of 2 was invoked
    assert verdict(w(1, 0, 1), r(2, 2, 3), w(2, 4, 5, "info")) == "invalid"


def test_info_reads_and_unobserved_info_writes_are_dropped() -> None:
    history = [w(1, 0, 1), op("read", None, 1, 2, "info"), w(7, 1, 2, "info"), r(1, 3, 4)]
    kv = check_key("r", history, budget=Budget(time_limit=None))
    assert (kv.verdict, kv.ops, kv.dropped) == ("valid", 2, 2)


# --- keys, budget, report


def test_keys_are_checked_independently() -> None:
    a = [op("write", 1, 0, 1, key="a"), op("read", None, 2, 3, result=1, key="a")]
    b = [op("read", None, 2, 3, result=1, key="b")]  # 1 was written to a, not b
    result, per_key = check_registers(History(seed=1, ops=a + b))
    assert result.verdict == "invalid"
    assert {kv.key: kv.verdict for kv in per_key} == {"a": "valid", "b": "invalid"}
    assert result.counts["keys_invalid"] == 1
    assert "key 'b'" in result.problems[0]


def test_budget_exhausted_is_unknown_not_valid() -> None:
    ops = simulate(seed=7, n_ops=150, processes=8, info_rate=0.2, unique_values=False)
    result, per_key = check_registers(
        History(seed=7, ops=ops), budget=Budget(max_states=20, time_limit=None)
    )
    assert result.verdict == "unknown"
    assert "state budget of 20" in per_key[0].reason
    assert "unknown" in result.problems[0]


def test_history_read_back_from_json_checks_the_same(tmp_path: Any) -> None:
    # cas values come back as lists
    history = History(seed=3, ops=[w(0, 0, 1), cas(0, 1, 2, 3), r(1, 4, 5)])
    history.write_jsonl(tmp_path / "h.jsonl")
    result, _ = check_registers(History.read_jsonl(tmp_path / "h.jsonl"))
    assert result.verdict == "valid"


# --- randomized: a simulated linearizable register, then one read made stale

SEEDS = int(os.environ.get("SYNOD_CHECK_SEEDS", "40"))


@pytest.mark.parametrize("unique_values", [True, False])
def test_simulated_register_histories_are_linearizable(unique_values: bool) -> None:
    for seed in range(SEEDS):
        ops = simulate(seed, n_ops=120, processes=5, info_rate=0.15, unique_values=unique_values)
        kv = check_key("r", ops, budget=Budget(time_limit=None))
        assert kv.verdict == "valid", (
            f"seed {seed} (unique_values={unique_values}): a linearizable-by-construction "
            f"history was judged {kv.verdict}:\n{kv.explain(RegisterModel())}"
        )


def test_simulated_histories_with_one_stale_read_are_not_linearizable() -> None:
    corrupted = 0
    for seed in range(SEEDS):
        found = stale_read(simulate(seed, n_ops=120, processes=5, info_rate=0.15))
        if found is None:
            continue
        ops, bad = found
        corrupted += 1
        kv = check_key("r", ops, budget=Budget(time_limit=None))
        assert kv.verdict == "invalid", (
            f"seed {seed}: read {bad} returns an overwritten value, yet judged {kv.verdict}"
        )
    assert corrupted >= SEEDS // 2  # the construction found a stale read in most seeds


def test_identical_info_ops_can_both_take_effect() -> None:
    # two info writes of 2: the reads 2, 1, 2 need both, at different times (so
    # trying only the first of identical info ops at each step must not lose this)
    history = [w(1, 0, 1), w(2, 1, 2, "info"), w(2, 1, 2, "info"), r(2, 3, 4)]
    history += [w(1, 5, 6), r(1, 7, 8), r(2, 9, 10)]
    assert verdict(*history) == "valid"
    assert verdict(*[o for o in history if o is not history[2]]) == "invalid"


# --- differential: the search against plain backtracking on small histories


def _plain_backtracking(ops: list[Op]) -> bool:
    """Linearizable? By trying every order, no memo, nothing dropped or merged."""
    model = RegisterModel()
    live = [o for o in ops if o.outcome != "fail"]

    def deadline(o: Op) -> float:
        return o.complete if o.outcome == "ok" else float("inf")

    def place(left: list[Op], state: Any) -> bool:
        if not any(o.outcome == "ok" for o in left):
            return True
        for x in left:
            if any(deadline(y) < x.invoke for y in left if y is not x):
                continue  # some op must take effect before x
            after = model.transition(x)(state)
            if after is not ILLEGAL and place([o for o in left if o is not x], after):
                return True
        return False

    return place(live, model.initial())


@pytest.mark.parametrize(("n_ops", "processes", "info_rate"), [(7, 3, 0.3), (9, 4, 0.5)])
def test_search_agrees_with_plain_backtracking_on_small_histories(
    n_ops: int, processes: int, info_rate: float
) -> None:
    agreed = {True: 0, False: 0}
    for seed in range(SEEDS * 5):
        ops = simulate(seed, n_ops, processes, info_rate, unique_values=False)
        rng = random.Random(seed)
        reads = [i for i, o in enumerate(ops) if o.f == "read" and o.outcome == "ok"]
        if reads and rng.random() < 0.6:  # often not linearizable any more
            i = rng.choice(reads)
            ops[i] = replace(ops[i], result=rng.choice([None, 0, 1, 2, 3, 4]))
        expected = _plain_backtracking(ops)
        got = check_key("r", ops, budget=Budget(time_limit=None)).verdict
        assert got == ("valid" if expected else "invalid"), f"seed {seed}: {ops}"
        agreed[expected] += 1
    assert min(agreed.values()) >= SEEDS // 2, agreed  # both verdicts were exercised

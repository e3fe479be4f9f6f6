"""Histories of a simulated linearizable register, for the checker tests.

Each op gets an invocation, a linearization point and a completion; the true
register applies the ops in linearization-point order, which fixes every
result, so the history is linearizable by construction. Some ops end ``info``:
they took effect (possibly after the client gave up) or never did.
"""

from __future__ import annotations

import random
from dataclasses import replace

from synod.check.history import Op

INFO_LATE = 6.0  # how long after its invocation an info op may still take effect


def simulate(
    seed: int,
    n_ops: int = 200,
    processes: int = 5,
    info_rate: float = 0.15,
    unique_values: bool = True,
    key: str = "r",
) -> list[Op]:
    rng = random.Random(seed)
    next_pid = processes
    slots = [(i, rng.uniform(0, 1)) for i in range(processes)]  # (pid, free at)
    planned: list[dict[str, object]] = []
    for n in range(n_ops):
        s = rng.randrange(processes)
        pid, free = slots[s]
        invoke = free + rng.uniform(0.01, 1.0)
        f = rng.choice(["read", "read", "write", "cas"])
        info = rng.random() < info_rate
        if info:
            complete = invoke + rng.uniform(0.01, 2.0)
            takes_effect = rng.random() < 0.6
            point = invoke + rng.uniform(0, INFO_LATE) if takes_effect else None
            slots[s] = (next_pid, complete)  # an info op retires its process
            next_pid += 1
        else:
            point = invoke + rng.uniform(0, 1.0)
            complete = point + rng.uniform(0, 1.0)
            slots[s] = (pid, complete)
        value = n + 1 if unique_values else rng.randrange(5)
        planned.append(
            dict(
                pid=pid, f=f, value=value, invoke=invoke, complete=complete, point=point, info=info
            )
        )
    state: int | None = None
    results: dict[int, tuple[str, object, object]] = {}  # index -> (outcome, value, result)
    order = sorted(
        (i for i, p in enumerate(planned) if p["point"] is not None),
        key=lambda i: planned[i]["point"],  # type: ignore[arg-type,return-value]
    )
    for i in order:
        p = planned[i]
        if p["f"] == "read":
            results[i] = ("ok", None, state)
        elif p["f"] == "write":
            state = p["value"]  # type: ignore[assignment]
            results[i] = ("ok", p["value"], None)
        else:
            # The client's expected value: usually what is there (a CAS that
            # succeeds), sometimes a guess that fails the compare.
            expected = state if rng.random() < 0.7 else rng.randrange(5) + 10_000
            if state == expected:
                state = p["value"]  # type: ignore[assignment]
                results[i] = ("ok", [expected, p["value"]], None)
            else:
                results[i] = ("fail", [expected, p["value"]], None)
    ops = []
    for i, p in enumerate(planned):
        outcome, value, result = results.get(i, ("info", None, None))
        if p["f"] == "write":
            value = p["value"]
        elif p["f"] == "cas" and value is None:  # never took effect: any expected value
            value = [rng.randrange(5) + 10_000, p["value"]]
        if p["info"]:
            outcome, result = "info", None
        ops.append(
            Op(
                process=p["pid"],  # type: ignore[arg-type]
                workload="register",
                f=p["f"],  # type: ignore[arg-type]
                key=key,
                value=value,
                invoke=p["invoke"],  # type: ignore[arg-type]
                complete=p["complete"],  # type: ignore[arg-type]
                outcome=outcome,  # type: ignore[arg-type]
                result=result,
            )
        )
    ops.sort(key=lambda op: op.complete)
    return ops


def stale_read(ops: list[Op]) -> tuple[list[Op], Op] | None:
    """``ops`` with one ok read changed to return a value that was certainly
    overwritten before the read began, or None if the history has no such read.

    Needs unique written values. The read returns ``v``, whose only writer W is
    ok; an ok write or CAS X of another value was invoked after W completed (so
    it took effect after W) and completed before the read was invoked (so it
    took effect before the read). In every linearization the register holds
    something other than ``v`` from X on, so the read is impossible.
    """
    writers = [op for op in ops if op.outcome == "ok" and op.f in ("write", "cas")]
    for r in ops:
        if r.f != "read" or r.outcome != "ok":
            continue
        for w in writers:
            v = w.value if w.f == "write" else w.value[1]
            if v == r.result:
                continue
            if any(x.invoke > w.complete and x.complete < r.invoke for x in writers):
                bad = replace(r, result=v)
                return [bad if op is r else op for op in ops], bad
    return None

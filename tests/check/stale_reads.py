"""A stand-in check for the broken-mode test: provable stale reads in a register history.

Sound but incomplete (it finds only the simplest violation, which is all the
broken mode produces): an ok read of key k returning v is *provably stale* if
some ok write of another value completed before the read was invoked, and
every operation that could have written v (ok or info, invoked before the read
completed; or the initial absent value when v is None) had completed before
that write was invoked. The project's linearizability checker
(synod.check.checkers) decides the general case.
"""

from __future__ import annotations

from synod.check.history import History, Op


def _writes(op: Op) -> object:
    if op.f == "write":
        return op.value
    if op.f == "cas":
        return op.value[1]
    return None


def stale_reads(history: History) -> list[tuple[Op, Op]]:
    """(read, the write that proves it stale), for every provably stale read."""
    found = []
    for ops in history.by_key("register").values():
        writes = [op for op in ops if op.f in ("write", "cas") and op.outcome != "fail"]
        for r in ops:
            if r.f != "read" or r.outcome != "ok":
                continue
            v = r.result
            writers = [w for w in writes if _writes(w) == v and w.invoke < r.complete]
            if any(w.outcome != "ok" for w in writers):
                continue
            latest_writer_done = max((w.complete for w in writers), default=float("-inf"))
            for w in writes:
                if (
                    w.outcome == "ok"
                    and _writes(w) != v
                    and w.complete < r.invoke
                    and w.invoke > latest_writer_done
                ):
                    found.append((r, w))
                    break
    return found

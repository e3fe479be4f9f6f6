"""The fenced-mutex checker: grants carry increasing tokens, and the fenced
resource never lets a stale holder in.

Reads the ``mutex`` workload's ops, per lock name (``key``):

``acquire`` (recorded by the client)
    ``ok`` with ``result`` = the fencing token granted. ``info`` acquires are
    ignored (their token is unknown; their process is retired and never
    writes, per ``history.py``).

``write`` (recorded by **the fenced resource**, not by the client)
    One op per write the resource *decided*: ``value`` = the token the writer
    presented, ``outcome`` = ``ok`` if the resource accepted it, ``fail`` if it
    refused it as stale, ``process`` = the writer's process, ``invoke`` = when
    the resource received it, ``complete`` = the instant it decided, read from
    ``time.monotonic()`` while holding the resource's lock. So the order of
    ``complete`` is the resource's order of decisions (ties: the order in the
    history). The resource's rule: accept iff the token is at least the highest
    token it has accepted so far for that name. A write that never reached the
    resource is not recorded.

``release``
    Not checked (a release that is lost only delays the next grant).

Properties (each violation is listed with the ops involved):

1. **Tokens strictly increase in grant order.** A grant happens somewhere
   between its acquire's invoke and complete, so grant order is certain only
   between acquires that do not overlap: if acquire X completed before acquire
   Y was invoked, X's token must be less than Y's. Overlapping acquires may be
   granted in either order (a waiter's token is fixed when it queues, not when
   it is granted), but no two grants share a token.
2. **No stale token accepted.** In the resource's decision order, an accepted
   write with token t after an accepted write with token t' > t.
3. **No two holders at once, as the resource sees it**: the accepted writes of
   one token form one contiguous run in decision order, not interleaved with
   another token's. Given 2, this holds by construction (accepted tokens never
   decrease, so each token's writes are contiguous); it is counted separately
   so the report names the property a person asks about.

Also violations, because they mean the record cannot be trusted: an accepted
write whose token no ``ok`` acquire of that name returned, and a refused write
whose token was not stale (the resource broke its own rule).
"""

from __future__ import annotations

from collections import defaultdict

from synod.check.history import History, Op
from synod.check.verdict import CheckResult, Verdict, combine


def check_mutex(history: History, workload: str = "mutex") -> CheckResult:
    counts = dict.fromkeys(
        (
            "locks",
            "acquires_ok",
            "acquires_info",
            "writes_accepted",
            "writes_refused",
            "holders",
            "token_order",
            "stale_accepted",
            "interleaved",
            "bad_records",
        ),
        0,
    )
    problems: list[str] = []
    verdicts: list[Verdict] = []
    position = {id(op): i for i, op in enumerate(history.ops)}
    for key, ops in sorted(history.by_key(workload).items()):
        n = len(problems)
        _check_grants(key, [op for op in ops if op.f == "acquire"], counts, problems)
        writes = sorted(
            (op for op in ops if op.f == "write"), key=lambda op: (op.complete, position[id(op)])
        )
        granted = {op.result for op in ops if op.f == "acquire" and op.outcome == "ok"}
        _check_writes(key, writes, granted, counts, problems)
        verdicts.append("invalid" if len(problems) > n else "valid")
    counts["locks"] = len(verdicts)
    return CheckResult("mutex", combine(verdicts), counts, problems)


def _check_grants(
    key: str, acquires: list[Op], counts: dict[str, int], problems: list[str]
) -> None:
    ok = [op for op in acquires if op.outcome == "ok"]
    counts["acquires_ok"] += len(ok)
    counts["acquires_info"] += sum(op.outcome == "info" for op in acquires)

    by_token: dict[int, list[Op]] = defaultdict(list)
    for op in ok:
        by_token[op.result].append(op)
    for token, same in sorted(by_token.items()):
        if len(same) > 1:
            counts["token_order"] += 1
            problems.append(
                f"mutex {key!r}: token {token} granted {len(same)} times: "
                + ", ".join(_acq(op) for op in same)
            )

    # Sweep in invocation order; `before` is the acquire with the highest token
    # among those completed before the current one was invoked.
    by_complete = sorted(ok, key=lambda op: op.complete)
    j = 0
    before: Op | None = None
    for y in sorted(ok, key=lambda op: op.invoke):
        while j < len(by_complete) and by_complete[j].complete < y.invoke:
            x = by_complete[j]
            if before is None or x.result > before.result:
                before = x
            j += 1
        if before is not None and before.result > y.result:
            counts["token_order"] += 1
            problems.append(
                f"mutex {key!r}: tokens decrease: {_acq(before)} completed before "
                f"{_acq(y)} was invoked, yet got the higher token"
            )


def _check_writes(
    key: str, writes: list[Op], granted: set[int], counts: dict[str, int], problems: list[str]
) -> None:
    highest: Op | None = None  # the accepted write with the highest token so far
    runs: list[int] = []  # tokens of accepted writes, consecutive repeats merged
    for w in writes:
        token = w.value
        if w.outcome != "ok":
            counts["writes_refused"] += 1
            if highest is None or token >= highest.value:
                counts["bad_records"] += 1
                problems.append(
                    f"mutex {key!r}: the resource refused token {token} ({_wr(w)}) though "
                    f"it was not stale (highest accepted: "
                    f"{'none' if highest is None else highest.value}) — a resource bug"
                )
            continue
        counts["writes_accepted"] += 1
        if token not in granted:
            counts["bad_records"] += 1
            problems.append(
                f"mutex {key!r}: the resource accepted token {token} ({_wr(w)}), "
                "which no ok acquire returned"
            )
        if highest is not None and token < highest.value:
            counts["stale_accepted"] += 1
            problems.append(
                f"mutex {key!r}: stale token accepted: {_wr(w)} with token {token} after "
                f"{_wr(highest)} with token {highest.value} — holders {token} and "
                f"{highest.value} both wrote, interleaved"
            )
        elif highest is None or token > highest.value:
            highest = w
        if not runs or runs[-1] != token:
            runs.append(token)
    counts["holders"] += len(set(runs))
    counts["interleaved"] += len(runs) - len(set(runs))


def _acq(op: Op) -> str:
    return f"acquire by p{op.process} [{op.invoke:.6f} .. {op.complete:.6f}] -> {op.result}"


def _wr(op: Op) -> str:
    return f"write by p{op.process} decided at {op.complete:.6f}"

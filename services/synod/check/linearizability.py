"""Linearizability of per-key registers: Wing & Gong's search with Lowe's memoization.

A history is linearizable if every operation can be given one instant at which
it takes effect, between its invocation and its completion, such that applying
the operations in the order of those instants to the sequential model (see
``models.py``) yields exactly the results the clients saw.

How the search works (the algorithm Knossos and Porcupine implement):

- **Per key.** Registers are independent objects, and linearizability is
  compositional (Herlihy & Wing's locality; Horn & Kroening's P-compositionality):
  a history is linearizable iff each key's sub-history is. Each key is searched
  alone, which keeps every search small (~200 ops).
- **Outcomes.** ``ok`` ops must take effect between ``invoke`` and ``complete``.
  ``fail`` ops never took effect and are dropped. ``info`` ops may take effect
  at any instant after ``invoke``, or never: their completion is +infinity and
  the search may leave them out. An ``info`` op that cannot change the state
  (a read) constrains nothing and is dropped; so is an ``info`` write or CAS
  whose value no remaining op ever observes (no read returns it, no CAS expects
  it) — taking effect, it could only be overwritten unseen, so any
  linearization with it is still one without it. (Repeated until nothing more
  can be dropped.)
- **Wing & Gong.** Build a partial linearization one op at a time. The next op
  to take effect may be any not-yet-linearized op invoked no later than the
  earliest completion among the not-yet-linearized ``ok`` ops (that op must
  take effect by its completion, so nothing invoked after it can go first).
  Ties count as concurrent: an op invoked at the very instant another completes
  may go either side of it. Try each candidate the model allows; backtrack at a
  dead end. Success is every ``ok`` op linearized (left-over ``info`` ops never
  took effect).
- **Lowe's memoization.** Two partial linearizations with the same *set* of
  linearized ops and the same model state have the same futures, so each
  (set, state) pair is explored once; the set is a bitset (a Python int). This
  is what makes the search polynomial in practice instead of factorial.
- **Info ops only where they are seen.** An info op placed where the next op
  does not observe its value (that next op can then only be a write) was
  overwritten unseen, and the order without it works too. So after an info op
  the search only offers ops that observe the value it wrote (a read of it, a
  CAS expecting it). And info ops alike (same f, same value) are
  interchangeable once both are invoked, so only the first of each kind is
  tried at each step.
- **Dominance.** The memo keeps, per (placed ``ok`` ops, state), the sets of
  placed info ops explored; a node whose set includes one of them is skipped:
  it has fewer info ops left to use and nothing else differs.
- **Candidate order** (a speed heuristic only, every candidate is still tried):
  ``ok`` ops in invocation order, then ``info`` ops, so an ``info`` op is only
  put in where the ops that must happen cannot explain the history alone.
- **Budget.** A search explores at most ``Budget.max_states`` nodes and runs
  at most ``Budget.time_limit`` seconds per key; past either it stops and the
  key's verdict is ``unknown``, which is not a pass.
- **Explanation.** On failure the checker reports the dead end that explains
  the history furthest in time (the op it got stuck on completes last) and,
  among those, the longest linearizable prefix: the ops of that prefix in
  order with the state after each, the ``ok`` op that had to take effect next
  (its completion had come) and could not, and the other ops that could have
  gone there, with whether the model allowed each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from synod.check.history import History, Op
from synod.check.models import ILLEGAL, Model, RegisterModel
from synod.check.verdict import CheckResult, Verdict, combine

# How often (in search steps) the time budget is looked at: the clock is cheap,
# but not free next to a set lookup.
_CLOCK_EVERY = 2048
# How many steps of the longest prefix an explanation prints (all are kept in data).
_PREFIX_SHOWN = 12


@dataclass(frozen=True)
class Budget:
    """Limits of one key's search; past either, the key's verdict is ``unknown``."""

    max_states: int = 500_000  # memo entries made (nodes explored), ~150 bytes each
    time_limit: float | None = 10.0  # seconds, or None for no time limit


@dataclass(frozen=True)
class Step:
    """One op of a partial linearization and the model state after it."""

    op: Op
    state_after: Any


@dataclass(frozen=True)
class Candidate:
    """An op that could have taken effect where the search got stuck."""

    op: Op
    legal: bool  # whether the model allowed it in the stuck state (it then led nowhere)


@dataclass
class KeyVerdict:
    """The verdict on one key's sub-history.

    For ``invalid``: ``prefix`` is the longest linearizable prefix found, ``state``
    the model state after it, ``stuck`` the ``ok`` op that had to take effect
    next and could not, ``candidates`` every op that could have gone next.
    For ``unknown``: ``reason`` says which budget ran out.
    """

    key: str
    verdict: Verdict
    ops: int  # ops searched (after dropping fail and droppable info ops)
    info_ops: int  # of which info
    dropped: int  # fail ops plus info ops that could not matter
    states: int  # nodes explored (memo entries made)
    elapsed: float  # seconds
    prefix: list[Step] = field(default_factory=list)
    state: Any = None
    stuck: Op | None = None
    candidates: list[Candidate] = field(default_factory=list)
    reason: str = ""

    def explain(self, model: Model) -> str:
        """Several lines a person can read to see why the key is not linearizable."""
        if self.verdict == "unknown":
            return f"key {self.key!r}: unknown — {self.reason}"
        if self.verdict == "valid":
            return f"key {self.key!r}: linearizable ({self.ops} ops)"
        lines = [
            f"key {self.key!r}: not linearizable ({self.ops} ops searched, "
            f"{self.info_ops} of them info; {self.states} states explored)",
            f"  longest linearizable prefix: {len(self.prefix)} ops"
            + (f", last {_PREFIX_SHOWN}:" if len(self.prefix) > _PREFIX_SHOWN else ":"),
        ]
        for step in self.prefix[-_PREFIX_SHOWN:]:
            lines.append(f"    {_op_line(model, step.op)}  => {step.state_after!r}")
        lines.append(f"  state after it: {self.state!r}")
        if self.stuck is not None:
            own = next((c.legal for c in self.candidates if c.op is self.stuck), False)
            lines.append(f"  cannot place: {_op_line(model, self.stuck)}")
            lines.append(
                f"    it must take effect by {self.stuck.complete:.6f}; in this state it is "
                + ("allowed, but every order from there is stuck" if own else "illegal")
            )
        others = [c for c in self.candidates if c.op is not self.stuck]
        if others:
            lines.append("  the other ops that could go next:")
        for cand in others:
            why = "allowed, but every order from there is stuck" if cand.legal else "illegal here"
            lines.append(f"    {_op_line(model, cand.op)}: {why}")
        return "\n".join(lines)


def _op_line(model: Model, op: Op) -> str:
    done = "never" if op.outcome == "info" else f"{op.complete:.6f}"
    return f"p{op.process} {model.describe(op):<18} {op.outcome:<4} [{op.invoke:.6f} .. {done}]"


def check_key(
    key: str, ops: Sequence[Op], model: Model | None = None, budget: Budget | None = None
) -> KeyVerdict:
    """Whether one key's operations (any order; fail ops allowed) are linearizable."""
    model = model or RegisterModel()
    budget = budget or Budget()
    started = time.monotonic()
    kept = _droppable_removed(ops, model)
    kept.sort(key=lambda op: (op.invoke, op.complete))
    search = _Search(kept, model, budget, started)
    verdict = search.run()
    result = KeyVerdict(
        key=key,
        verdict=verdict,
        ops=len(kept),
        info_ops=sum(op.outcome == "info" for op in kept),
        dropped=len(ops) - len(kept),
        states=search.states,
        elapsed=time.monotonic() - started,
        reason=search.reason,
    )
    if verdict == "invalid":
        result.prefix = [Step(kept[i], s) for i, s in search.best_prefix]
        result.state = search.best_state
        result.stuck = kept[search.best_stuck] if search.best_stuck >= 0 else None
        result.candidates = [Candidate(kept[i], legal) for i, legal in search.best_candidates]
    return result


def check_registers(
    history: History,
    workload: str = "register",
    model: Model | None = None,
    budget: Budget | None = None,
) -> tuple[CheckResult, list[KeyVerdict]]:
    """Check every key of ``workload`` in ``history``; the per-key verdicts too."""
    model = model or RegisterModel()
    per_key = [
        check_key(key, ops, model, budget) for key, ops in sorted(history.by_key(workload).items())
    ]
    result = CheckResult(
        checker="linearizability",
        verdict=combine(kv.verdict for kv in per_key),
        counts={
            "keys": len(per_key),
            "ops": sum(1 for _ in history.of(workload)),
            "keys_invalid": sum(kv.verdict == "invalid" for kv in per_key),
            "keys_unknown": sum(kv.verdict == "unknown" for kv in per_key),
            "states": sum(kv.states for kv in per_key),
        },
        problems=[kv.explain(model) for kv in per_key if kv.verdict != "valid"],
    )
    return result, per_key


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list | tuple) else value


def _droppable_removed(ops: Sequence[Op], model: Model) -> list[Op]:
    """``ops`` without fail ops and without info ops that cannot matter (see the
    module docstring): read-only ones, and writes of values nobody observes."""
    kept = [
        op
        for op in ops
        if op.outcome == "ok" or (op.outcome == "info" and model.can_change_state(op))
    ]
    while True:
        observed: set[Any] = set()
        for op in kept:
            observed.update(model.observed_values(op))
        fewer = [op for op in kept if op.outcome == "ok" or model.written_value(op) in observed]
        if len(fewer) == len(kept):
            return kept
        kept = fewer


class _Search:
    """One key's depth-first search; ``ops`` sorted by invocation."""

    def __init__(self, ops: list[Op], model: Model, budget: Budget, started: float) -> None:
        self.ops = ops
        self.model = model
        self.budget = budget
        self.deadline = math.inf if budget.time_limit is None else started + budget.time_limit
        # ok ops in the order their completions force them: the first one not yet
        # linearized bounds which ops may go next.
        self.ok_by_complete = sorted(
            (i for i, op in enumerate(ops) if op.outcome == "ok"),
            key=lambda i: (ops[i].complete, ops[i].invoke),
        )
        # ok ops and info ops apart, each in invocation order: ok ops are
        # linearized roughly in order, so a scan of them starts at the first one
        # not yet linearized; info ops may stay out forever, so they are scanned
        # separately and never hold that start back.
        self.ok_by_invoke = [i for i, op in enumerate(ops) if op.outcome == "ok"]
        self.info_by_invoke = [i for i, op in enumerate(ops) if op.outcome != "ok"]
        # Info ops alike in what they do (same f and value) are interchangeable
        # once both are invoked: neither ever has to complete, so one linearized
        # now and the other later (or never) is the same as the other way round.
        # Only the first of each kind among the candidates is tried.
        self.info_kind = {i: (ops[i].f, _frozen(ops[i].value)) for i in self.info_by_invoke}
        self.transitions = [model.transition(op) for op in ops]
        # An info op is only worth placing right before an op that observes what
        # it wrote: if the next op does not (it can then only be a write), the
        # info op was overwritten unseen and the order without it works too. So
        # the node after an info op only offers ops that observe its value.
        self.observes = [frozenset(model.observed_values(op)) for op in ops]
        self.bit = [1 << i for i in range(len(ops))]
        # Lowe's memo, with dominance over info ops: for each (placed ok ops,
        # state, whether only observers may go next), the sets of placed info ops
        # already explored. A node whose placed info ops include one of those sets
        # is skipped: it has the same ok ops to place, the same state, and fewer
        # info ops left to use, so whatever it could reach, the explored node
        # could too. (An unrestricted node also dominates a restricted one.)
        self.seen: dict[tuple[int, Hashable, bool], list[int]] = {}
        self.states = 0
        self.info_mask = sum(1 << i for i in self.info_by_invoke)
        self.reason = ""
        # the deepest dead end, for the explanation
        self.best_rank: tuple[float, int] | None = None
        self.best_prefix: list[tuple[int, Any]] = []
        self.best_state: Any = None
        self.best_stuck = -1
        self.best_candidates: list[tuple[int, bool]] = []

    def _frame(
        self, bits: int, state: Hashable, rp: int, cp: int, via: int, observers_only: bool
    ) -> list[Any] | None:
        """A search node: [bits, state, rp, cp, candidates, next candidate, via,
        observers_only], or None when every ok op is linearized (success).
        ``rp`` indexes ``ok_by_complete``, ``cp`` ``ok_by_invoke``: where their
        scans start. ``observers_only``: the node follows an info op, so only
        ops that observe ``state`` may go next."""
        by_complete, by_invoke, ops = self.ok_by_complete, self.ok_by_invoke, self.ops
        while rp < len(by_complete) and bits >> by_complete[rp] & 1:
            rp += 1
        if rp == len(by_complete):
            return None
        while cp < len(by_invoke) and bits >> by_invoke[cp] & 1:
            cp += 1
        horizon = ops[by_complete[rp]].complete
        observes = self.observes
        cands: list[int] = []
        for i in by_invoke[cp:]:
            if ops[i].invoke > horizon:
                break
            if not bits >> i & 1 and (not observers_only or state in observes[i]):
                cands.append(i)
        kinds: set[tuple[str, Any]] = set()
        for i in self.info_by_invoke:
            if ops[i].invoke > horizon:
                break
            if (
                not bits >> i & 1
                and self.info_kind[i] not in kinds
                and (not observers_only or state in observes[i])
            ):
                kinds.add(self.info_kind[i])
                cands.append(i)
        return [bits, state, rp, cp, cands, 0, via, observers_only]

    def run(self) -> Verdict:
        ops, transitions, bit, seen = self.ops, self.transitions, self.bit, self.seen
        max_states = self.budget.max_states
        info_mask = self.info_mask
        ok_mask = ~info_mask
        is_ok = [op.outcome == "ok" for op in ops]
        state0 = self.model.initial()
        seen[(0, state0, False)] = [0]
        self.states = 1
        root = self._frame(0, state0, 0, 0, -1, False)
        if root is None:
            return "valid"
        stack = [root]
        steps = 0
        while stack:
            frame = stack[-1]
            cands = frame[4]
            if frame[5] == len(cands):
                if not frame[7]:  # a restricted node's options would mislead the reader
                    self._note_dead_end(stack)
                stack.pop()
                continue
            i = cands[frame[5]]
            frame[5] += 1
            steps += 1
            if steps % _CLOCK_EVERY == 0 and time.monotonic() > self.deadline:
                self.reason = (
                    f"time budget of {self.budget.time_limit} s ran out after "
                    f"{self.states} states ({len(ops)} ops)"
                )
                return "unknown"
            state = transitions[i](frame[1])
            if state is ILLEGAL:
                continue
            bits = frame[0] | bit[i]
            observers_only = not is_ok[i]
            ok_bits = bits & ok_mask
            info_bits = bits & info_mask
            memo_key = (ok_bits, state, observers_only)
            explored = seen.get(memo_key)
            if observers_only:
                freer = seen.get((ok_bits, state, False))
                if freer is not None and any(e & ~info_bits == 0 for e in freer):
                    continue
            if explored is None:
                seen[memo_key] = [info_bits]
            elif any(e & ~info_bits == 0 for e in explored):
                continue
            else:
                # keep the list short: sets that include this one are dominated now
                explored[:] = [e for e in explored if info_bits & ~e]
                explored.append(info_bits)
            self.states += 1
            if self.states > max_states:
                self.reason = (
                    f"state budget of {self.budget.max_states} states ran out ({len(ops)} ops)"
                )
                return "unknown"
            child = self._frame(bits, state, frame[2], frame[3], i, observers_only)
            if child is None:
                return "valid"
            stack.append(child)
        return "invalid"

    def _note_dead_end(self, stack: list[list[Any]]) -> None:
        # The most telling dead end explains the history furthest in time (its
        # stuck op completes last), and among those, with the longest prefix.
        frame = stack[-1]
        stuck = self.ok_by_complete[frame[2]]
        rank = (self.ops[stuck].complete, len(stack) - 1)
        if self.best_rank is not None and rank <= self.best_rank:
            return
        self.best_rank = rank
        self.best_prefix = [(f[6], f[1]) for f in stack[1:]]
        self.best_state = frame[1]
        self.best_stuck = stuck
        self.best_candidates = [(i, self.transitions[i](frame[1]) is not ILLEGAL) for i in frame[4]]

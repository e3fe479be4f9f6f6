"""Sequential specifications the linearizability checker checks histories against.

A model is a pure state machine: ``step(state, op)`` says whether ``op``, applied
alone to an object in ``state``, could have returned what the history says it
returned, and if so which state follows. States must be hashable and compared
by value, because the checker memoizes (set of linearized ops, state) pairs.

Only operations that may take effect reach a model: the checker drops ``fail``
ops (they certainly did not happen) and ``info`` ops that cannot change the
state (an ``info`` read). So ``step`` sees ``ok`` ops, whose ``result`` must be
matched, and ``info`` writes and CASes, whose result nobody saw.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Final, Protocol

from synod.check.history import Op

#: what a transition returns when its op cannot be applied in the state given
ILLEGAL: Final = object()

#: one op's effect: the state after it, or :data:`ILLEGAL`
Transition = Callable[[Hashable], Hashable]


class Model(Protocol):
    """A sequential object, one per key (registers are independent of each other)."""

    name: str

    def initial(self) -> Hashable:
        """The state before any operation."""
        ...

    def transition(self, op: Op) -> Transition:
        """``op``'s effect as a function of the state: the state after ``op``, or
        :data:`ILLEGAL` if ``op`` (with its recorded result, when ``ok``) is
        impossible in that state. (Made once per op, called many times.)"""
        ...

    def can_change_state(self, op: Op) -> bool:
        """Whether ``op`` could change the state; an ``info`` op that cannot is
        dropped before the search (it constrains nothing)."""
        ...

    def written_value(self, op: Op) -> Any:
        """The value ``op`` installs when it takes effect (None if it installs none)."""
        ...

    def observed_values(self, op: Op) -> tuple[Any, ...]:
        """The state values ``op`` needs to find to be legal (a read's result, a
        CAS's expected value); used to drop ``info`` ops whose effect nobody saw."""
        ...

    def describe(self, op: Op) -> str:
        """``op`` in a few characters, for explanations (e.g. ``cas 3->4``)."""
        ...


class RegisterModel:
    """A register holding an int or None (absent, the initial state), with

    - ``read``: legal iff ``result`` equals the state; the state is unchanged;
    - ``write v``: always legal; the state becomes ``v``;
    - ``cas [expected, new]``: legal iff the state equals ``expected``; the state
      becomes ``new``. (A CAS whose compare failed is recorded as ``fail`` and
      never reaches the model.)
    """

    name = "register"

    def initial(self) -> Hashable:
        return None

    def transition(self, op: Op) -> Transition:
        if op.f == "read":
            # An info read never reaches here (can_change_state is False).
            seen = _hashable(op.result)
            return lambda state: state if state == seen else ILLEGAL
        if op.f == "write":
            written = _hashable(op.value)
            return lambda state: written
        if op.f == "cas":
            expected, new = _cas_args(op)
            return lambda state: new if state == expected else ILLEGAL
        raise ValueError(f"register model: unknown operation {op.f!r} in {op}")

    def can_change_state(self, op: Op) -> bool:
        if op.f not in ("read", "write", "cas"):
            raise ValueError(f"register model: unknown operation {op.f!r} in {op}")
        return op.f != "read"

    def written_value(self, op: Op) -> Any:
        if op.f == "write":
            return _hashable(op.value)
        if op.f == "cas":
            return _hashable(_cas_args(op)[1])
        return None

    def observed_values(self, op: Op) -> tuple[Any, ...]:
        if op.f == "read":
            return (_hashable(op.result),) if op.outcome == "ok" else ()
        if op.f == "cas":
            return (_hashable(_cas_args(op)[0]),)
        return ()

    def describe(self, op: Op) -> str:
        if op.f == "read":
            return f"read -> {op.result!r}" if op.outcome == "ok" else "read -> ?"
        if op.f == "write":
            return f"write {op.value!r}"
        if op.f == "cas":
            expected, new = _cas_args(op)
            return f"cas {expected!r} -> {new!r}"
        return f"{op.f} {op.value!r}"


def _cas_args(op: Op) -> tuple[Any, Any]:
    # ``[expected, new]`` in the history (a list after a JSON round trip, maybe a
    # tuple in memory).
    try:
        expected, new = op.value
    except (TypeError, ValueError):
        raise ValueError(f"register model: cas value must be [expected, new], got {op}") from None
    return _hashable(expected), _hashable(new)


def _hashable(value: Any) -> Any:
    # Register values are ints or None; a list (from JSON) would break hashing
    # in the checker's memo table, so compare it as a tuple.
    return tuple(value) if isinstance(value, list) else value

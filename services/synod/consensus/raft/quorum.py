"""Majority arithmetic, kept apart so that it can be read (and tested) on its own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def majority(n: int) -> int:
    """How many of `n` voters make a quorum."""
    return n // 2 + 1


def committed_index(voters: Iterable[int], acked: Mapping[int, int]) -> int:
    """The largest value that a quorum of `voters` has reached in `acked` (0 if none).

    Used both for the commit index (acked = match index) and for ReadIndex
    rounds (acked = last read round a voter confirmed).
    """
    values = sorted((acked.get(v, 0) for v in voters), reverse=True)
    if not values:
        return 0
    return values[majority(len(values)) - 1]


def vote_result(voters: Iterable[int], votes: Mapping[int, bool]) -> bool | None:
    """True when a quorum granted, False when a quorum can no longer grant, else None."""
    voters = list(voters)
    need = majority(len(voters))
    granted = sum(1 for v in voters if votes.get(v) is True)
    missing = sum(1 for v in voters if v not in votes)
    if granted >= need:
        return True
    if granted + missing < need:
        return False
    return None

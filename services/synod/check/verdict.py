"""What every checker returns: a verdict, counts, and the problems found, in words."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

#: ``valid``: no violation; ``invalid``: at least one violation, listed in
#: ``problems``; ``unknown``: the checker could not decide (a search budget ran
#: out, or the history lacks what the check needs). An unknown is not a pass.
Verdict = Literal["valid", "invalid", "unknown"]


@dataclass
class CheckResult:
    """One checker's verdict on one history.

    ``counts`` are what the checker counted (ops, keys, lost elements, ...), for
    the summary table; ``problems`` are human-readable, one entry per violation
    (or per reason for ``unknown``), each enough for a person to see why.
    """

    checker: str
    verdict: Verdict
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """Invalid if any is invalid; otherwise unknown if any is unknown; else valid."""
    seen = set(verdicts)
    if "invalid" in seen:
        return "invalid"
    if "unknown" in seen:
        return "unknown"
    return "valid"

"""Running `synod check` as a process from tests, and reading what it left."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from synod.check.history import History
from synod.check.netns import unavailable_reason


def need_netns() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")


@dataclass
class CheckRun:
    returncode: int
    output: str
    results: Path

    @property
    def history(self) -> History:
        return History.read_jsonl(self.results / "history.jsonl")

    @property
    def summary(self) -> str:
        return (self.results / "summary.txt").read_text()


def synod_check(results: Path, *args: str, timeout: float = 240) -> CheckRun:
    """`synod check --results RESULTS ARGS`; its output is printed (seed, schedule, table)."""
    p = subprocess.run(
        [sys.executable, "-m", "synod", "--log-console", "--log-level", "warning", "check",
         "--results", str(results), *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    print(p.stdout)
    print(p.stderr[-5000:])
    return CheckRun(p.returncode, p.stdout + p.stderr, results)

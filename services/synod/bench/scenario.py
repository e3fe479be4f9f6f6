"""What a scenario is, and the scale (window lengths, counts) it runs at."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from synod.bench.clusters import Stack


@dataclass(frozen=True)
class Scale:
    window: float  # seconds per measured window
    warmup_window: float  # seconds per warm-up window (discarded)
    leases_kept: int
    lease_ttl: int
    keepalive_window: float
    disk_keys: int
    failovers: int

    @staticmethod
    def full() -> Scale:
        return Scale(3.0, 1.0, 10_000, 15, 6.0, 100_000, 5)

    @staticmethod
    def quick() -> Scale:
        return Scale(0.3, 0.1, 100, 15, 0.3, 1_000, 1)


@dataclass
class Result:
    """One repetition of one scenario against one system."""

    values: dict[str, float]
    gen_cpu: float = 0.0  # cores the load generator used while measuring
    errors: int = 0
    samples: dict[str, list[float]] = field(default_factory=dict)  # latencies (ms), for charts
    extra: dict[str, object] = field(default_factory=dict)


Run = Callable[[Stack, Scale, bool], Awaitable[Result]]  # (stack, scale, warm-up?)


@dataclass(frozen=True)
class Scenario:
    name: str
    figures: tuple[str, ...]
    run: Run
    synod_only: bool = False
    warmup: bool = True
    # Repetitions, when not --repeat: failover repeats Scale.failovers times, resources once.
    repeat: Callable[[Scale, int], int] = lambda scale, repeat: repeat

"""Deterministic simulation of Synod's Raft core: a harness, not part of the service.

`python -m synod.consensus.sim --seeds N` runs N seeded scenarios and reports
violations of Raft's safety and liveness properties; `--seed S` replays one.
"""

from .checker import Checker, SafetyViolation, Violation
from .cluster import SimParams, SimResult, Simulation, run_seed

__all__ = [
    "Checker",
    "SafetyViolation",
    "SimParams",
    "SimResult",
    "Simulation",
    "Violation",
    "run_seed",
]

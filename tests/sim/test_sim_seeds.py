"""The deterministic simulation, run over many seeds as part of `make test`.

Each chunk runs consecutive seeds; a failure names every violating seed with
its trace, and `make sim SEED=<seed>` replays one alone.
"""

from __future__ import annotations

import os

import pytest

from synod.consensus.sim import run_seed
from synod.consensus.sim.__main__ import report

SEEDS = int(os.environ.get("SYNOD_SIM_SEEDS", "500"))
CHUNK = 25


@pytest.mark.parametrize("first", range(1, SEEDS + 1, CHUNK))
def test_seeds_hold_every_safety_and_liveness_property(first: int) -> None:
    out: list[str] = []
    for seed in range(first, min(first + CHUNK, SEEDS + 1)):
        report(run_seed(seed), out)
    assert not out, "\n".join(out)

"""The member's tick clock (node.next_tick): a fixed grid, late callbacks
do not shift it, a blocked loop skips ticks rather than bursting them."""

from __future__ import annotations

import pytest

from synod.consensus.node import next_tick

PERIOD = 0.05


@pytest.mark.parametrize("late", [0.0, 0.0001, 0.003, 0.049])
def test_a_late_callback_keeps_the_grid(late: float) -> None:
    # The tick due at 1.0 ran `late` seconds late: the next is still due at 1.05.
    assert next_tick(1.0, 1.0 + late, PERIOD) == pytest.approx(1.05)


def test_ticks_over_a_second_stay_at_the_rate_even_when_every_callback_is_late() -> None:
    due, ticks = 0.0, 0
    while due < 1.0:
        due = next_tick(due, due + 0.004, PERIOD)  # each callback runs 4 ms late
        ticks += 1
    assert ticks == 20


def test_a_blocked_loop_skips_the_missed_ticks() -> None:
    # Blocked for 0.3 s past the tick due at 1.0: the next comes one period
    # after now, not six ticks at once.
    assert next_tick(1.0, 1.3, PERIOD) == pytest.approx(1.35)

"""Waiting on conditions with deadlines: the only way tests wait (no sleep-and-hope)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `fn` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - remembered for the failure message
            last_error = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}: {last_error!r}")
        time.sleep(interval)


async def wait_for(
    fn: Callable[[], Awaitable[Any] | Any],
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> Any:
    """Poll `fn` (sync or async) until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            v = fn()
            if asyncio.iscoroutine(v) or isinstance(v, asyncio.Future):
                v = await v
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - kept for the failure message
            last = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}: {last!r}")
        await asyncio.sleep(interval)

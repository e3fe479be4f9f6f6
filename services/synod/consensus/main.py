"""`synod consensus`: run one member until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from synod.consensus import config as member_config

log = structlog.get_logger("synod.consensus")


def add_arguments(p: argparse.ArgumentParser) -> None:
    member_config.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = member_config.from_args(args)
    except member_config.ConfigError as e:
        sys.stderr.write(f"synod consensus: {e}\n")
        return 2
    runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        pass
    return runner(_serve(cfg))


async def _serve(cfg: member_config.MemberConfig) -> int:
    from synod.consensus.member import Member

    member = Member(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await member.start()
    except OSError as e:
        log.error("member_start_failed", error=str(e))
        await member.stop()
        return 1
    except Exception as e:
        # Storage corruption and the like: say what and where, and do not serve.
        log.error("member_start_failed", error=str(e), kind=type(e).__name__)
        await member.stop()
        return 1
    assert member.node is not None
    failed = asyncio.ensure_future(member.node.done.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if member.node.failure is not None:
        log.error("member_failed", error=str(member.node.failure))
        code = 1
    else:
        log.info("member_stopping", reason="signal")
    await member.stop()
    return code

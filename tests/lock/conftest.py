"""Fixtures for the lock-service suites: real processes on loopback, no mocks.

Every suite runs against two consensus backends (the `backend` parameter, as
in tests/client): a Synod consensus cluster and a real etcd cluster, so the
lock service relies on nothing etcd does not offer. `lock_env` is a
single-member backend with two lock-service replicas; `lock_env3` has three
members, for killing the consensus leader.

Async tests: plain ``async def test_...`` functions are run by tests/conftest.py with
``asyncio.run`` (the suite has no pytest-asyncio), each with a hard deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lock_harness import LockEnv


def _env(backend: str, base: Path, size: int) -> Iterator[LockEnv]:
    env = LockEnv(backend, base, size=size, replicas=2)
    try:
        env.start()
        yield env
    except BaseException:
        print(env.logs_tail(40))
        raise
    finally:
        env.stop()


@pytest.fixture
def lock_env(backend: str, tmp_path: Path) -> Iterator[LockEnv]:
    """One consensus member, two lock-service replicas."""
    yield from _env(backend, tmp_path, 1)


@pytest.fixture
def lock_env3(backend: str, tmp_path: Path) -> Iterator[LockEnv]:
    """Three consensus members (so the leader can die), two lock-service replicas."""
    yield from _env(backend, tmp_path, 3)

"""Fixtures for the lock-service suites: real processes on loopback, no mocks.

Every suite runs against two consensus backends (the `backend` parameter, as
in tests/client): a Synod consensus cluster and a real etcd cluster, so the
lock service relies on nothing etcd does not offer. `lock_env` is a
single-member backend with two lock-service replicas; `lock_env3` has three
members, for killing the consensus leader.

Async tests: plain ``async def test_...`` functions are run with
``asyncio.run`` (the suite has no pytest-asyncio), each with a hard deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from etcd_harness import ETCD_BIN
from lock_harness import LockEnv

BACKENDS = ["synod", "etcd"]
ASYNC_TEST_TIMEOUT = 120.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {n: pyfuncitem.funcargs[n] for n in names}

    async def run() -> Any:
        async with asyncio.timeout(ASYNC_TEST_TIMEOUT):
            return await fn(**kwargs)

    asyncio.run(run())
    return True


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if name == "etcd" and not shutil.which(ETCD_BIN):
        pytest.skip("etcd binary not installed")
    return name


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

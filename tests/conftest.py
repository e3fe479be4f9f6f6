"""Test-wide setup shared by every suite."""

from __future__ import annotations

import asyncio
import inspect
import shutil
from typing import Any

import pytest
from etcd_harness import ETCD_BIN

from synod import logging as synod_logging

# In-process code (the Raft core in simulations) logs elections and transfers;
# thousands of simulated runs need only warnings. Server processes that tests
# start configure their own logging.
synod_logging.configure(level="warning")

#: consensus backends the etcd-API suites (client, lock) run against
BACKENDS = ["synod", "etcd"]
ASYNC_TEST_TIMEOUT = 120.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run plain ``async def`` tests with asyncio.run, each with a hard deadline.

    (The suite does not depend on pytest-asyncio for this one thing.)
    """
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    kwargs = {n: pyfuncitem.funcargs[n] for n in pyfuncitem._fixtureinfo.argnames}

    async def run() -> Any:
        async with asyncio.timeout(ASYNC_TEST_TIMEOUT):
            return await fn(**kwargs)

    asyncio.run(run())
    return True


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Synod's consensus service, or a real etcd: the suite must pass on both."""
    name = str(request.param)
    if name == "etcd" and not shutil.which(ETCD_BIN):
        pytest.skip("etcd binary not installed")
    return name

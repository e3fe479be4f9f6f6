"""Fixtures for the etcd v3 client tests: real servers on loopback, no mocks.

`backend` is parametrized over server implementations: "synod" (our
consensus service, tests/support/synod_backend.py) and "etcd" (the real
/usr/bin/etcd 3.4, tests/support/etcd_harness.py), so the client is held to
etcd's behaviour and Synod to the client's expectations.

Async tests: plain ``async def test_...`` functions are run here with
``asyncio.run`` (the suite has no pytest-asyncio); each gets a hard deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from etcd_harness import ETCD_BIN, EtcdCluster
from synod_backend import SynodCluster

BACKENDS = ["synod", "etcd"]
ASYNC_TEST_TIMEOUT = 90.0


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


def _start_cluster(
    backend: str, base: Path, size: int, extra_args: list[str] | None = None
) -> EtcdCluster:
    if backend == "etcd":
        c = EtcdCluster(base, size=size, extra_args=extra_args)
        try:
            return c.start()
        except BaseException:
            c.stop()
            raise
    c2 = SynodCluster(base, size=size, extra_args=extra_args)
    try:
        return c2.start()  # type: ignore[return-value]
    except BaseException:
        c2.stop()
        raise


@pytest.fixture
def cluster1(backend: str, tmp_path: Path) -> Iterator[EtcdCluster]:
    """A single-member cluster."""
    c = _start_cluster(backend, tmp_path, 1)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster3(backend: str, tmp_path: Path) -> Iterator[EtcdCluster]:
    """A 3-member cluster, for failover tests."""
    c = _start_cluster(backend, tmp_path, 3)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster1_small_requests(backend: str, tmp_path: Path) -> Iterator[EtcdCluster]:
    """Single member with a 64 KiB request limit, so big watch responses get fragmented.

    etcd fragments a watch response (for watches created with fragment=True)
    only above max-request-bytes + 512 KiB of gRPC overhead allowance.
    """
    c = _start_cluster(backend, tmp_path, 1, extra_args=["--max-request-bytes", "65536"])
    try:
        yield c
    finally:
        c.stop()

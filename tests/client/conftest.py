"""Fixtures for the etcd v3 client tests: real servers on loopback, no mocks.

`backend` is parametrized over server implementations: "synod" (our
consensus service, tests/support/synod_backend.py) and "etcd" (the real
/usr/bin/etcd 3.4, tests/support/etcd_harness.py), so the client is held to
etcd's behaviour and Synod to the client's expectations.

Async tests: plain ``async def test_...`` functions are run by tests/conftest.py with
``asyncio.run`` (the suite has no pytest-asyncio); each gets a hard deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_harness import EtcdCluster
from synod_backend import SynodCluster


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

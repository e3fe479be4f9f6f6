"""Fixtures: a real 3-member consensus cluster on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_harness import LocalCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, size=3, extra_args=["--unsafe-no-fsync"])
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def durable_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Like `cluster`, with fsync on: for crash tests that count acknowledged writes."""
    c = LocalCluster(tmp_path, size=3)
    try:
        c.start()
        yield c
    finally:
        c.stop()

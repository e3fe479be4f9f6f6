"""A Synod cluster behind the small surface the etcd-API client tests use.

The client suites run against two backends, a real etcd (etcd_harness) and
Synod (cluster_harness); this adapter gives Synod the same face:
`.endpoints` (a list), `.members`, `.member(endpoint)`, `.kill(member)`,
`member.status()`, `member.metric(...)`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_harness import LocalCluster, MemberProc


class SynodMember:
    def __init__(self, proc: MemberProc):
        self.proc = proc

    @property
    def endpoint(self) -> str:
        return self.proc.endpoint

    def alive(self) -> bool:
        return self.proc.alive()

    def status(self, timeout: float = 1.0):  # type: ignore[no-untyped-def]
        return self.proc.status(timeout=timeout)

    def metric(self, name: str, **labels: str) -> float:
        pytest.skip(f"{name} is an etcd-internal metric; Synod does not export it")


class SynodCluster:
    def __init__(self, base: Path, size: int, extra_args: list[str] | None = None):
        self.local = LocalCluster(
            base, size=size, extra_args=["--unsafe-no-fsync", *(extra_args or [])]
        )
        self.members = [SynodMember(p) for p in self.local.members]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def member(self, endpoint: str) -> SynodMember:
        return next(m for m in self.members if m.endpoint == endpoint)

    def start(self) -> SynodCluster:
        self.local.start()
        return self

    def kill(self, m: SynodMember) -> None:
        self.local.kill(m.proc)

    def stop(self) -> None:
        self.local.stop()

    def logs_tail(self, lines: int = 25) -> str:
        return self.local.logs_tail(lines)

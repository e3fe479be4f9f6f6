"""Prometheus metrics of one consensus member (served on --metrics-addr)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from synod.consensus.raft import Ready

if TYPE_CHECKING:
    from synod.consensus.node import Node

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


class MemberMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.term = Gauge("synod_raft_term", "Current Raft term", registry=r)
        self.is_leader = Gauge("synod_raft_is_leader", "1 if this member leads", registry=r)
        self.has_leader = Gauge("synod_raft_has_leader", "1 if a leader is known", registry=r)
        self.leader_changes = Counter(
            "synod_raft_leader_changes", "Times the known leader changed", registry=r
        )
        self.commit_index = Gauge("synod_raft_commit_index", "Raft commit index", registry=r)
        self.apply_index = Gauge("synod_raft_apply_index", "Last applied index", registry=r)
        self.proposals_committed = Counter(
            "synod_proposals_committed", "Entries applied by this member", registry=r
        )
        self.proposals_failed = Counter(
            "synod_proposals_failed", "Proposals refused (no leader, transfer)", registry=r
        )
        self.fsync_seconds = Histogram(
            "synod_wal_fsync_seconds", "WAL fsync latency", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.apply_seconds = Histogram(
            "synod_apply_seconds",
            "Time to apply one Ready's committed entries",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._leader = 0

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)

    # -- NodeMetrics -------------------------------------------------------------

    def observe_ready(self, node: Node, rd: Ready) -> None:
        if rd.soft_state is not None:
            s = rd.soft_state
            self.term.set(s.term)
            self.is_leader.set(1 if s.leader == node.raw.id else 0)
            self.has_leader.set(1 if s.leader else 0)
            if s.leader != self._leader:
                self._leader = s.leader
                self.leader_changes.inc()
        if rd.hard_state is not None:
            self.commit_index.set(rd.hard_state.commit)
        if rd.committed_entries:
            self.proposals_committed.inc(len(rd.committed_entries))
            self.apply_index.set(rd.committed_entries[-1].index)

    def observe_apply(self, seconds: float) -> None:
        self.apply_seconds.observe(seconds)

    def proposal_failed(self, n: int) -> None:
        self.proposals_failed.inc(n)

    def observe_fsync(self, seconds: float) -> None:
        self.fsync_seconds.observe(seconds)

"""Prometheus metrics of one consensus member (served on --metrics-addr).

The figures change on every Ready and every fsync and are read a few times a
minute, so the hot path only counts in plain fields (each written by one
thread: the loop, or the WAL thread for fsyncs) and the metric families are
built when Prometheus scrapes. prometheus_client's own metric objects take a
lock on every update, which cost a sequential put some tens of microseconds.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from synod.consensus.raft import Ready

if TYPE_CHECKING:
    from synod.consensus.node import Node

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


class LatencyHistogram:
    """Counts per bucket and a sum, updated by one thread without a lock."""

    def __init__(self, bounds: tuple[float, ...] = _LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # Prometheus buckets are "less than or equal": the first bound >= the value.
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        counts = list(self.counts)  # one consistent copy
        cumulative: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip(self.bounds, counts[:-1], strict=True):
            total += n
            cumulative.append((floatToGoString(bound), total))
        cumulative.append(("+Inf", total + counts[-1]))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.sum)


class MemberMetrics:
    def __init__(self) -> None:
        self.term = 0
        self.is_leader = False
        self.has_leader = False
        self.leader_changes = 0
        self.commit_index = 0
        self.apply_index = 0
        self.proposals_committed = 0
        self.proposals_failed = 0
        self.read_rounds = 0
        self.renewal_forwards = 0
        self.fsync_seconds = LatencyHistogram()
        self.apply_seconds = LatencyHistogram()
        self._leader = 0
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def collect(self) -> Iterator[Metric]:
        """The metric families, built at scrape time (prometheus_client's Collector)."""
        yield GaugeMetricFamily("synod_raft_term", "Current Raft term", value=self.term)
        yield GaugeMetricFamily(
            "synod_raft_is_leader", "1 if this member leads", value=int(self.is_leader)
        )
        yield GaugeMetricFamily(
            "synod_raft_has_leader", "1 if a leader is known", value=int(self.has_leader)
        )
        yield CounterMetricFamily(
            "synod_raft_leader_changes", "Times the known leader changed", value=self.leader_changes
        )
        yield GaugeMetricFamily(
            "synod_raft_commit_index", "Raft commit index", value=self.commit_index
        )
        yield GaugeMetricFamily(
            "synod_raft_apply_index", "Last applied index", value=self.apply_index
        )
        yield CounterMetricFamily(
            "synod_proposals_committed",
            "Entries applied by this member",
            value=self.proposals_committed,
        )
        yield CounterMetricFamily(
            "synod_proposals_failed",
            "Proposals refused (no leader, transfer)",
            value=self.proposals_failed,
        )
        yield CounterMetricFamily(
            "synod_read_index_rounds",
            "ReadIndex requests this member made (the linearizable reads and lease "
            "renewals waiting at the time share one)",
            value=self.read_rounds,
        )
        yield CounterMetricFamily(
            "synod_lease_renewal_forwards",
            "RenewLeases calls this follower made to the leader (each carries the "
            "renewals its clients asked for meanwhile)",
            value=self.renewal_forwards,
        )
        yield self.fsync_seconds.family("synod_wal_fsync_seconds", "WAL fsync latency")
        yield self.apply_seconds.family(
            "synod_apply_seconds", "Time to apply one Ready's committed entries"
        )

    # -- NodeMetrics -------------------------------------------------------------

    def observe_ready(self, node: Node, rd: Ready) -> None:
        if rd.soft_state is not None:
            s = rd.soft_state
            self.term = s.term
            self.is_leader = s.leader == node.raw.id
            self.has_leader = bool(s.leader)
            if s.leader != self._leader:
                self._leader = s.leader
                self.leader_changes += 1
        if rd.hard_state is not None:
            self.commit_index = rd.hard_state.commit
        if rd.committed_entries:
            self.proposals_committed += len(rd.committed_entries)
            self.apply_index = rd.committed_entries[-1].index

    def observe_apply(self, seconds: float) -> None:
        self.apply_seconds.observe(seconds)

    def proposal_failed(self, n: int) -> None:
        self.proposals_failed += n

    def read_round_started(self) -> None:
        self.read_rounds += 1

    def observe_fsync(self, seconds: float) -> None:
        self.fsync_seconds.observe(seconds)

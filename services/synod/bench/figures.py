"""Every figure the suite reports: its name, unit, direction and the issue's target."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    # Issue 10's targets as a ratio Synod/etcd: ">=" for throughput, "<=" for time.
    target: float | None = None
    synod_only: bool = False

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'≥' if self.higher_is_better else '≤'}{self.target:g}×"

    def meets(self, ratio: float) -> bool | None:
        if self.target is None:
            return None
        return ratio >= self.target if self.higher_is_better else ratio <= self.target


INFLIGHTS = (1, 8, 64, 256)

_ALL = [
    Figure("put_seq_p50", "put latency p50, sequential", "ms", False, target=2.0),
    Figure("put_seq_p99", "put latency p99, sequential", "ms", False),
    *[Figure(f"put_{n}", f"put throughput @{n} in flight", "ops/s", True,
             target=0.5 if n == 64 else None) for n in INFLIGHTS],  # fmt: skip
    Figure("range_linearizable_64", "range linearizable @64", "ops/s", True, target=0.5),
    Figure("range_serializable_64", "range serializable @64", "ops/s", True),
    Figure("txn_cas_64", "txn compare-and-swap @64", "ops/s", True),
    Figure("watch_events", "watch events/s to 10 watchers", "events/s", True),
    Figure("watch_delay_p99", "watch end-to-end delay p99", "ms", False),
    Figure("lease_grant_revoke", "lease grant+revoke @64", "pairs/s", True),
    Figure("lease_keepalive_cpu", "10k leases kept alive: CPU, busiest member", "% core", False),
    Figure("lease_keepalive_cpu_sum", "10k leases kept alive: CPU, all members", "% core", False),
    # What the CPU above bought: 2,000/s are sent; fewer answered means the members fell behind.
    Figure("lease_keepalive_acked", "10k leases kept alive: renewals answered", "per s", True),
    Figure("lock_cycles", "lock acquire+release, uncontended", "cycles/s", True, target=0.5),
    Figure("lock_handoff_p50", "lock handoff p50, 8 contenders", "ms", False),
    Figure("lock_handoff_p99", "lock handoff p99, 8 contenders", "ms", False),
    Figure("router_lookup_64", "router Lookup RPC @64", "RPC/s", True, synod_only=True),
    Figure("router_local_lookup", "local lookups, cached ring", "lookups/s", True,
           synod_only=True),  # fmt: skip
    Figure("router_lookup_batch", "router LookupBatch", "keys/s", True, synod_only=True),
    Figure("failover", "failover: kill -9 leader → write", "ms", False, target=1.0),
    # The leader hangs and closes no connection: only the election timeout can tell.
    Figure("failover_paused", "failover: leader paused (SIGSTOP) → write", "ms", False),
    Figure("peak_rss", "peak RSS, largest member", "MiB", False),
    Figure("disk_per_100k", "bytes on disk per 100k keys", "MiB", False),
]

FIGURES: dict[str, Figure] = {f.key: f for f in _ALL}

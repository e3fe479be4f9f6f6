"""Prometheus metrics of one router replica (served on --metrics-addr)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_REBUILD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class RouterMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.lookups = Counter(
            "synod_router_lookups",
            "Keys looked up (Lookup, LookupBatch and forwarded calls)",
            ["ring", "rpc"],
            registry=r,
        )
        self.ring_members = Gauge(
            "synod_router_ring_members", "Members of the ring", ["ring"], registry=r
        )
        self.ring_revision = Gauge(
            "synod_router_ring_revision",
            "Store revision at which the ring was last rebuilt",
            ["ring"],
            registry=r,
        )
        self.revision = Gauge(
            "synod_router_revision",
            "Store revision up to which membership changes are applied",
            registry=r,
        )
        self.rebuild_seconds = Histogram(
            "synod_router_ring_rebuild_seconds",
            "Time to decode one ring's stored slot table and build its lookup structure",
            buckets=_REBUILD_BUCKETS,
            registry=r,
        )
        self.invalid_members = Counter(
            "synod_router_invalid_members",
            "Member keys ignored because their value is not valid JSON of a member",
            registry=r,
        )
        self.forwarded = Counter(
            "synod_router_forwarded",
            "Forwarded calls by ring, backend and final gRPC status",
            ["ring", "backend", "code"],
            registry=r,
        )
        self.inflight = Gauge(
            "synod_router_inflight",
            "Forwarded calls in flight per backend (this replica)",
            ["ring", "backend"],
            registry=r,
        )
        self.bounded_load_skips = Counter(
            "synod_router_bounded_load_skips",
            "Forwarded calls not sent to a preferred member because it was over the "
            "bounded-load capacity, by the skipped backend",
            ["ring", "backend"],
            registry=r,
        )
        self.table_writes = Counter(
            "synod_router_table_writes",
            "Attempts to store a ring's next slot table, by outcome "
            "(written, lost_race: another replica wrote first, error)",
            ["ring", "outcome"],
            registry=r,
        )
        self.forward_retries = Counter(
            "synod_router_forward_retries",
            "Forwarded calls sent to the next member because the chosen one was unreachable",
            ["ring", "backend"],
            registry=r,
        )
        self.forward_rejected = Counter(
            "synod_router_forward_rejected",
            "Calls the proxy refused before forwarding, by gRPC status",
            ["code"],
            registry=r,
        )

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)

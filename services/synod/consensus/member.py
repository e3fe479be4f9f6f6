"""One consensus member process: storage + Raft node + peer transport + client API.

`Member` names every dependency in one place (config, storage, state machine,
node, transport, servers) and owns their start and stop order:

    start: open storage -> restore state -> node -> transport -> peer gRPC server
           -> peer listener (peer URLs) -> client server (KV, Cluster,
           Maintenance, health, reflection)
    stop:  hand leadership away if we lead -> stop serving clients -> node
           -> transport -> peer listener -> peer gRPC server -> storage
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections.abc import Callable
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from synod import __version__, health_port
from synod.consensus.config import MemberConfig, parse_url
from synod.consensus.leases import Lessor, min_ttl_seconds
from synod.consensus.membership import Membership
from synod.consensus.metrics import MemberMetrics
from synod.consensus.node import Node, NotLeaderError
from synod.consensus.peer_listener import PeerListener
from synod.consensus.raft import (
    Config,
    ConfState,
    RawNode,
    Role,
    Snapshot,
    SnapshotMeta,
)
from synod.consensus.state import ConsensusState, MemberInfo
from synod.consensus.storage import MemberStorage
from synod.consensus.storage.bootstrap import read_bootstrap_voters, write_bootstrap_voters
from synod.consensus.transport import GRPC_OPTIONS, RaftServicer, Transport
from synod.consensus.v1 import internal_pb2, internal_pb2_grpc
from synod.consensus.watch import WatchHub
from synod.etcd.etcdserverpb import rpc_pb2
from synod.grpc_server import server_options
from synod.raft.v1 import raft_pb2_grpc
from synod.tls import FollowingSSLContext, ReloadingClientCredentials, ServerTLS
from synod.tls import mode as tls_mode

log = structlog.get_logger("synod.member")

#: etcd's headroom above --max-request-bytes for gRPC framing
GRPC_OVERHEAD_BYTES = 512 * 1024
ETCD_API_VERSION = "3.5.0"


class Member:
    def __init__(self, config: MemberConfig):
        self.config = config
        ids = config.member_ids()
        self.id = ids[config.name]
        self.cluster_id = _cluster_id(config)
        self.metrics = MemberMetrics()
        self.storage: MemberStorage | None = None
        self.state: ConsensusState | None = None
        self.watch_hub: WatchHub | None = None
        self.node: Node | None = None
        self.transport: Transport | None = None
        self.client_server: grpc.aio.Server | None = None
        self.peer_server: grpc.aio.Server | None = None
        self.peer_listener: PeerListener | None = None
        self.health_server: grpc.aio.Server | None = None
        # grpc_health ships its asyncio servicer as health.aio, which has no type stubs.
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.started_at = time.monotonic()
        # Request ids: this member's low 16 bits on top, then a start time and a
        # counter, so ids never repeat across members or restarts.
        start = (time.time_ns() // 1000) & ((1 << 40) - 1)
        self._ids = itertools.count(((self.id & 0xFFFF) << 48) | (start << 8))
        self._published = False
        self.lessor = Lessor(self, check_interval=config.heartbeat_interval_ms / 1000)
        self.membership = Membership(self)
        self._leader_channel: tuple[int, grpc.aio.Channel] | None = None
        # The peer transport, the leader channel and discovery dial with these; made
        # again when the files change (a renewed peer certificate), per new channel.
        self._peer_credentials = (
            ReloadingClientCredentials(config.peer_client_tls)
            if config.peer_client_tls is not None
            else None
        )
        # The same, as stdlib SSL contexts: peer streams dial (and are served) with them.
        client_tls = config.peer_client_tls
        self._peer_ssl = (
            FollowingSSLContext(
                client_tls.ssl_context,
                [client_tls.ca_file, client_tls.cert_file, client_tls.key_file],
            )
            if client_tls is not None
            else None
        )
        self._peer_server_ssl = (
            FollowingSSLContext(config.peer_tls.ssl_context, config.peer_tls.files())
            if config.peer_tls is not None
            else None
        )
        self._state_waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    # -- start and stop ----------------------------------------------------------------

    async def start(self) -> None:
        c = self.config
        loop = asyncio.get_running_loop()
        storage, restored = await loop.run_in_executor(
            None,
            lambda: MemberStorage.open(
                c.data_dir, sync=not c.unsafe_no_fsync, on_fsync=self.metrics.observe_fsync
            ),
        )
        self.storage = storage
        hard_state, snapshot, entries = restored
        initial = {
            mid: MemberInfo(mid, name, c.initial_cluster[name])
            for name, mid in c.member_ids().items()
        }
        id_file = os.path.join(c.data_dir, "cluster_id")
        bootstrap_voters = read_bootstrap_voters(c.data_dir)
        if os.path.exists(id_file):
            with open(id_file) as f:
                self.cluster_id = int(f.read().strip(), 16)
        elif c.initial_cluster_state == "existing":
            # Joining: the cluster's id and members come from the cluster itself.
            self.cluster_id, initial = await self._discover_cluster()
        with open(id_file + ".tmp", "w") as f:
            f.write(f"{self.cluster_id:x}\n")
        os.replace(id_file + ".tmp", id_file)
        if bootstrap_voters is None and not hard_state.term and not entries:
            # First start: every initial member of a new cluster votes; a member
            # joining an existing cluster knows none and learns the configuration
            # from the leader's log. Kept on disk: later starts may say "existing".
            bootstrap_voters = (
                frozenset(initial) if c.initial_cluster_state == "new" else frozenset()
            )
            await loop.run_in_executor(
                None, write_bootstrap_voters, c.data_dir, bootstrap_voters
            )
        if snapshot.meta.index == 0:
            # Before the first snapshot, the configuration at index 0 is the bootstrap
            # one (a data dir from before bootstrap_voters existed: what the flags say).
            voters = bootstrap_voters
            if voters is None:
                voters = frozenset(initial) if c.initial_cluster_state == "new" else frozenset()
            snapshot = Snapshot(SnapshotMeta(0, 0, ConfState(voters)))
        self.state = ConsensusState(initial, min_lease_ttl=min_ttl_seconds(c.election_timeout_ms))
        self.lessor.attach(self.state)
        self.state.restore(snapshot)
        self.watch_hub = WatchHub(self.state, self.header, max_response_bytes=c.max_request_bytes)
        self.state.on_events.append(self.watch_hub.notify)
        self.state.on_restored.append(self.watch_hub.on_restore)
        raft_config = Config(
            id=self.id,
            rng=random.Random(self.id ^ time.time_ns()),
            election_tick=c.election_ticks,
            heartbeat_tick=1,
            lazy_commit=c.commit_broadcast_delay_ms > 0,
            campaign_on_leader_loss=True,
            # Batch per round trip, not per turn of the loop: each peer message
            # costs a Python member ~0.2 ms of CPU at each end. Two appends in
            # flight per follower keep its disk busy while the first one's
            # acknowledgement travels back, and the rest wait and go in one
            # message; a follower forwards one batch of proposals at a time.
            # A follower the window leaves behind when the leader snapshots
            # catches up from the entries kept behind the snapshot
            # (--snapshot-catchup-entries). Measured: docs/performance.md,
            # fifth and sixth rounds.
            max_inflight_msgs=2,
            batch_forwards=True,
        )
        raw = RawNode(raft_config, hard_state, snapshot, entries, applied=snapshot.meta.index)
        self.node = Node(
            raw,
            storage,
            self.state,
            tick_seconds=c.heartbeat_interval_ms / 1000,
            snapshot_count=c.snapshot_count,
            snapshot_catchup_entries=c.snapshot_catchup_entries,
            metrics=self.metrics,
            commit_broadcast_delay=c.commit_broadcast_delay_ms / 1000,
        )
        self.transport = Transport(
            self.cluster_id,
            self.id,
            deliver=self.node.deliver,
            report_snapshot=self.node.report_snapshot,
            report_unreachable=self.node.report_unreachable,
            is_member=lambda mid: self.state is not None and mid in self.state.members,
            credentials=self.peer_credentials,
            ssl_context=self._peer_ssl.get if self._peer_ssl is not None else None,
        )
        self.node.sender = self.transport
        self.state.on_members_changed.append(self._members_changed)
        self._members_changed()
        self.node.on_leader_change.append(self._leader_changed)
        self.node.on_applied.append(self._check_state_waiters)

        self.peer_server = grpc.aio.server(options=server_options(*GRPC_OPTIONS))
        raft_pb2_grpc.add_RaftServicer_to_server(RaftServicer(self.transport), self.peer_server)
        from synod.consensus.api.internal import InternalServicer

        internal_pb2_grpc.add_InternalServicer_to_server(InternalServicer(self), self.peer_server)
        # The gRPC peer server listens only on abstract Unix sockets (one without
        # TLS, one with when there is a peer certificate); the peer listener owns
        # the peer URLs and passes gRPC connections on to it (peer_listener.py).
        grpc_names = {
            tls: f"synod-peer-{self.id:x}-{os.getpid()}-{os.urandom(4).hex()}-{tls:d}"
            for tls in (False, True)
        }
        bound = [self.peer_server.add_insecure_port(f"unix-abstract:{grpc_names[False]}")]
        if c.peer_tls is not None:
            bound.append(
                self.peer_server.add_secure_port(
                    f"unix-abstract:{grpc_names[True]}", c.peer_tls.credentials()
                )
            )
        if not all(bound):  # 0: not bound
            raise OSError("cannot open the peer gRPC server's abstract Unix socket")
        await self.peer_server.start()
        server_ssl = self._peer_server_ssl
        self.peer_listener = PeerListener(
            self.transport, grpc_names.__getitem__, server_ssl.get if server_ssl else None
        )
        for url in c.listen_peer_urls:
            await self.peer_listener.listen(url, "--listen-peer-urls")

        self.client_server = grpc.aio.server(
            options=server_options(
                ("grpc.max_receive_message_length", c.max_request_bytes + GRPC_OVERHEAD_BYTES),
                ("grpc.max_send_message_length", 2**31 - 1),
            )
        )
        self._add_client_services(self.client_server)
        for url in c.listen_client_urls:
            _bind(self.client_server, url, "--listen-client-urls", c.client_tls)
        await self.client_server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        if c.health_addr:
            self.health_server = await health_port.serve(self.health, c.health_addr)
        if c.metrics_addr:
            host, port = parse_url(c.metrics_addr, "--metrics-addr")
            self.metrics.serve(host, port)
        self.node.start()
        self.lessor.start()
        log.info(
            "member_started",
            name=c.name,
            id=f"{self.id:x}",
            cluster=f"{self.cluster_id:x}",
            client=c.listen_client_urls,
            peer=c.listen_peer_urls,
            client_tls=tls_mode(c.client_tls),
            peer_tls=tls_mode(c.peer_tls),
            restored_index=snapshot.meta.index,
            log_entries=len(entries),
            term=hard_state.term,
        )
        if c.unsafe_local_reads:
            log.critical(
                "UNSAFE_LOCAL_READS",
                warning="this member serves linearizable reads from local state without "
                "ReadIndex: reads can be stale; for testing the checkers only",
            )

    async def _discover_cluster(self) -> tuple[int, dict[int, MemberInfo]]:
        """Ask the other members named in --initial-cluster who is in the cluster."""
        from synod.consensus.transport import dial

        c = self.config
        urls = [u for name, us in c.initial_cluster.items() if name != c.name for u in us]
        deadline = time.monotonic() + 30
        last = "no other member in --initial-cluster"
        while time.monotonic() < deadline:
            for url in urls:
                async with dial(url, self.peer_credentials(), options=()) as ch:
                    try:
                        info = await internal_pb2_grpc.InternalStub(ch).ClusterInfo(
                            internal_pb2.ClusterInfoRequest(), timeout=2
                        )
                    except grpc.aio.AioRpcError as e:
                        last = f"{url}: {e.code().name}"
                        continue
                members = {
                    m.ID: MemberInfo(
                        m.ID, m.name, list(m.peerURLs), list(m.clientURLs), m.isLearner
                    )
                    for m in info.members
                }
                if self.id not in members:
                    raise OSError(
                        f"this member ({self.id:x}, peer URLs "
                        f"{c.initial_advertise_peer_urls}) is not in the cluster yet: "
                        "add it first (etcdctl member add) with the same peer URLs"
                    )
                members[self.id].name = c.name
                log.info("joining_cluster", cluster=f"{info.cluster_id:x}", via=url)
                return info.cluster_id, members
            await asyncio.sleep(0.5)
        raise OSError(f"could not reach the cluster to join it ({last})")

    def _add_client_services(self, server: grpc.aio.Server) -> None:
        from synod.consensus.api import cluster, election, kv, lease, maintenance, watch

        kv.register(server, self)
        election.register(server, self)
        lease.register(server, self)
        watch.register(server, self)
        cluster.register(server, self)
        maintenance.register(server, self)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (
            "etcdserverpb.KV",
            "etcdserverpb.Lease",
            "etcdserverpb.Watch",
            "etcdserverpb.Cluster",
            "etcdserverpb.Maintenance",
            "v3electionpb.Election",
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)

    async def stop(self) -> None:
        """Graceful stop: hand leadership to another voter first, then shut down."""
        node = self.node
        if node is not None and node.role == Role.LEADER and node.failure is None:
            await self._transfer_away(node)
        await self.health.enter_graceful_shutdown()
        if self.watch_hub is not None:
            self.watch_hub.close()  # watch clients move to another member now
        if self.client_server is not None:
            await self.client_server.stop(grace=1.0)
        if self.health_server is not None:
            await self.health_server.stop(grace=None)
        await self.lessor.stop()
        if node is not None:
            await node.stop()
        if self._leader_channel is not None:
            await self._leader_channel[1].close(None)
        if self.transport is not None:
            await self.transport.close()
        if self.peer_listener is not None:
            await self.peer_listener.close()
        if self.peer_server is not None:
            await self.peer_server.stop(grace=0.5)
        if self.storage is not None:
            self.storage.close()
        log.info("member_stopped", name=self.config.name, id=f"{self.id:x}")

    async def _transfer_away(self, node: Node) -> None:
        raft = node.raw.raft
        candidates = sorted(
            (pr.match, pid)
            for pid, pr in raft.prs.items()
            if pid != self.id and pid in raft.conf.voters
        )
        if not candidates:
            return
        target = candidates[-1][1]
        log.info("transferring_leadership", to=f"{target:x}")
        try:
            node.transfer_leadership(target)
        except Exception as e:  # noqa: BLE001 - best effort on the way out
            log.warning("leadership_transfer_failed", error=str(e))
            return
        deadline = time.monotonic() + self.config.election_timeout_ms / 1000
        while time.monotonic() < deadline and node.leader in (self.id, 0):
            await asyncio.sleep(self.config.heartbeat_interval_ms / 1000 / 2)
        log.info("leadership_transferred", leader=f"{node.leader:x}")

    # -- reacting to the cluster -----------------------------------------------------

    def _members_changed(self) -> None:
        assert self.state is not None and self.transport is not None
        self.transport.set_peers(
            {mid: m.peer_urls for mid, m in self.state.members.items() if mid != self.id}
        )

    def _leader_changed(self, leader: int) -> None:
        self.lessor.leader_changed(leader)
        status = health_pb2.HealthCheckResponse
        asyncio.ensure_future(self.health.set("", status.SERVING if leader else status.NOT_SERVING))
        if leader and not self._published:
            asyncio.ensure_future(self._publish())

    async def _publish(self) -> None:
        """Announce our name and client URLs through the log (once per start)."""
        self._published = True
        req = internal_pb2.InternalRequest(
            publish=internal_pb2.PublishMember(
                member_id=self.id,
                name=self.config.name,
                client_urls=self.config.advertise_client_urls,
            )
        )
        for _ in range(20):
            try:
                await self.propose(req, timeout=3.0)
                return
            except (NotLeaderError, TimeoutError):
                await asyncio.sleep(0.2)
        self._published = False

    # -- what the API handlers use -----------------------------------------------------

    def peer_credentials(self) -> grpc.ChannelCredentials | None:
        """What to dial other members' https:// peer URLs with (None: no peer TLS flags)."""
        return self._peer_credentials.get() if self._peer_credentials is not None else None

    def next_request_id(self) -> int:
        return next(self._ids)

    def next_lease_id(self) -> int:
        """A lease ID no other member will pick: request ids are unique per member."""
        return self.next_request_id() & 0x7FFF_FFFF_FFFF_FFFF

    def leader_stub(self) -> internal_pb2_grpc.InternalStub:
        """The leader's Internal service (peer port); NotLeaderError when none is known."""
        assert self.node is not None and self.state is not None
        leader = self.node.leader
        info = self.state.members.get(leader) if leader else None
        if info is None or not info.peer_urls:
            raise NotLeaderError("no leader")
        if self._leader_channel is None or self._leader_channel[0] != leader:
            if self._leader_channel is not None:
                asyncio.ensure_future(self._leader_channel[1].close(None))
            from synod.consensus.transport import dial

            self._leader_channel = (leader, dial(info.peer_urls[0], self.peer_credentials()))
        return internal_pb2_grpc.InternalStub(self._leader_channel[1])

    async def propose(self, req: internal_pb2.InternalRequest, timeout: float) -> Any:
        """Replicate `req` and wait until this member applied it; returns the apply result."""
        assert self.node is not None
        rid = self.next_request_id()
        req.id = rid
        fut = self.node.propose(rid, req.SerializeToString())
        # A timer that fails the future itself, not asyncio.wait_for: that
        # wraps the future in a second one, and the answer takes one more
        # turn of the loop to reach the handler.
        timer = asyncio.get_running_loop().call_later(timeout, _time_out, fut)
        try:
            return await fut
        except BaseException:
            self.node.forget(rid)  # timed out or the client went away
            raise
        finally:
            timer.cancel()

    def wait_for_state(self, predicate: Callable[[], bool]) -> asyncio.Future[None]:
        """Resolves once `predicate()` holds on this member's state, checked after each apply."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if predicate():
            fut.set_result(None)
        else:
            self._state_waiters.append((predicate, fut))
        return fut

    def _check_state_waiters(self) -> None:
        if not self._state_waiters:
            return
        keep = []
        for pred, fut in self._state_waiters:
            if fut.done():
                continue
            try:
                ready = pred()
            except Exception as e:  # noqa: BLE001 - that waiter fails, nobody else
                fut.set_exception(e)
                continue
            if ready:
                fut.set_result(None)
            else:
                keep.append((pred, fut))
        self._state_waiters = keep

    async def read_barrier(self, timeout: float) -> None:
        assert self.node is not None
        if self.config.unsafe_local_reads:
            return  # the deliberately broken mode (--unsafe-local-reads): no ReadIndex
        await asyncio.wait_for(self.node.read_barrier(), timeout)

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        assert self.state is not None and self.node is not None
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.id,
            revision=self.state.store.revision if revision is None else revision,
            raft_term=self.node.term,
        )

    @staticmethod
    def version() -> str:
        return f"{ETCD_API_VERSION}"

    @staticmethod
    def synod_version() -> str:
        return __version__


def _cluster_id(config: MemberConfig) -> int:
    from synod.consensus.config import cluster_id

    return cluster_id(list(config.member_ids().values()))


def _bind(server: grpc.aio.Server, url: str, flag: str, server_tls: ServerTLS | None) -> None:
    """Listen on `url`: TLS when it is https:// (config checked the certificate is there)."""
    host, port = parse_url(url, flag)
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if server_tls is not None:
            bound = server.add_secure_port(addr, server_tls.credentials())
        else:
            bound = server.add_insecure_port(addr)
    except RuntimeError as e:
        raise OSError(f"{flag}: cannot listen on {url}: {e}") from None
    if bound == 0:
        raise OSError(f"{flag}: cannot listen on {url} (address in use?)")


def _time_out(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())

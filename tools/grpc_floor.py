"""The latency floor of a Python gRPC write path: a Raft-shaped skeleton, no Raft.

    .venv/bin/python tools/grpc_floor.py --rounds 5 --seconds 3

Issue 10 asks for a sequential put within 2x etcd's latency. This tool asks
what that path costs in Python with grpc.aio before any consensus logic runs.
It starts three *skeleton* members: processes that carry a put along exactly
the messages a Raft write needs, and do nothing else:

- the client's Put is a unary call on the etcd KV service;
- members talk over long-lived client streams of `synod.raft.v1.MessageBatch`,
  one per peer, messages queued while a write is in flight (as our transport);
- each member appends the entry to a file and fdatasyncs it in a writer thread
  (as our WAL);
- member 0 is the leader. A put it takes is appended and sent to both
  followers; each follower appends and fsyncs, then acknowledges. The put is
  answered once the leader's own fsync and one acknowledgement are in.
- A put a follower takes is forwarded to the leader, and the leader tells that
  follower once it is committed (as Synod's lazy commit does).

There is no log, no term, no MVCC, no apply: whatever the skeleton costs, any
Python member on grpc.aio pays too. A second skeleton ("skel-tcp") sends its
peer messages as length-prefixed frames on plain TCP connections instead, to
price the gRPC streams themselves. The same run measures a real Synod cluster
and a real etcd cluster, alternating all four with the same client, and prints
each path's median p50, its ratio to etcd, and the CPU the members used per
put (all of them, and the leader alone).

A measurement tool for docs/performance.md ("Fourth round"), not `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import empty_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import perf_compare  # noqa: E402
from cluster_harness import LocalCluster  # noqa: E402
from etcd_harness import EtcdCluster  # noqa: E402
from ports import free_ports  # noqa: E402
from waits import wait_until  # noqa: E402

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc  # noqa: E402
from synod.raft.v1 import raft_pb2  # noqa: E402

STREAM_METHOD = "/synod.floor.Skeleton/Stream"

LEADER = 0
# What a skeleton message is, carried in Message.log_term (index carries the put's id).
PROPOSE, APPEND, ACK, COMMITTED = 1, 2, 3, 4


class Sender:
    """One peer's outgoing stream: messages queue while a write is in flight."""

    def __init__(self, me: int, port: int) -> None:
        self.me = me
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.queue: list[raft_pb2.Message] = []
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self.run())

    def send(self, m: raft_pb2.Message) -> None:
        self.queue.append(m)
        self.wake.set()

    async def run(self) -> None:
        call = self.channel.stream_unary(
            STREAM_METHOD,
            request_serializer=raft_pb2.MessageBatch.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString,
        )(wait_for_ready=True)
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
            msgs, self.queue = self.queue, []
            await call.write(raft_pb2.MessageBatch(sender=self.me, messages=msgs))


class TcpSender:
    """The same, over a plain TCP connection: 4-byte length, then a MessageBatch.

    The comparison this tool exists for: what gRPC costs per peer message.
    Messages sent in one loop turn go out as one frame, without awaiting
    anything (the kernel's socket buffer takes them).
    """

    def __init__(self, me: int, port: int) -> None:
        self.me = me
        self.port = port
        self.queue: list[raft_pb2.Message] = []
        self.writer: asyncio.StreamWriter | None = None
        self.task = asyncio.create_task(self.connect())

    async def connect(self) -> None:
        while self.writer is None:
            try:
                _, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
        self.flush()

    def send(self, m: raft_pb2.Message) -> None:
        self.queue.append(m)
        if len(self.queue) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self.writer is None or not self.queue:
            return
        body = raft_pb2.MessageBatch(sender=self.me, messages=self.queue).SerializeToString()
        self.queue = []
        self.writer.write(len(body).to_bytes(4, "big") + body)


class Skeleton(rpc_pb2_grpc.KVServicer):
    def __init__(self, me: int, ports: list[int], tcp_ports: list[int] | None, wal: Path) -> None:
        self.me = me
        self.ports = ports
        self.tcp_ports = tcp_ports
        self.wal = open(wal, "ab", buffering=0)  # noqa: SIM115 - lives as long as the process
        self.disk = ThreadPoolExecutor(1, thread_name_prefix="wal")
        self.peers: dict[int, Sender | TcpSender] = {}
        self.waiting: dict[int, asyncio.Future[None]] = {}  # put id -> its Put handler
        # leader only: put id -> [origin, acknowledgements, own fsync done]
        self.inflight: dict[int, list[int]] = {}
        self.next_id = me << 40
        self.tasks: set[asyncio.Task[None]] = set()

    def connect(self) -> None:
        for i, port in enumerate(self.ports):
            if i != self.me:
                if self.tcp_ports:
                    self.peers[i] = TcpSender(self.me, self.tcp_ports[i])
                else:
                    self.peers[i] = Sender(self.me, port)

    async def durable(self, data: bytes) -> None:
        def write() -> None:
            self.wal.write(data)
            os.fdatasync(self.wal.fileno())

        await asyncio.get_running_loop().run_in_executor(self.disk, write)

    async def Put(
        self, request: rpc_pb2.PutRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.PutResponse:
        self.next_id += 1
        pid = self.next_id
        done = asyncio.get_running_loop().create_future()
        self.waiting[pid] = done
        data = request.key + request.value
        if self.me == LEADER:
            self.replicate(pid, LEADER, data)
        else:
            self.peers[LEADER].send(
                raft_pb2.Message(log_term=PROPOSE, index=pid, entries=[raft_pb2.Entry(data=data)])
            )
        await done
        return rpc_pb2.PutResponse(header=rpc_pb2.ResponseHeader(revision=pid))

    def replicate(self, pid: int, origin: int, data: bytes) -> None:
        self.inflight[pid] = [origin, 0, 0]
        m = raft_pb2.Message(log_term=APPEND, index=pid, entries=[raft_pb2.Entry(data=data)])
        for peer in self.peers.values():
            peer.send(m)
        task = asyncio.create_task(self.durable(data))
        task.add_done_callback(lambda _t: self.progress(pid, fsynced=True))

    def progress(self, pid: int, fsynced: bool = False, acked: bool = False) -> None:
        state = self.inflight.get(pid)
        if state is None:
            return
        state[1] += acked
        state[2] |= fsynced
        if state[1] >= 1 and state[2]:
            del self.inflight[pid]
            if state[0] == LEADER:
                self.waiting.pop(pid).set_result(None)
            else:
                self.peers[state[0]].send(raft_pb2.Message(log_term=COMMITTED, index=pid))

    async def follower_append(self, pid: int, data: bytes) -> None:
        await self.durable(data)
        self.peers[LEADER].send(raft_pb2.Message(log_term=ACK, index=pid))

    async def Stream(
        self,
        request_iterator: AsyncIterator[raft_pb2.MessageBatch],
        context: grpc.aio.ServicerContext,
    ) -> empty_pb2.Empty:
        async for batch in request_iterator:
            self.handle(batch)
        return empty_pb2.Empty()

    async def tcp_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                self.handle(raft_pb2.MessageBatch.FromString(await reader.readexactly(size)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the peer went away (the run is over)

    def handle(self, batch: raft_pb2.MessageBatch) -> None:
        for m in batch.messages:
            if m.log_term == PROPOSE:
                self.replicate(m.index, batch.sender, m.entries[0].data)
            elif m.log_term == APPEND:
                task = asyncio.create_task(self.follower_append(m.index, m.entries[0].data))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            elif m.log_term == ACK:
                self.progress(m.index, acked=True)
            else:
                self.waiting.pop(m.index).set_result(None)


async def serve(me: int, ports: list[int], tcp_ports: list[int] | None, wal: Path) -> None:
    server = grpc.aio.server()
    sk = Skeleton(me, ports, tcp_ports, wal)
    if tcp_ports:
        await asyncio.start_server(sk.tcp_stream, "127.0.0.1", tcp_ports[me])
    rpc_pb2_grpc.add_KVServicer_to_server(sk, server)
    # Synod's peer stream was a gRPC client stream like this one until the
    # seventh round of docs/performance.md; the skeleton keeps its own.
    stream = grpc.stream_unary_rpc_method_handler(
        sk.Stream,
        request_deserializer=raft_pb2.MessageBatch.FromString,
        response_serializer=empty_pb2.Empty.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("synod.floor.Skeleton", {"Stream": stream}),)
    )
    server.add_insecure_port(f"127.0.0.1:{ports[me]}")
    await server.start()
    sk.connect()
    await server.wait_for_termination()


@dataclass
class System:
    leader: str
    follower: str
    pid_of: dict[str, int]  # endpoint -> member process


class SkeletonCluster:
    def __init__(self, base: Path, tcp: bool) -> None:
        self.ports = free_ports(3)
        tcp_ports = ",".join(map(str, free_ports(3))) if tcp else "-"
        self.procs = []
        for i in range(3):
            ports = ",".join(map(str, self.ports))
            cmd = [sys.executable, __file__, "serve", str(i), ports, tcp_ports]
            wal = base / f"wal-{'tcp' if tcp else 'grpc'}-{i}"
            self.procs.append(subprocess.Popen([*cmd, str(wal)]))
        self.endpoints = [f"127.0.0.1:{p}" for p in self.ports]

        def all_answer() -> bool:
            for ep in self.endpoints:
                with grpc.insecure_channel(ep) as ch:
                    try:
                        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k"), timeout=1)
                    except grpc.RpcError:
                        return False
            return True

        try:
            wait_until(all_answer, 30, "skeleton members answer a put")
        except BaseException:
            self.stop()
            raise

    def system(self) -> System:
        pids = {e: p.pid for e, p in zip(self.endpoints, self.procs, strict=True)}
        return System(self.endpoints[LEADER], self.endpoints[1], pids)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        import uvloop

        me, ports = int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")]
        tcp = None if sys.argv[4] == "-" else [int(p) for p in sys.argv[4].split(",")]
        uvloop.run(serve(me, ports, tcp, Path(sys.argv[5])))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="grpc-floor-"))
    stops = []
    try:
        sk = SkeletonCluster(base, tcp=False)
        stops.append(sk.stop)
        sk_tcp = SkeletonCluster(base, tcp=True)
        stops.append(sk_tcp.stop)
        (base / "synod").mkdir()
        sc = LocalCluster(base / "synod")
        stops.append(sc.stop)
        sc.start(timeout=90)
        sc.leader()
        (base / "etcd").mkdir()
        ec = EtcdCluster(base / "etcd", size=3)
        stops.append(ec.stop)
        ec.start()
        systems = {
            "skeleton": sk.system(),
            "skel-tcp": sk_tcp.system(),
            "synod": System(*perf_compare.leader_of([m.endpoint for m in sc.members]),
                            {m.endpoint: pid_of(m.proc) for m in sc.members}),
            "etcd": System(*perf_compare.leader_of(ec.endpoints),
                           {m.endpoint: pid_of(m.proc) for m in ec.members}),
        }  # fmt: skip
        p50: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in range(args.rounds):
            names = list(systems) if r % 2 == 0 else list(reversed(systems))
            for path in PATHS:
                for name in names:
                    sysm = systems[name]
                    targets = {"leader": [sysm.leader], "follower": [sysm.follower]}.get(
                        path, list(sysm.pid_of)
                    )
                    ms, n, used = asyncio.run(seq_put(targets, args.seconds, sysm.pid_of))
                    per_put = (sum(used.values()) / n * 1e6, used[sysm.leader] / n * 1e6)
                    p50.setdefault((name, path), []).append(ms)
                    cpu.setdefault((name, path), []).append(per_put)
                    print(
                        f"round {r} {name:8} {path:11} p50={ms:5.2f} ms cpu/put "
                        f"all={per_put[0]:5.0f} us leader={per_put[1]:5.0f} us",
                        flush=True,
                    )
        print("\nsequential put p50 (ratio to etcd) and CPU per put, all members | leader; medians")
        for path in PATHS:
            etcd = statistics.median(p50[("etcd", path)])
            row = [f"{path:11}"]
            for name in systems:
                v = statistics.median(p50[(name, path)])
                c_all = statistics.median(c[0] for c in cpu[(name, path)])
                c_lead = statistics.median(c[1] for c in cpu[(name, path)])
                row.append(f"{name} {v:4.2f} ms ({v / etcd:4.2f}x) {c_all:4.0f} | {c_lead:4.0f} us")
            print(" | ".join(row))
    finally:
        for stop in reversed(stops):
            stop()
        shutil.rmtree(base, ignore_errors=True)


PATHS = ("leader", "follower", "round robin")


def pid_of(proc: subprocess.Popen[bytes] | None) -> int:
    assert proc is not None
    return proc.pid


async def seq_put(
    endpoints: list[str], seconds: float, pid_of: dict[str, int]
) -> tuple[float, int, dict[str, float]]:
    """One client, one put at a time, round robin over `endpoints`.

    Returns the p50 in ms, the number of puts, and the CPU seconds each member
    process used meanwhile (after the warm-up).
    """
    chans = [grpc.aio.insecure_channel(e) for e in endpoints]
    stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]
    for s in stubs:
        await s.Put(rpc_pb2.PutRequest(key=b"warm", value=b"x"), timeout=10)
    before = {e: perf_compare.cpu_seconds(p) for e, p in pid_of.items()}
    lat = []
    value = b"v" * 100
    stop = time.monotonic() + seconds
    k = 0
    while time.monotonic() < stop:
        t = time.perf_counter()
        await stubs[k % len(stubs)].Put(rpc_pb2.PutRequest(key=b"seq/%d" % (k % 1000), value=value))
        lat.append((time.perf_counter() - t) * 1000)
        k += 1
    used = {e: perf_compare.cpu_seconds(p) - before[e] for e, p in pid_of.items()}
    for c in chans:
        await c.close(None)
    return statistics.median(lat), len(lat), used


if __name__ == "__main__":
    main()

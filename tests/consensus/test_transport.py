"""The peer transport on its own: two Transports in this process, real gRPC on loopback."""

from __future__ import annotations

import asyncio

import grpc
from ports import free_port

from synod.consensus.raft import Message, MessageType
from synod.consensus.transport import RaftServicer, Transport
from synod.raft.v1 import raft_pb2_grpc

CLUSTER, A, B = 0xC1, 0xA, 0xB


def transport(me: int, received: list[Message], unreachable: list[int]) -> Transport:
    return Transport(
        CLUSTER,
        me,
        deliver=received.extend,
        report_snapshot=lambda _peer, _ok: None,
        report_unreachable=unreachable.append,
        is_member=lambda mid: mid in (A, B),
    )


async def test_a_message_to_a_peer_that_came_up_late_is_delivered() -> None:
    """A peer that is down when the stream to it is first opened, then comes up: the
    first message sent after that arrives. The stream that failed while idle used to
    be found dead only by that write, which lost it — a lost vote request costs a
    whole election timeout (seen as failovers of 2-3.5 s instead of 1-2 s)."""
    port = free_port()
    got_a: list[Message] = []
    unreachable: list[int] = []
    a = transport(A, got_a, unreachable)
    a.set_peers({B: [f"http://127.0.0.1:{port}"]})
    async with asyncio.timeout(10):
        while B not in unreachable:  # the first stream to B failed: nobody listens yet
            await asyncio.sleep(0.01)

    got_b: list[Message] = []
    b = transport(B, got_b, [])
    server = grpc.aio.server()
    raft_pb2_grpc.add_RaftServicer_to_server(RaftServicer(b), server)
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    await server.start()
    try:
        vote = Message(MessageType.PRE_VOTE, to=B, sender=A, term=2, index=7, log_term=1)
        a.send([vote])
        async with asyncio.timeout(10):
            while not got_b:
                await asyncio.sleep(0.01)
        assert got_b == [vote]
    finally:
        await a.close()
        await server.stop(None)

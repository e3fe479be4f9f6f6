"""The peer transport on its own: two Transports in this process, real peer streams on loopback."""

from __future__ import annotations

import asyncio

import pytest
from ports import free_port

from synod.consensus.peer_listener import PeerListener
from synod.consensus.raft import Message, MessageType
from synod.consensus.transport import Transport

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


async def serve(t: Transport, port: int) -> PeerListener:
    """A listener on `port` that hands the peer streams arriving there to `t`."""
    listener = PeerListener(t, grpc_address=lambda _tls: "no-grpc-here", server_ssl=None)
    await listener.listen(f"http://127.0.0.1:{port}", "test")
    return listener


async def wait_unreachable(peer: int, unreachable: list[int]) -> None:
    async with asyncio.timeout(10):
        while peer not in unreachable:
            await asyncio.sleep(0.01)


FIRST = Message(MessageType.HEARTBEAT, to=B, sender=A, term=1)


async def connected(
    port: int,
) -> tuple[Transport, Transport, PeerListener, list[Message], list[int]]:
    """A with its stream to B (listening on `port`) up: FIRST has arrived.
    Returns A, B, B's listener, what B received, and A's unreachable reports."""
    got_b: list[Message] = []
    b = transport(B, got_b, [])
    server = await serve(b, port)
    unreachable: list[int] = []
    a = transport(A, [], unreachable)
    a.set_peers({B: [f"http://127.0.0.1:{port}"]})
    a.send([FIRST])
    async with asyncio.timeout(10):
        while not got_b:
            await asyncio.sleep(0.01)
    return a, b, server, got_b, unreachable


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
    await wait_unreachable(B, unreachable)  # the first stream to B failed: nobody listens yet

    got_b: list[Message] = []
    b = transport(B, got_b, [])
    server = await serve(b, port)
    try:
        vote = Message(MessageType.PRE_VOTE, to=B, sender=A, term=2, index=7, log_term=1)
        a.send([vote])
        async with asyncio.timeout(10):
            while not got_b:
                await asyncio.sleep(0.01)
        assert got_b == [vote]
    finally:
        await a.close()
        await server.close()


async def test_a_sender_backing_off_retries_when_the_peer_calls_us(monkeypatch) -> None:
    """A's stream to B failed while B was down, and A backs off (here for a minute).
    When B comes up and opens its own stream to A, A retries at once: B hears A
    long before the backoff would end. Without that, a member restarted just
    before a leader dies could not hear the votes of a peer that was backing
    off from it (kill -9 failovers of 0.8-1.5 s in `make bench`)."""
    from synod.consensus import transport as transport_module

    monkeypatch.setattr(transport_module, "BACKOFF_MIN", 60.0)
    monkeypatch.setattr(transport_module, "BACKOFF_MAX", 60.0)
    port_a, port_b = free_port(), free_port()
    got_a: list[Message] = []
    unreachable_a: list[int] = []
    a = transport(A, got_a, unreachable_a)
    server_a = await serve(a, port_a)
    a.set_peers({B: [f"http://127.0.0.1:{port_b}"]})
    await wait_unreachable(B, unreachable_a)  # nobody listens on B's port yet: A backs off

    got_b: list[Message] = []
    b = transport(B, got_b, [])
    server_b = await serve(b, port_b)
    b.set_peers({A: [f"http://127.0.0.1:{port_a}"]})
    try:
        vote = Message(MessageType.PRE_VOTE, to=A, sender=B, term=2, index=7, log_term=1)
        b.send([vote])  # B's first batch to A tells A that B is up
        answer = Message(MessageType.PRE_VOTE_RESP, to=B, sender=A, term=2)
        a.send([answer])
        async with asyncio.timeout(10):  # far inside A's 60 s backoff
            while not got_b:
                await asyncio.sleep(0.01)
        assert got_a == [vote] and got_b == [answer]
    finally:
        await a.close()
        await b.close()
        await server_a.close()
        await server_b.close()


async def test_messages_arrive_in_order_whether_written_at_once_or_queued(monkeypatch) -> None:
    """`send` writes straight to the socket while the peer keeps pace, and queues
    for the sender task when the socket's buffer is full. Messages sent after a
    queued run must not overtake it: Raft's pipelined appends rely on order."""
    from synod.consensus import transport as transport_module

    port = free_port()
    got_b: list[Message] = []
    b = transport(B, got_b, [])
    server = await serve(b, port)
    a = transport(A, [], [])
    a.set_peers({B: [f"http://127.0.0.1:{port}"]})
    sent: list[Message] = []

    def burst(n: int) -> None:
        for _ in range(n):
            m = Message(MessageType.HEARTBEAT, to=B, sender=A, term=1, commit=len(sent))
            sent.append(m)
            a.send([m])

    try:
        async with asyncio.timeout(10):  # connected: the first message arrives
            burst(1)
            while not got_b:
                await asyncio.sleep(0.01)
        burst(50)  # written at once
        monkeypatch.setattr(transport_module, "WRITE_BUFFER_LIMIT", 0)
        burst(50)  # the buffer counts as full: queued
        monkeypatch.setattr(transport_module, "WRITE_BUFFER_LIMIT", 1 << 30)
        burst(50)  # must wait behind the queued ones
        async with asyncio.timeout(10):
            while len(got_b) < len(sent):
                await asyncio.sleep(0.01)
        assert [m.commit for m in got_b] == [m.commit for m in sent]
    finally:
        await a.close()
        await server.close()


@pytest.mark.parametrize(
    ("env", "host", "proxy"),
    [
        ({}, "10.0.0.1", None),
        ({"grpc_proxy": "http://127.0.0.1:3128"}, "10.0.0.1", ("127.0.0.1", 3128)),
        ({"https_proxy": "proxy.example:8080"}, "m1", ("proxy.example", 8080)),
        ({"grpc_proxy": "http://p:1", "https_proxy": "http://q:2"}, "m1", ("p", 1)),
        ({"grpc_proxy": "http://p:1", "no_grpc_proxy": "m1"}, "m1", None),
        ({"grpc_proxy": "http://p:1", "no_proxy": "*"}, "m1", None),
        ({"grpc_proxy": "http://p:1", "no_proxy": "cluster.local"}, "m1.cluster.local", None),
        # the harness clears the exemptions so that nothing bypasses its proxy
        ({"grpc_proxy": "http://p:1", "no_grpc_proxy": "", "no_proxy": "m1"}, "m1", ("p", 1)),
    ],
)
def test_peer_streams_take_the_proxy_grpc_would(
    monkeypatch, env: dict[str, str], host: str, proxy: tuple[str, int] | None
) -> None:
    """Peer streams follow gRPC's proxy settings, so the fault-injection harness's
    CONNECT proxy sees them along with the member's gRPC calls."""
    from synod.consensus.peer_stream import http_proxy_for

    for k in ("grpc_proxy", "https_proxy", "http_proxy", "no_grpc_proxy", "no_proxy"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert http_proxy_for(host) == proxy


async def test_messages_queued_while_a_peer_is_down_again_survive_failed_redials() -> None:
    """A stream that was up and written to breaks (the peer went down). What is
    sent while the peer stays down waits, through every failed redial, and
    arrives when it is back: the first messages to a restarted peer are votes."""
    port = free_port()
    a, b, server, got_b, unreachable = await connected(port)
    try:
        await server.close()  # B goes down: A's stream breaks, its redials fail
        await wait_unreachable(B, unreachable)
        vote = Message(MessageType.PRE_VOTE, to=B, sender=A, term=2, index=7, log_term=1)
        a.send([vote])
        async with asyncio.timeout(10):  # at least one more failed redial with the vote queued
            n = len(unreachable)
            while len(unreachable) < n + 2:
                await asyncio.sleep(0.01)
        server = await serve(b, port)
        async with asyncio.timeout(10):
            while len(got_b) < 2:
                await asyncio.sleep(0.01)
        assert got_b == [FIRST, vote]
    finally:
        await a.close()
        await server.close()


def test_a_send_on_a_connection_that_just_closed_does_not_raise() -> None:
    """The peer's connection closes and, before the sender's task has noticed,
    the Raft loop sends to that peer. On uvloop, the loop members run on, a
    write to the closed transport raises; that must not reach the Raft loop
    (it stopped a member whose leader was killed, in a CI run)."""
    import uvloop

    async def scenario() -> None:
        a, _b, server, got_b, unreachable = await connected(free_port())
        try:
            writer = a._peers[B]._writer
            assert writer is not None
            writer.transport.abort()
            await asyncio.sleep(0)  # the transport is closed now; the sender has not noticed
            assert a._peers[B]._writer is writer
            a.send([Message(MessageType.HEARTBEAT, to=B, sender=A, term=1, commit=1)])
            await wait_unreachable(B, unreachable)  # the sender noticed and redials
            later = Message(MessageType.HEARTBEAT, to=B, sender=A, term=1, commit=2)
            async with asyncio.timeout(10):  # and the stream works again
                while later not in got_b:
                    a.send([later])
                    await asyncio.sleep(0.05)
        finally:
            await a.close()
            await server.close()

    uvloop.run(scenario())

"""The router as a gRPC proxy: echo backends (tests/support/router_echo_backend.py) as
real processes, registered through the router; raw-bytes forwarding of unary,
server-streaming and bidirectional calls; statuses; backend death; bounded loads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from router_harness import RouterProc, Routers, routers, status_of, store  # noqa: F401

from synod.router.v1 import router_pb2

Metadata = list[tuple[str, str]]


def chan(r: RouterProc) -> Any:
    """The router's channel, untyped: generic (raw bytes) calls confuse grpc-stubs."""
    return r.channel()


def md(ring: str | None, key: str | None, *extra: tuple[str, str]) -> Metadata:
    out = list(extra)
    if ring is not None:
        out.append(("synod-ring", ring))
    if key is not None:
        out.append(("synod-route-key", key))
    return out


def unary(
    r: RouterProc, method: str, request: bytes, metadata: list[tuple[str, str]]
) -> tuple[bytes, dict[str, str]]:
    call = chan(r).unary_unary(method)
    resp, c = call.with_call(request, metadata=metadata, timeout=10)
    return resp, dict(c.trailing_metadata())


def owner(r: RouterProc, ring: str, key: str, n: int = 1) -> list[str]:
    resp = r.stub().Lookup(router_pb2.LookupRequest(ring=ring, key=key.encode(), replicas=n))
    return [m.id for m in resp.members]


def test_forward_unary_stream_and_status(routers: Routers) -> None:  # noqa: F811
    rs, ring = routers, "fwd"
    backends = [rs.backend(f"echo-{i}", ring, ttl=5, via=rs.both[i % 2]) for i in range(3)]
    rs.wait_members(ring, {b.id for b in backends})
    seen = set()
    for i in range(30):
        key = f"user-{i}"
        want = owner(rs.b, ring, key)[0]
        seen.add(want)
        for r in rs.both:
            resp, trailers = unary(r, "/test.Echo/Unary", b"hi", md(ring, key, ("x-tag", "t1")))
            assert resp == f"{want}|t1|hi".encode()
            assert trailers["synod-backend"] == want and trailers["echo-backend"] == want
    assert len(seen) == 3  # all backends got keys

    # Server streaming: all messages, in order, from the owner.
    stream = chan(rs.b).unary_stream("/test.Echo/Stream")
    call = stream(b"s", metadata=md(ring, "user-1"), timeout=10)
    want = owner(rs.b, ring, "user-1")[0]
    assert list(call) == [f"{want}|{i}|s".encode() for i in range(3)]
    assert dict(call.trailing_metadata())["synod-backend"] == want

    # Bidirectional streaming.
    chat = chan(rs.a).stream_stream("/test.Echo/Chat")
    call = chat(iter([b"1", b"2", b"3"]), metadata=md(ring, "user-2"), timeout=10)
    want = owner(rs.a, ring, "user-2")[0]
    assert list(call) == [f"{want}|{i}".encode() for i in (1, 2, 3)]

    # The backend's own error: code, details and trailers pass through.
    fail = chan(rs.b).unary_unary("/test.Echo/Fail")
    try:
        fail.with_call(b"", metadata=md(ring, "user-3"), timeout=10)
        raise AssertionError("expected NOT_FOUND")
    except grpc.RpcError as err:
        e: Any = err
        assert e.code() == grpc.StatusCode.NOT_FOUND
        assert e.details() == "nothing here"
        t = dict(e.trailing_metadata())
        assert t["x-reason"] == "test" and t["synod-backend"] == owner(rs.b, ring, "user-3")[0]

    # Routing errors.
    def send(m: Metadata) -> tuple[grpc.StatusCode, str]:
        return status_of(lambda: unary(rs.b, "/test.Echo/Unary", b"x", m))

    code, details = send(md(None, "k"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "synod-ring" in details
    code, details = send(md(ring, None))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "synod-route-key" in details
    code, details = send(md(ring, ""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, details = send(md("no-such-ring", "k"))
    assert code == grpc.StatusCode.NOT_FOUND and "no-such-ring" in details
    rs.a.stub().Register(
        router_pb2.RegisterRequest(ring="emptied", id="x", address="127.0.0.1:1", ttl_seconds=60)
    )
    rs.a.stub().Deregister(router_pb2.DeregisterRequest(ring="emptied", id="x"))
    rs.wait_members("emptied", set())
    code, details = send(md("emptied", "k"))
    assert code == grpc.StatusCode.UNAVAILABLE and "no members" in details

    # A ring whose only member is unreachable: UNAVAILABLE naming it and its address.
    rs.a.stub().Register(
        router_pb2.RegisterRequest(ring="dead", id="ghost", address="127.0.0.1:1", ttl_seconds=60)
    )
    rs.wait_members("dead", {"ghost"})
    code, details = send(md("dead", "k"))
    assert code == grpc.StatusCode.UNAVAILABLE, details
    assert "'ghost' at 127.0.0.1:1" in details

    # Backend death: its lease (5 s) has not expired yet, so it still owns its keys, but
    # its channel is down: calls for its keys go to the next member of their preference
    # list (never resent once sent, see proxy.py); other keys are untouched.
    victim = backends[0]
    key = next(f"user-{i}" for i in range(100) if owner(rs.b, ring, f"user-{i}")[0] == victim.id)
    other = next(f"user-{i}" for i in range(100) if owner(rs.b, ring, f"user-{i}")[0] != victim.id)
    unary(rs.b, "/test.Echo/Unary", b"x", md(ring, key))  # the channel to the victim is up
    victim.kill()
    nxt = owner(rs.b, ring, key, n=2)[1]

    def served_by_next() -> bool:
        try:
            return unary(rs.b, "/test.Echo/Unary", b"x", md(ring, key))[1]["synod-backend"] == nxt
        except grpc.RpcError as e:
            # Only a call already in flight on the dying connection may fail, naming it.
            assert e.code() == grpc.StatusCode.UNAVAILABLE and victim.id in (e.details() or "")
            return False

    rs.b.wait(served_by_next, 10, f"calls for {victim.id}'s key to reach {nxt}")
    assert victim.id in {m.id for m in rs.b.ring(ring).members}  # lease not expired yet
    assert unary(rs.b, "/test.Echo/Unary", b"x", md(ring, other))[1]["synod-backend"] != victim.id
    assert rs.b.metric("synod_router_forward_retries_total", ring=ring, backend=nxt) >= 1
    assert rs.b.metric("synod_router_forwarded_total", ring=ring, code="OK") >= 30
    # ... and once the lease expires, its keys belong to the others.
    rs.wait_members(ring, {b.id for b in backends[1:]}, timeout=victim.granted_ttl + 5)
    _, t = unary(rs.b, "/test.Echo/Unary", b"x", md(ring, key))
    assert t["synod-backend"] == owner(rs.b, ring, key)[0] != victim.id


def test_bounded_load(routers: Routers) -> None:  # noqa: F811
    rs, ring = routers, "bounded"
    backends = [rs.backend(f"slow-{i}", ring, ttl=5) for i in range(3)]
    rs.wait_members(ring, {b.id for b in backends})
    key = "hot-key"
    prefs = owner(rs.a, ring, key, 3)

    def burst(r: RouterProc, n: int = 6) -> list[str]:
        slow = chan(r).unary_unary("/test.Echo/Slow")
        m = md(ring, key, ("x-sleep-ms", "1500"))
        with ThreadPoolExecutor(n) as pool:
            futs = [pool.submit(slow.with_call, b"x", metadata=m, timeout=20) for _ in range(n)]
            return [dict(f.result()[1].trailing_metadata())["synod-backend"] for f in futs]

    # Router b has no --bounded-load: every call goes to the owner.
    assert burst(rs.b) == [prefs[0]] * 6
    # Router a (--bounded-load 1.25): once the owner holds more than its share of
    # the calls in flight, calls go to the next members of the key's preference list.
    skips_before = rs.a.metric("synod_router_bounded_load_skips_total", ring=ring)
    got = burst(rs.a)
    assert got.count(prefs[0]) < 6 and set(got) <= set(prefs), got
    assert set(got) - {prefs[0]}
    assert rs.a.metric("synod_router_bounded_load_skips_total", ring=ring) > skips_before
    assert rs.a.metric("synod_router_bounded_load_skips_total", ring=ring, backend=prefs[0]) > 0
    assert rs.a.metric("synod_router_inflight", ring=ring) == 0  # all calls finished

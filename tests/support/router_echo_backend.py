"""A tiny gRPC echo backend for the router tests, run as its own process.

It knows no protos: grpc generic handlers with raw bytes. Methods:

* ``/test.Echo/Unary``  unary-unary: ``b"<id>|<x-tag>|" + request``; trailer ``echo-backend``
* ``/test.Echo/Stream`` unary-stream: three messages ``b"<id>|<i>|" + request``
* ``/test.Echo/Slow``   unary-unary: like Unary after ``x-sleep-ms`` (default 1000) ms
* ``/test.Echo/Chat``   stream-stream: each request back, prefixed with ``b"<id>|"``
* ``/test.Echo/Fail``   fails with NOT_FOUND "nothing here" and trailer ``x-reason: test``

With ``--router`` it registers itself in ``--ring`` via the Router API and keeps its
lease alive with the KeepAlive stream (every TTL/3) until killed. It prints
``READY <port> <lease_id> <ttl>`` on stdout once serving (and registered), or
``REGISTER_FAILED <code> <details>`` and exits 3.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from synod.router.v1 import router_pb2, router_pb2_grpc

EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009 - not in grpc-stubs


def _md(context: grpc.aio.ServicerContext, key: str, default: str = "") -> str:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return str(v)
    return default


class Echo(grpc.GenericRpcHandler):
    def __init__(self, member_id: str) -> None:
        self.id = member_id.encode()

    def service(self, details: Any) -> grpc.RpcMethodHandler | None:
        m = details.method
        if m == "/test.Echo/Unary":
            return grpc.unary_unary_rpc_method_handler(self.unary)
        if m == "/test.Echo/Slow":
            return grpc.unary_unary_rpc_method_handler(self.slow)
        if m == "/test.Echo/Stream":
            return grpc.unary_stream_rpc_method_handler(self.stream)
        if m == "/test.Echo/Chat":
            return grpc.stream_stream_rpc_method_handler(self.chat)
        if m == "/test.Echo/Fail":
            return grpc.unary_unary_rpc_method_handler(self.fail)
        return None

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        context.set_trailing_metadata((("echo-backend", self.id.decode()),))
        return self.id + b"|" + _md(context, "x-tag").encode() + b"|" + request

    async def slow(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(int(_md(context, "x-sleep-ms", "1000")) / 1000)
        return await self.unary(request, context)

    async def stream(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        for i in range(3):
            yield self.id + b"|" + str(i).encode() + b"|" + request

    async def chat(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for r in requests:
            yield self.id + b"|" + r

    async def fail(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        context.set_trailing_metadata((("x-reason", "test"),))
        await context.abort(grpc.StatusCode.NOT_FOUND, "nothing here")
        return b""


async def keep_alive(stub: router_pb2_grpc.RouterStub, lease_id: int, ttl: int) -> None:
    while True:
        try:
            call = stub.KeepAlive()
            while True:
                await call.write(router_pb2.KeepAliveRequest(lease_id=lease_id))
                resp = await call.read()
                if resp is EOF or resp.ttl_seconds <= 0:
                    print(f"LEASE_LOST {lease_id}", flush=True)
                    return
                await asyncio.sleep(max(ttl / 3, 0.2))
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.2)  # router replica gone: try again (same or another)


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--id", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--router", default="")
    p.add_argument("--ring", default="echo")
    p.add_argument("--ttl", type=int, default=2)
    p.add_argument("--weight", type=int, default=1)
    # mutual TLS on the backend's port (the router then forwards with --backend-*-file)
    p.add_argument("--cert-file", default="")
    p.add_argument("--key-file", default="")
    p.add_argument("--trusted-ca-file", default="")
    a = p.parse_args(argv)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Echo(a.id),))
    if a.cert_file:
        creds = grpc.ssl_server_credentials(
            [(open(a.key_file, "rb").read(), open(a.cert_file, "rb").read())],
            root_certificates=open(a.trusted_ca_file, "rb").read(),
            require_client_auth=True,
        )
        port = server.add_secure_port(f"127.0.0.1:{a.port}", creds)
    else:
        port = server.add_insecure_port(f"127.0.0.1:{a.port}")
    await server.start()
    lease_id, ttl = 0, 0
    if a.router:
        channel = grpc.aio.insecure_channel(a.router)
        stub = router_pb2_grpc.RouterStub(channel)
        try:
            resp = await stub.Register(
                router_pb2.RegisterRequest(
                    ring=a.ring,
                    id=a.id,
                    address=f"127.0.0.1:{port}",
                    weight=a.weight,
                    ttl_seconds=a.ttl,
                    metadata={"pid": str(__import__("os").getpid())},
                ),
                timeout=10,
            )
        except grpc.aio.AioRpcError as e:
            print(f"REGISTER_FAILED {e.code().name} {e.details()}", flush=True)
            return 3
        lease_id, ttl = resp.lease_id, resp.ttl_seconds
        keeper = asyncio.ensure_future(keep_alive(stub, lease_id, ttl))  # noqa: F841
    print(f"READY {port} {lease_id} {ttl}", flush=True)
    await server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

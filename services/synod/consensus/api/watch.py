"""etcdserverpb.Watch: one bidirectional stream carrying many watches.

The handler is thin: a reader task feeds the stream's requests (create,
cancel, progress) to a `WatchStream` of the member's `WatchHub`, and the
handler itself sends that stream's responses until the client goes away.
A client half-close ends nothing (as in etcd: the watches keep running).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import structlog

from synod.consensus.watch import WatchHub, WatchStream, WireResponse, serialize
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from synod.consensus.member import Member

log = structlog.get_logger("synod.watch")


class WatchServicer(rpc_pb2_grpc.WatchServicer):
    def __init__(self, member: Member):
        self.m = member

    def _hub(self) -> WatchHub:
        hub: WatchHub | None = getattr(self.m, "watch_hub", None)
        assert hub is not None, "Member.watch_hub is not wired"
        return hub

    async def Watch(
        self,
        request_iterator: AsyncIterator[rpc_pb2.WatchRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[WireResponse]:
        stream = self._hub().open_stream()
        reader = asyncio.ensure_future(_read(request_iterator, stream))
        try:
            async for resp in stream.responses():
                yield resp
            if stream.error is not None:
                await context.abort(grpc.StatusCode.UNAVAILABLE, stream.error)
        finally:
            reader.cancel()
            stream.close()


async def _read(requests: AsyncIterator[rpc_pb2.WatchRequest], stream: WatchStream) -> None:
    try:
        async for req in requests:
            which = req.WhichOneof("request_union")
            if which == "create_request":
                stream.create(req.create_request)
            elif which == "cancel_request":
                stream.cancel(req.cancel_request.watch_id)
            elif which == "progress_request":
                stream.request_progress()
            if stream.closed:
                return
            await stream.wait_writable()
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - the RPC is going away; the sender cleans up
        log.debug("watch_stream_read_ended", error=repr(e))


def register(server: grpc.aio.Server, member: Member) -> None:
    # As rpc_pb2_grpc.add_WatchServicer_to_server, but live event responses are
    # queued already encoded, so the serializer takes bytes as well as messages.
    handlers = {
        "Watch": grpc.stream_stream_rpc_method_handler(
            WatchServicer(member).Watch,
            request_deserializer=rpc_pb2.WatchRequest.FromString,
            response_serializer=serialize,
        )
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("etcdserverpb.Watch", handlers),)
    )
    add_registered = getattr(server, "add_registered_method_handlers", None)  # grpcio >= 1.62
    if add_registered is not None:
        add_registered("etcdserverpb.Watch", handlers)

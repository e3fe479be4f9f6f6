"""etcd's client-visible errors: gRPC status codes and the texts etcd clients know."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from synod.consensus.mvcc import MvccError
from synod.consensus.node import NotLeaderError

T = TypeVar("T")


class ApiError(Exception):
    """A request error with the status and text the client should get."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, e: grpc.aio.AioRpcError) -> ApiError:
        """Pass on what the leader answered a forwarded request."""
        return cls(e.code(), e.details() or e.code().name)


EMPTY_KEY = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
TOO_MANY_OPS = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
REQUEST_TOO_LARGE = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")
NO_LEADER = (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
TIMEOUT = (grpc.StatusCode.DEADLINE_EXCEEDED, "etcdserver: request timed out")
MEMBER_NOT_FOUND = (grpc.StatusCode.NOT_FOUND, "etcdserver: member not found")
NOT_SUPPORTED = (grpc.StatusCode.UNIMPLEMENTED, "etcdserver: not supported by synod yet")


async def abort(context: grpc.aio.ServicerContext, err: tuple[grpc.StatusCode, str]) -> NoReturn:
    await context.abort(err[0], err[1])
    raise AssertionError("unreachable")  # context.abort raises


async def call_guarded(context: grpc.aio.ServicerContext, fn: Callable[[], Awaitable[T]]) -> T:
    """Run `fn`, turning the member's failures into etcd's statuses."""
    try:
        return await fn()
    except MvccError as e:
        await context.abort(getattr(grpc.StatusCode, e.grpc_code), e.grpc_message)
    except ApiError as e:
        await context.abort(e.code, e.message)
    except NotLeaderError as e:
        detail = str(e)
        suffix = f" ({detail})" if detail and detail != "no leader" else ""
        await context.abort(NO_LEADER[0], NO_LEADER[1] + suffix)
    except TimeoutError:
        await abort(context, TIMEOUT)
    raise AssertionError("unreachable")


def raise_result(result: Any) -> Any:
    """Apply results carry errors as values (the log is replayed everywhere); raise them here."""
    if isinstance(result, BaseException):
        raise result
    return result

"""Exceptions raised by the internal etcd v3 client.

Every error the client raises for a failed RPC is an `EtcdError` carrying the
gRPC status `code`, the server's `message`, and the `endpoint` it came from.
Subclasses exist for the cases callers handle differently:

* `Unavailable` - no usable endpoint / connection lost / no leader. For
  non-idempotent calls (Put, DeleteRange, Txn with writes, LeaseGrant without
  an explicit ID, LeaseRevoke, Compact) the client never retries: the caller
  gets `Unavailable` and must decide. `maybe_applied` is False only when the
  client knows the request never left it (it could not connect), so a retry is
  safe; otherwise the outcome is unknown (check with a read or guard the retry
  with a txn compare).
* `DeadlineExceeded` - the call's deadline passed (outcome of writes unknown).
* `NotFound` - e.g. the lease does not exist (revoked or expired).
* `InvalidArgument`, `FailedPrecondition` - request rejected; do not retry.
* `Compacted` - the requested revision was compacted away;
  `compact_revision` is the server's compaction revision when known (watches),
  0 when the server did not say (Range at a compacted revision).
* `Cancelled` - the call was cancelled, or the client/watch was closed.
* `LockLost` - a write guarded by a lock's fencing token was rejected: the
  lock is no longer held (raised by the lock helpers, not by an RPC).

Pure data; safe to use from any thread.
"""

from __future__ import annotations

import grpc

__all__ = [
    "Cancelled",
    "Compacted",
    "DeadlineExceeded",
    "EtcdError",
    "FailedPrecondition",
    "InvalidArgument",
    "LockLost",
    "NotFound",
    "Unavailable",
    "map_rpc_error",
]


class EtcdError(Exception):
    """Base class: a failed etcd v3 call. `code` is the gRPC status code."""

    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        self.endpoint = endpoint

    def __str__(self) -> str:
        where = f" @ {self.endpoint}" if self.endpoint else ""
        return f"{self.message} [{self.code.name}{where}]"


class Unavailable(EtcdError):
    """The endpoint (or the whole cluster) could not serve the request."""

    default_code = grpc.StatusCode.UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        endpoint: str | None = None,
        maybe_applied: bool = True,
    ) -> None:
        super().__init__(message, code=code, endpoint=endpoint)
        self.maybe_applied = maybe_applied


class DeadlineExceeded(EtcdError):
    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(EtcdError):
    default_code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(EtcdError):
    default_code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(EtcdError):
    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Cancelled(EtcdError):
    default_code = grpc.StatusCode.CANCELLED


class LockLost(EtcdError):
    """The lock is no longer held: a guarded write was rejected."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Compacted(EtcdError):
    """The requested revision has been compacted."""

    default_code = grpc.StatusCode.OUT_OF_RANGE

    def __init__(
        self,
        message: str,
        compact_revision: int = 0,
        *,
        code: grpc.StatusCode | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message, code=code, endpoint=endpoint)
        self.compact_revision = compact_revision


_BY_CODE: dict[grpc.StatusCode, type[EtcdError]] = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def map_rpc_error(
    err: grpc.RpcError, *, endpoint: str | None = None, operation: str | None = None
) -> EtcdError:
    """Translate a gRPC error (sync or aio) into the `EtcdError` hierarchy."""
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    code: grpc.StatusCode = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details = (details_fn() if callable(details_fn) else None) or str(err)
    message = f"{operation}: {details}" if operation else details
    if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
        return Compacted(message, 0, code=code, endpoint=endpoint)
    cls = _BY_CODE.get(code, EtcdError)
    return cls(message, code=code, endpoint=endpoint)

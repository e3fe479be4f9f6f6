"""Errors raised by the MVCC store, carrying etcd's exact texts and gRPC codes.

Each class has:

- ``str(exc)``: the text of the matching etcd error (``mvcc: ...`` for the two
  revision errors, ``etcdserver: ...`` for request errors);
- ``grpc_message``: the text etcd puts in the gRPC status (what clients match on;
  etcd's clientv3 maps these strings back to typed errors, so they must be exact);
- ``grpc_code``: the *name* of the ``grpc.StatusCode`` member etcd uses (a string,
  so this module does not import grpc; ``getattr(grpc.StatusCode, exc.grpc_code)``).

Codes follow etcd's ``api/v3rpc/rpctypes``: compacted / future revision are
OUT_OF_RANGE; every request-shape error (empty key, key not found for
``ignore_value``/``ignore_lease``, value/lease provided, duplicate key, too many
ops) is INVALID_ARGUMENT; a missing lease is NOT_FOUND.
"""

from __future__ import annotations

__all__ = [
    "CompactedError",
    "DuplicateKeyError",
    "EmptyKeyError",
    "FutureRevisionError",
    "KeyNotFoundError",
    "LeaseNotFoundError",
    "LeaseProvidedError",
    "MvccError",
    "SnapshotCorruptError",
    "TooManyOpsError",
    "ValueProvidedError",
]


class MvccError(Exception):
    """Base class: an etcd-visible request error. The store is unchanged when raised."""

    message: str = "etcdserver: unknown error"
    grpc_message: str = "etcdserver: unknown error"
    grpc_code: str = "UNKNOWN"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message if message is not None else self.message)


class CompactedError(MvccError):
    """The requested revision is older than the compacted revision."""

    message = "mvcc: required revision has been compacted"
    grpc_message = "etcdserver: mvcc: required revision has been compacted"
    grpc_code = "OUT_OF_RANGE"

    def __init__(self, message: str | None = None, *, compact_revision: int = 0) -> None:
        super().__init__(message)
        #: The store's compacted revision when known (watch cancellation reports it).
        self.compact_revision = compact_revision


class FutureRevisionError(MvccError):
    """The requested revision is newer than the store's current revision."""

    message = "mvcc: required revision is a future revision"
    grpc_message = "etcdserver: mvcc: required revision is a future revision"
    grpc_code = "OUT_OF_RANGE"


class EmptyKeyError(MvccError):
    message = grpc_message = "etcdserver: key is not provided"
    grpc_code = "INVALID_ARGUMENT"


class KeyNotFoundError(MvccError):
    """``ignore_value``/``ignore_lease`` on an absent key, or an empty txn op."""

    message = grpc_message = "etcdserver: key not found"
    grpc_code = "INVALID_ARGUMENT"


class ValueProvidedError(MvccError):
    message = grpc_message = "etcdserver: value is provided"
    grpc_code = "INVALID_ARGUMENT"


class LeaseProvidedError(MvccError):
    message = grpc_message = "etcdserver: lease is provided"
    grpc_code = "INVALID_ARGUMENT"


class DuplicateKeyError(MvccError):
    message = grpc_message = "etcdserver: duplicate key given in txn request"
    grpc_code = "INVALID_ARGUMENT"


class TooManyOpsError(MvccError):
    message = grpc_message = "etcdserver: too many operations in txn request"
    grpc_code = "INVALID_ARGUMENT"


class LeaseNotFoundError(MvccError):
    """Raised only when the store was given a ``lease_exists`` hook that says no."""

    message = grpc_message = "etcdserver: requested lease not found"
    grpc_code = "NOT_FOUND"


class SnapshotCorruptError(ValueError):
    """A snapshot blob failed validation; ``offset`` is where decoding stopped."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"mvcc snapshot corrupt at offset {offset}: {reason}")
        self.reason = reason
        self.offset = offset

"""etcd-compatible MVCC key-value store applied by the consensus service.

Public API:

- ``MvccStore``: ``range``, ``apply_put``, ``apply_delete_range``, ``apply_txn``,
  ``apply_compaction`` / ``compact``, ``events_since``, ``hash_kv``,
  ``keys_for_lease``, ``to_bytes`` / ``from_bytes`` / ``restore``, and the
  ``revision`` / ``compact_revision`` properties.
- ``key_in_range``: etcd's (key, range_end) selection rule, for watchers.
- Errors (``errors``): each carries etcd's message and ``grpc_code``.
"""

from synod.consensus.mvcc.errors import (
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseNotFoundError,
    LeaseProvidedError,
    MvccError,
    SnapshotCorruptError,
    TooManyOpsError,
    ValueProvidedError,
)
from synod.consensus.mvcc.store import DEFAULT_MAX_TXN_OPS, MvccStore, key_in_range

__all__ = [
    "DEFAULT_MAX_TXN_OPS",
    "CompactedError",
    "DuplicateKeyError",
    "EmptyKeyError",
    "FutureRevisionError",
    "KeyNotFoundError",
    "LeaseNotFoundError",
    "LeaseProvidedError",
    "MvccError",
    "MvccStore",
    "SnapshotCorruptError",
    "TooManyOpsError",
    "ValueProvidedError",
    "key_in_range",
]

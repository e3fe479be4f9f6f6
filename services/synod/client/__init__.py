"""Synod's Python client.

`Client` (asyncio) and `SyncClient` (for synchronous code) are the public
entry points: the consensus store's KV, leases and watches, the lock service
and the router, with endpoint failover, retries of idempotent calls and a
deadline on every call. Every failed call raises an `EtcdError` subclass.
See docs/client.md.

`synod.client.etcd.EtcdClient` is the lower-level etcd v3 client that `Client`
is built on (also used by Synod's lock and router services).
"""

from synod.tls import ClientTLS

from .errors import (
    Cancelled,
    Compacted,
    DeadlineExceeded,
    EtcdError,
    FailedPrecondition,
    InvalidArgument,
    LockLost,
    NotFound,
    Unavailable,
)
from .kv import (
    compare_create_revision,
    compare_lease,
    compare_mod_revision,
    compare_value,
    compare_version,
    op_delete,
    op_get,
    op_put,
    op_txn,
)
from .public import (
    KV,
    Client,
    KeyValue,
    Lease,
    Leases,
    Lock,
    RouterView,
    SyncClient,
    SyncKV,
    SyncLeases,
    SyncLock,
    SyncRouterView,
)

__all__ = [
    "KV",
    "Cancelled",
    "Client",
    "ClientTLS",
    "Compacted",
    "DeadlineExceeded",
    "EtcdError",
    "FailedPrecondition",
    "InvalidArgument",
    "KeyValue",
    "Lease",
    "Leases",
    "Lock",
    "LockLost",
    "NotFound",
    "RouterView",
    "SyncClient",
    "SyncKV",
    "SyncLeases",
    "SyncLock",
    "SyncRouterView",
    "Unavailable",
    "compare_create_revision",
    "compare_lease",
    "compare_mod_revision",
    "compare_value",
    "compare_version",
    "op_delete",
    "op_get",
    "op_put",
    "op_txn",
]

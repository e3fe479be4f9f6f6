"""Who holds a lock, and what a waiter must watch: pure functions of the lock's keys.

A lock named NAME is the set of keys under `NAME/` in the consensus store, one
per session (`NAME/<lease id in hex>`, the layout of etcd's own lock recipe),
served in order of their create revision. Each key says how it wants the
lock in its value; an empty value (etcd's recipe writes none) means
exclusive.

A key is granted when, among the keys created before it ("ahead"):

- EXCLUSIVE, limit 1:  none at all;
- EXCLUSIVE, limit L:  fewer than L, and none of them wants limit 1
  (a counting semaphore: the first L keys hold it);
- SHARED:              none that is EXCLUSIVE (readers share; a writer waiting
  ahead of a reader holds the reader back, so writers never starve).

A waiter watches only keys whose change can grant it (no herd):
- EXCLUSIVE limit 1 and SHARED: the newest key ahead that blocks it, for its
  deletion; when it goes, the waiter looks again.
- a semaphore waiter that is first in line: every holder ahead of it; any
  release grants it. A later semaphore waiter watches the key just ahead of
  it, for deletion or for that key's "granted" mark: a waiter that was
  granted after waiting rewrites its value with the mark, which is what
  moves the next waiter to the front. Each release so wakes O(1) waiters.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass


class Mode(enum.IntEnum):
    EXCLUSIVE = 0
    SHARED = 1


@dataclass(frozen=True)
class LockKey:
    key: bytes
    create_revision: int
    mod_revision: int
    lease: int
    mode: Mode
    limit: int
    granted_mark: bool

    @property
    def exclusive_class(self) -> bool:
        return self.mode == Mode.EXCLUSIVE


def encode_value(mode: Mode, limit: int, granted: bool = False) -> bytes:
    if mode == Mode.EXCLUSIVE and limit <= 1 and not granted:
        return b""  # exactly what etcd's lock recipe writes
    d: dict[str, object] = {"mode": mode.name.lower(), "limit": limit}
    if granted:
        d["granted"] = True
    return json.dumps(d, separators=(",", ":"), sort_keys=True).encode()


def decode(
    key: bytes, value: bytes, create_revision: int, mod_revision: int, lease: int
) -> LockKey:
    mode, limit, granted = Mode.EXCLUSIVE, 1, False
    if value:
        try:
            d = json.loads(value)
            mode = Mode.SHARED if d.get("mode") == "shared" else Mode.EXCLUSIVE
            limit = max(1, int(d.get("limit", 1)))
            granted = bool(d.get("granted", False))
        except (ValueError, TypeError, AttributeError):
            pass  # someone else's key with a value we do not know: treat as exclusive
    return LockKey(key, create_revision, mod_revision, lease, mode, limit, granted)


def is_granted(k: LockKey, ahead: list[LockKey]) -> bool:
    if k.mode == Mode.SHARED:
        return not any(a.exclusive_class for a in ahead)
    if k.limit <= 1:
        return not ahead
    return len(ahead) < k.limit and not _mixed(ahead)


@dataclass(frozen=True)
class Wait:
    """What to watch: these keys' deletion, and (if `marks`) their being rewritten."""

    keys: tuple[bytes, ...]
    marks: bool


def what_to_watch(k: LockKey, ahead: list[LockKey]) -> Wait:
    """For a key that is not granted: the few keys whose change may grant it."""
    if k.mode == Mode.SHARED:
        blockers = [a for a in ahead if a.exclusive_class]
        return Wait((blockers[-1].key,), marks=False)
    if k.limit <= 1:
        return Wait((ahead[-1].key,), marks=False)
    if _mixed(ahead) or len(ahead) > k.limit:
        # Behind other waiters: the one just ahead moving to the front (its
        # mark) or leaving is what can change our place.
        return Wait((ahead[-1].key,), marks=True)
    # First in line, exactly `limit` holders ahead: any release grants us.
    return Wait(tuple(a.key for a in ahead), marks=False)


def _mixed(ahead: list[LockKey]) -> bool:
    """Keys ahead that a semaphore waiter cannot share with (exclusive or shared ones)."""
    return any(a.mode == Mode.SHARED or a.limit <= 1 for a in ahead)


def holders_and_waiters(keys: list[LockKey]) -> tuple[list[LockKey], list[LockKey]]:
    """Split a lock's keys (in create-revision order) into holders and waiters."""
    holders: list[LockKey] = []
    waiters: list[LockKey] = []
    for i, k in enumerate(keys):
        (holders if is_granted(k, keys[:i]) else waiters).append(k)
    return holders, waiters

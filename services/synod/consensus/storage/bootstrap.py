"""The configuration a member started from, kept so that restarts agree with it.

Before a member's first snapshot, the voters at log index 0 are implicit: the initial
members of a new cluster, or nobody for a member that joined an existing one (it learns
the configuration from the leader's log). The flags only describe this on the very
first start: a member restarted later with ``--initial-cluster-state existing`` (the
documented way to restart pods) must not forget that it bootstrapped a new cluster, or
no member would count any vote and the cluster would never elect a leader.

File ``<data-dir>/bootstrap_voters``: one lowercase hex member id per line (none for a
joiner), written once, atomically, before the member's first WAL record.
"""

from __future__ import annotations

import os

from .errors import StorageError
from .wal import fsync_dir

FILE = "bootstrap_voters"


def read_bootstrap_voters(data_dir: str) -> frozenset[int] | None:
    """The voters this member bootstrapped with; None if it has no record of them (a new
    data dir, or one created before the file existed)."""
    path = os.path.join(data_dir, FILE)
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    voters: set[int] = set()
    offset = 0
    for line in text.splitlines(keepends=True):
        word = line.strip()
        if word:
            try:
                voters.add(int(word, 16))
            except ValueError:
                raise StorageError(f"{path}: not a hex member id at offset {offset}") from None
        offset += len(line)
    return frozenset(voters)


def write_bootstrap_voters(data_dir: str, voters: frozenset[int]) -> None:
    path = os.path.join(data_dir, FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write("".join(f"{v:x}\n" for v in sorted(voters)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(data_dir)

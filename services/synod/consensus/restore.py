"""`synod snapshot restore`: seed a new member's data directory from a backup file.

Every member of the new cluster is restored from the same backup with its own
--name; the backup's keys, history and leases are kept, its membership is
replaced by --initial-cluster (as `etcdctl snapshot restore` does).
"""

from __future__ import annotations

import argparse
import os
import sys

from synod.consensus import backup
from synod.consensus import config as member_config
from synod.consensus.raft import ConfState, HardState, Ready, Snapshot, SnapshotMeta
from synod.consensus.state import ConsensusState, MemberInfo
from synod.consensus.storage import MemberStorage


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["restore"], help="what to do with the backup")
    p.add_argument("file", help="a backup written by `etcdctl snapshot save` against Synod")
    for flag in (
        "--name",
        "--data-dir",
        "--initial-cluster",
        "--initial-advertise-peer-urls",
        "--initial-cluster-token",
    ):
        p.add_argument(flag, help=f"as for `synod consensus` [env {member_config.env_name(flag)}]")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = member_config.from_args(args, serving=False)  # https:// peer URLs need no certs
        restore(args.file, cfg)
    except (member_config.ConfigError, backup.BackupFormatError, OSError) as e:
        sys.stderr.write(f"synod snapshot restore: {e}\n")
        return 2
    print(f"restored {args.file} into {cfg.data_dir} as member {cfg.name} ({cfg.id:x})")
    return 0


def restore(path: str, cfg: member_config.MemberConfig) -> None:
    if os.path.exists(cfg.data_dir) and os.listdir(cfg.data_dir):
        raise OSError(f"--data-dir {cfg.data_dir} is not empty; restore needs a fresh directory")
    with open(path, "rb") as f:
        state_bytes, index, term = backup.decode(f.read())
    ids = cfg.member_ids()
    members = {mid: MemberInfo(mid, name, cfg.initial_cluster[name]) for name, mid in ids.items()}
    state = ConsensusState({})
    state.restore(Snapshot(SnapshotMeta(index, term), state_bytes))
    state.members = members
    conf = ConfState(frozenset(members))
    snap = Snapshot(SnapshotMeta(index, term, conf), state.snapshot_data())
    os.makedirs(cfg.data_dir, exist_ok=True)
    storage, _ = MemberStorage.open(cfg.data_dir)
    try:
        storage.persist_ready(Ready(snapshot=snap, hard_state=HardState(term, 0, index), sync=True))
    finally:
        storage.close()
    cluster = member_config.cluster_id(list(ids.values()))
    with open(os.path.join(cfg.data_dir, "cluster_id"), "w") as f:
        f.write(f"{cluster:x}\n")
        f.flush()
        os.fsync(f.fileno())

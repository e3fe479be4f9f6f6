"""Synod's Raft core: a pure, deterministic Raft state machine.

Public face:
    RawNode   — drive a member: tick/step/propose/read_index, then ready()/advance()
    Config    — the member's id, timing, limits and seeded randomness
    messages  — the frozen dataclasses that go in and out (Message, Entry, Ready, ...)
    ConfChange, ConfChangeType — single-server membership changes

Nothing in this package reads a clock, a socket or a disk.
"""

from .confchange import ConfChange, ConfChangeError, ConfChangeType
from .log import RaftSafetyError
from .messages import (
    NONE,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)
from .raft import Config, ProposalDropped
from .rawnode import RawNode

__all__ = [
    "NONE",
    "Config",
    "ConfChange",
    "ConfChangeError",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "Message",
    "MessageType",
    "ProposalDropped",
    "RaftSafetyError",
    "RawNode",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
]

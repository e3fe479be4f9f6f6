"""The values the Raft core takes in and hands out.

Everything here is a frozen dataclass: the core never mutates a value once it
has left its hands, and the caller may keep references to them safely.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

#: Node ids are positive integers; 0 means "nobody" (no vote, no leader known).
NONE = 0


class EntryType(enum.IntEnum):
    NORMAL = 0
    #: data is an encoded ConfChange (see confchange.py); the configuration it
    #: carries takes effect as soon as the entry is appended (thesis §4.1).
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class ConfState:
    """A cluster configuration: who votes and who only listens."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    def members(self) -> frozenset[int]:
        return self.voters | self.learners


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application's state as of `meta.index`. `data` is opaque to the core."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""


class MessageType(enum.IntEnum):
    APPEND = 1
    APPEND_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9
    TIMEOUT_NOW = 10
    #: A follower forwarding client proposals to the leader (entries carry data only).
    PROPOSE = 11
    #: A follower asking the leader for a read index; `context` identifies the request.
    READ_INDEX = 12
    READ_INDEX_RESP = 13


@dataclass(frozen=True, slots=True)
class Message:
    """One message between two members. Fields unused by a type keep their defaults.

    - APPEND: `index`/`log_term` name the entry before `entries`; `commit` is the
      leader's commit index.
    - APPEND_RESP: `index` is the last index the follower now matches (or, with
      `reject`, the rejected `index`); `reject_hint`/`hint_term` point the leader at
      the largest index whose term is <= `hint_term`, so it can skip whole terms.
    - VOTE / PRE_VOTE: `index`/`log_term` describe the candidate's last entry;
      `transfer` marks a campaign started by TIMEOUT_NOW, which voters honour
      even while they still hear from a leader.
    - HEARTBEAT / HEARTBEAT_RESP: `read_round` is the leader's read-round
      number, echoed back, so that one round confirms every ReadIndex request
      issued before it.
    - READ_INDEX / READ_INDEX_RESP: `context` is the requester's opaque id, `index`
      the read index granted.
    - APPEND with `no_ack`: no entries, only a new `commit`, for a follower the
      leader knows to match at `index`; accepting it needs no APPEND_RESP.
    """

    type: MessageType
    to: int
    sender: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    hint_term: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""
    transfer: bool = False
    read_round: int = 0
    no_ack: bool = False


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: serve the read once the state machine has applied `index`."""

    index: int
    context: bytes


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state a caller may want to show or react to; never persisted."""

    leader: int
    role: Role
    term: int


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the caller, handled in this order:

    1. persist `snapshot` (if any), then `entries` (truncating any stored entries
       from `entries[0].index` on), then `hard_state` (if any) — with one fsync;
    2. send `messages` (they may depend on what step 1 wrote);

    Those of `messages` that `split_messages` puts first depend on nothing step 1
    writes and may be sent before it, in parallel with the disk write: a leader's
    appends and heartbeats (thesis §10.2.1: the leader counts itself towards a
    commit only once its own write is done, see `RawNode.advance`), and requests
    forwarded to the leader.
    3. install `snapshot` into the state machine, then apply `committed_entries`;
       serve `read_states` once the applied index reaches theirs;
    4. call `RawNode.advance(ready)`.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    messages: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    #: step 1 must reach the disk (fsync) before step 2. False when the only
    #: change is the commit index: losing that in a crash loses nothing, since
    #: the leader tells a member its commit index again (etcd does the same).
    sync: bool = False
    #: the term or the vote changed in this Ready: until step 1 has made them
    #: durable, nothing that carries them may leave (see `split_messages`)
    term_changed: bool = False

    def split_messages(self) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
        """(may go before step 1, must wait for step 1), `messages` in their order.

        Responses (append, vote, heartbeat acknowledgements) promise that
        something is on disk, and everything waits while a new term or vote is
        not: a message carrying an unrecorded term could, after a crash, let
        this member lead or vote twice in one term.
        """
        if self.term_changed or not self.messages:
            return (), self.messages
        early = tuple(m for m in self.messages if m.type in _INDEPENDENT)
        if not early:
            return (), self.messages
        return early, tuple(m for m in self.messages if m.type not in _INDEPENDENT)

    def must_sync(self) -> bool:
        """Whether step 1 has anything to write (durably if `sync`)."""
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None

    def empty(self) -> bool:
        return not (
            self.soft_state
            or self.must_sync()
            or self.messages
            or self.committed_entries
            or self.read_states
        )


#: message types whose sending depends on nothing a Ready persists (see Ready)
_INDEPENDENT = frozenset(
    {
        MessageType.APPEND,
        MessageType.HEARTBEAT,
        MessageType.PROPOSE,
        MessageType.READ_INDEX,
        MessageType.READ_INDEX_RESP,
    }
)

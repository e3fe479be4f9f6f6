"""Membership changes: one server at a time, in effect as soon as appended.

We chose single-server changes (Ongaro's thesis §4.1) over joint consensus:
adding or removing one voter at a time means any two consecutive
configurations share a majority, so a configuration entry can take effect the
moment a member appends it, committed or not. Three rules keep that safe:

1. A member always uses the newest configuration in its log (or its snapshot),
   and falls back to the previous one if that entry is truncated away.
2. A leader accepts a new change only when the previous one is committed.
3. A leader accepts a change only after it has committed an entry of its own
   term (the fix for the single-server bug Ongaro described in 2015).

A configuration entry carries the whole resulting configuration, so rule 1
needs no replay: the newest entry *is* the configuration.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from .messages import ConfState


class ConfChangeType(enum.IntEnum):
    ADD_VOTER = 0  # also promotes an existing learner
    ADD_LEARNER = 1
    REMOVE = 2


class ConfChangeError(ValueError):
    """The change makes no sense against the current configuration."""


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: int
    #: opaque to the core; the service puts the member's peer URLs here
    context: bytes = b""


def apply_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after `cc`, or ConfChangeError if it is not a real change."""
    node = cc.node_id
    if node <= 0:
        raise ConfChangeError(f"node id must be positive, got {node}")
    if cc.type == ConfChangeType.ADD_VOTER:
        if node in conf.voters:
            raise ConfChangeError(f"node {node:x} is already a voter")
        return ConfState(conf.voters | {node}, conf.learners - {node})
    if cc.type == ConfChangeType.ADD_LEARNER:
        if node in conf.voters:
            raise ConfChangeError(f"node {node:x} is a voter; demoting is not supported")
        if node in conf.learners:
            raise ConfChangeError(f"node {node:x} is already a learner")
        return ConfState(conf.voters, conf.learners | {node})
    if cc.type == ConfChangeType.REMOVE:
        if node not in conf.members():
            raise ConfChangeError(f"node {node:x} is not a member")
        if conf.voters == {node}:
            raise ConfChangeError("cannot remove the last voter")
        return ConfState(conf.voters - {node}, conf.learners - {node})
    raise ConfChangeError(f"unknown change type {cc.type}")


def encode(cc: ConfChange, result: ConfState) -> bytes:
    """Entry data for a configuration entry: the change and the configuration it yields."""
    return json.dumps(
        {
            "type": int(cc.type),
            "node": cc.node_id,
            "context": cc.context.hex(),
            "voters": sorted(result.voters),
            "learners": sorted(result.learners),
        },
        separators=(",", ":"),
    ).encode()


def decode(data: bytes) -> tuple[ConfChange, ConfState]:
    d = json.loads(data)
    cc = ConfChange(ConfChangeType(d["type"]), int(d["node"]), bytes.fromhex(d["context"]))
    return cc, ConfState(frozenset(d["voters"]), frozenset(d["learners"]))

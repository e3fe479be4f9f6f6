"""The nemesis: a fault schedule drawn up front from the seed, then carried out.

``make_schedule(seed, ...)`` draws every choice with ``random.Random(seed)``:
which fault, when, for how long, which member (by position) and how the
members split. Only what cannot be known in advance is resolved when the fault
starts: *which member leads* at that moment (the ``leader`` faults). Same seed,
same schedule; the runner prints it.

One fault at a time: each starts, holds for ``hold`` seconds, and is healed
(restart, SIGCONT, partition removed, member re-added) before the next, so a
3-member cluster always gets its quorum back. Every action is a ``FaultEvent``
on the history's monotonic clock.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from synod.check.cluster import ChaosCluster, Member, Replica
from synod.check.history import FaultEvent, History

log = structlog.get_logger("synod.check.nemesis")

#: every fault kind, and the groups ``--faults`` accepts
FAULT_KINDS = (
    "kill-leader",
    "kill-member",
    "pause-leader",
    "pause-member",
    "partition-leader",
    "partition-follower",
    "partition-halves",
    "partition-bridge",
    "member-change",
    "kill-lock",
    "kill-router",
)
REPLICA_KINDS = ("kill-lock", "kill-router")
FAULT_GROUPS = {
    "all": FAULT_KINDS,
    "kill": ("kill-leader", "kill-member"),
    "pause": ("pause-leader", "pause-member"),
    "partition": ("partition-leader", "partition-follower", "partition-halves", "partition-bridge"),
    "membership": ("member-change",),
    "replicas": ("kill-lock", "kill-router"),
}


def parse_faults(spec: str) -> list[str]:
    """``kill,partition-leader,...`` (kinds or groups) -> kinds, in FAULT_KINDS order."""
    chosen: set[str] = set()
    for word in (w.strip() for w in spec.split(",")):
        if not word or word == "none":
            continue
        if word in FAULT_GROUPS:
            chosen.update(FAULT_GROUPS[word])
        elif word in FAULT_KINDS:
            chosen.add(word)
        else:
            raise ValueError(
                f"unknown fault {word!r}: use {', '.join([*FAULT_GROUPS, *FAULT_KINDS])}"
            )
    return [k for k in FAULT_KINDS if k in chosen]


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the workloads start
    kind: str
    hold: float  # seconds until it is healed
    #: member positions drawn from the seed (a shuffled order), or a replica index
    order: tuple[int, ...] = ()

    def describe(self, names: list[str]) -> str:
        if self.kind in REPLICA_KINDS:
            who = f"replica #{self.order[0]} (modulo the replicas)"
        else:
            who = ",".join(names[i] for i in self.order)
        return f"t+{self.at:6.2f}s  {self.kind:<18} hold {self.hold:4.2f}s  {who}"


def make_schedule(
    seed: int,
    duration: float,
    kinds: list[str],
    members: int,
    *,
    gap: tuple[float, float] = (1.0, 2.5),
    hold: tuple[float, float] = (1.5, 3.0),
    warmup: float = 2.0,
) -> list[Fault]:
    """Faults from ``warmup`` on, each healed before ``duration`` ends."""
    rng = random.Random(seed)
    out: list[Fault] = []
    t = warmup
    if not kinds:
        return out
    while True:
        kind = rng.choice(kinds)
        h = round(rng.uniform(*hold), 2)
        if t + h > duration:
            break
        order = list(range(members))
        rng.shuffle(order)
        if kind in REPLICA_KINDS:
            order = [rng.randrange(8)]  # replica index, modulo how many there are
        out.append(Fault(round(t, 2), kind, h, tuple(order)))
        t += h + rng.uniform(*gap)
    return out


@dataclass
class Nemesis:
    cluster: ChaosCluster
    history: History
    schedule: list[Fault]
    stop: threading.Event = field(default_factory=threading.Event)

    def record(self, kind: str, targets: list[str], **detail: Any) -> None:
        self.history.faults.append(FaultEvent(time.monotonic(), kind, tuple(targets), dict(detail)))
        log.info("fault", kind=kind, targets=targets, **detail)

    def run(self, start: float) -> None:
        """Carry out the schedule (in a thread) until it ends or ``stop`` is set."""
        for fault in self.schedule:
            if self.stop.wait(max(0.0, start + fault.at - time.monotonic())):
                return
            try:
                self._apply(fault)
            except Exception as e:  # noqa: BLE001 - a failed fault is logged, not fatal
                log.warning("fault_failed", kind=fault.kind, error=repr(e))
                self.record("fault-failed", [], fault=fault.kind, error=repr(e))
                self.heal_all()

    # --- one fault ------------------------------------------------------------------

    def _pick(self, fault: Fault, leader: bool) -> Member:
        live = [m for m in self.cluster.members if not m.removed]
        if leader:
            found = self.cluster.find_leader()
            deadline = time.monotonic() + 5
            while found is None and time.monotonic() < deadline and not self.stop.is_set():
                time.sleep(0.1)
                found = self.cluster.find_leader()
            if found is not None:
                return found
        return live[fault.order[0] % len(live)]

    def _follower(self, fault: Fault) -> Member:
        leader = self.cluster.find_leader()
        followers = [m for m in self.cluster.members if m is not leader and not m.removed]
        return followers[fault.order[0] % len(followers)]

    def _hold(self, fault: Fault) -> None:
        self.stop.wait(fault.hold)

    def _apply(self, fault: Fault) -> None:
        c = self.cluster
        kind = fault.kind
        names = [m.name for m in c.members]
        if kind in ("kill-leader", "kill-member"):
            m = self._pick(fault, leader=kind == "kill-leader")
            m.kill()
            self.record("kill", [m.name], fault=kind)
            self._hold(fault)
            self._restart(m)
        elif kind in ("pause-leader", "pause-member"):
            m = self._pick(fault, leader=kind == "pause-leader")
            m.signal(signal.SIGSTOP)
            m.paused = True
            self.record("pause", [m.name], fault=kind)
            self._hold(fault)
            m.signal(signal.SIGCONT)
            m.paused = False
            self.record("resume", [m.name], fault=kind)
        elif kind.startswith("partition-"):
            groups = self._groups(fault, names)
            c.net.partition(groups)
            self.record(
                "partition",
                sorted(set().union(*groups)),
                fault=kind,
                groups=[sorted(g) for g in groups],
            )
            self._hold(fault)
            c.net.heal()
            self.record("heal", [], fault=kind)
        elif kind == "member-change":
            m = self._follower(fault)
            c.remove_member(m)
            self.record("member-remove", [m.name], fault=kind)
            self._hold(fault)
            c.add_member(m)
            self.record("member-add", [m.name], fault=kind, peer_url=m.peer_url)
        elif kind in ("kill-lock", "kill-router"):
            pool: list[Replica] = c.locks if kind == "kill-lock" else c.routers
            if not pool:
                return
            r = pool[fault.order[0] % len(pool)]
            r.kill()
            self.record("kill", [r.name], fault=kind)
            self._hold(fault)
            c.start_replica(r)
            self.record("restart", [r.name], fault=kind)

    def _groups(self, fault: Fault, names: list[str]) -> list[set[str]]:
        live = [n for n in names if not self.cluster.member(n).removed]
        if fault.kind == "partition-leader":
            one = self._pick(fault, leader=True).name
            return [{one}, set(live) - {one}]
        if fault.kind == "partition-follower":
            one = self._follower(fault).name
            return [{one}, set(live) - {one}]
        ordered = [names[i] for i in fault.order if names[i] in live]
        if fault.kind == "partition-halves":
            minority = set(ordered[: len(ordered) // 2])
            return [minority, set(ordered) - minority]
        # partition-bridge: two halves that cannot see each other, one member seeing both
        mid = len(ordered) // 2
        bridge = ordered[mid]
        return [set(ordered[: mid + 1]), set(ordered[mid:]) | {bridge}]

    def _restart(self, m: Member) -> None:
        self.cluster.start_member(m, state="existing" if m.generation else "new")
        self.record("restart", [m.name], fault="restart")

    # --- the end -------------------------------------------------------------------

    def heal_all(self) -> None:
        """Undo everything: partitions, pauses, dead or removed members and replicas."""
        c = self.cluster
        c.net.heal()
        for m in c.members:
            if m.paused:
                m.signal(signal.SIGCONT)
                m.paused = False
        try:
            c.reconcile()
        except RuntimeError as e:  # no member list to be had: restart what is dead anyway
            log.warning("reconcile_failed", error=str(e))
        for m in c.members:
            if m.removed:
                c.add_member(m)
            elif not m.alive():
                self._restart(m)
        for r in [*c.locks, *c.routers]:
            if not r.alive():
                c.start_replica(r)
        self.record("heal-all", [])

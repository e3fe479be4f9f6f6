"""The watch checker: every watcher sees the same events, in revision order,
without gaps or duplicates, over the revisions it watched.

A watcher records one :class:`WatchLog` per watch stream it opens. A watcher
that loses its stream (its member was killed) and resumes from its last
revision + 1 records a new ``WatchLog`` (same ``watcher`` name) starting there,
so a gap across the restart is a gap in the new stream's range.

What is checked, per stream, against the union of what every stream received
(the *reference*: (revision, key) -> event type):

- **order**: revisions never go down within a stream;
- **duplicates**: no (revision, key) twice in a stream;
- **too early**: no event below the stream's ``start_revision``;
- **conflicts**: every stream that has (revision, key) has the same type;
- **gaps**: every reference event on a key the stream watches, with a revision
  from its ``start_revision`` through its ``end_revision``, is in the stream.
  So watchers that start later or stop earlier are compared on the overlap.

The reference is only as complete as the watchers together: an event that no
watcher received is not noticed here (the register and set checkers cover
lost writes).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from synod.check.verdict import CheckResult

EventType = Literal["put", "delete"]


@dataclass(frozen=True)
class WatchEvent:
    """One event a watcher received: the revision that made it (the key's
    ``mod_revision``; for a delete, the deleting revision), the key, the type."""

    revision: int
    key: str
    type: EventType


@dataclass
class WatchLog:
    """What one watch stream received, in the order received.

    ``start_revision`` is the revision the watch asked to start from;
    ``prefix`` the keys watched (every key starting with it; ``""``: all keys
    of the workload); ``end_revision`` the revision through which the stream is
    known to have delivered everything (e.g. a progress notification's header
    revision, or the revision the final read saw once the stream caught up),
    or None to use the last event's revision (a stream that stops earlier is
    then held to nothing after its last event).
    """

    watcher: str
    start_revision: int
    events: list[WatchEvent] = field(default_factory=list)
    prefix: str = ""
    end_revision: int | None = None

    def covers(self, revision: int, key: str) -> bool:
        end = self.end_revision
        if end is None:
            end = self.events[-1].revision if self.events else self.start_revision - 1
        return self.start_revision <= revision <= end and key.startswith(self.prefix)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> WatchLog:
        record = dict(record)
        record["events"] = [WatchEvent(**e) for e in record.get("events", ())]
        return cls(**record)


_SHOWN = 5  # events listed per problem line


def check_watches(logs: list[WatchLog]) -> CheckResult:
    counts = dict.fromkeys(
        (
            "watchers",
            "streams",
            "events",
            "revisions",
            "gaps",
            "duplicates",
            "reordered",
            "too_early",
            "conflicts",
        ),
        0,
    )
    counts["watchers"] = len({log.watcher for log in logs})
    counts["streams"] = len(logs)
    problems: list[str] = []

    reference: dict[tuple[int, str], EventType] = {}
    seen_by: dict[tuple[int, str], str] = {}  # who first received each event
    for log in logs:
        counts["events"] += len(log.events)
        for e in log.events:
            at = (e.revision, e.key)
            known = reference.setdefault(at, e.type)
            seen_by.setdefault(at, log.watcher)
            if known != e.type:
                counts["conflicts"] += 1
                problems.append(
                    f"watch: {log.watcher} got {e.type} of {e.key!r} at revision {e.revision}, "
                    f"{seen_by[at]} got {known}"
                )
    counts["revisions"] = len({rev for rev, _ in reference})

    for n, log in enumerate(logs):
        name = f"{log.watcher} (stream {n}, from revision {log.start_revision})"
        previous = None
        for e in log.events:
            if previous is not None and e.revision < previous.revision:
                counts["reordered"] += 1
                problems.append(
                    f"watch: {name} got revision {e.revision} ({e.key!r}) after {previous.revision}"
                )
            previous = e
        repeats = [
            at for at, k in Counter((e.revision, e.key) for e in log.events).items() if k > 1
        ]
        if repeats:
            counts["duplicates"] += len(repeats)
            problems.append(f"watch: {name} got events twice: {_events(sorted(repeats))}")
        early = [(e.revision, e.key) for e in log.events if e.revision < log.start_revision]
        if early:
            counts["too_early"] += len(early)
            problems.append(f"watch: {name} got events before its start: {_events(early)}")
        got = {(e.revision, e.key) for e in log.events}
        missing = sorted(at for at in reference if at not in got and log.covers(*at))
        if missing:
            counts["gaps"] += len(missing)
            problems.append(
                f"watch: {name} missed {len(missing)} events others got: {_events(missing)}"
            )
    return CheckResult("watch", "invalid" if problems else "valid", counts, problems)


def _events(at: list[tuple[int, str]]) -> str:
    shown = ", ".join(f"{key!r}@{rev}" for rev, key in at[:_SHOWN])
    return shown + (f" and {len(at) - _SHOWN} more" if len(at) > _SHOWN else "")

"""The history a checking run records, and what the checkers read.

Rules (these hold for every history, and the checkers rely on them):

- Every operation is recorded once, when it completes, with the monotonic time
  (``time.monotonic()`` of the recording process, in seconds) at which the client
  *invoked* it and at which it *completed*.
- ``outcome`` says what the client knows:
  ``ok``   — it took effect, and ``result`` is what it returned;
  ``fail`` — it certainly did not take effect (e.g. a CAS whose compare failed,
             or an error that proves the request was never applied);
  ``info`` — unknown (a timeout, a lost connection, a leader change in flight):
             it may take effect at any time after ``invoke``, or never. Its
             ``complete`` is the time the client gave up, which does *not* bound
             when it may take effect.
- A client (``process``) has at most one operation in flight; after an ``info``
  outcome the process is retired and the workload continues with a fresh one,
  as Jepsen does, so a process's operations never overlap.
- Faults injected by the nemesis are recorded as ``FaultEvent``s on the same clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Outcome = Literal["ok", "fail", "info"]


@dataclass(frozen=True)
class Op:
    """One client operation.

    ``f`` names the operation within its workload; ``value`` is its argument and
    ``result`` what it returned (``None`` unless ``outcome == "ok"``):

    ===========  =====================  ==========================  ====================
    workload     f                      value                       result
    ===========  =====================  ==========================  ====================
    register     ``read``               ``None``                    the value read, or
                                                                    ``None`` if absent
    register     ``write``              the value written           ``None``
    register     ``cas``                ``[expected, new]``         ``None`` (fail if
                                                                    the compare failed)
    set          ``add``                the element                 ``None``
    set          ``read``               ``None``                    sorted list of all
                                                                    elements
    mutex        ``acquire``            ``None``                    the fencing token
    mutex        ``write``              the fencing token used      ``None`` (fail if the
                                                                    resource refused it)
    mutex        ``release``            the fencing token           ``None``
    lease        ``grant``              the TTL asked for (s)       ``[lease id, granted
                                                                    TTL]``
    lease        ``put``                the lease id attached       ``None``
    lease        ``keepalive``          the lease id                the TTL answered (s);
                                                                    0: lease not renewed
                                                                    (expired or going)
    lease        ``revoke``             the lease id                ``None``
    lease        ``read``               ``None``                    the lease id the key
                                                                    carries, or ``None``
                                                                    if absent
    ===========  =====================  ==========================  ====================

    Register values are ints; ``key`` is the register's (or set's, mutex's) name.
    A lease's operations all carry that lease's own key (put once, with it).
    """

    process: int
    workload: str
    f: str
    key: str
    value: Any
    invoke: float
    complete: float
    outcome: Outcome
    result: Any = None
    error: str = ""  # the status or exception text for fail/info, for the report


@dataclass(frozen=True)
class FaultEvent:
    """One nemesis action: ``kind`` (e.g. ``kill``, ``pause``, ``partition``,
    ``heal``), its targets (member names) and free-form details, at ``at``."""

    at: float
    kind: str
    targets: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class History:
    """Everything one run recorded, in completion order."""

    seed: int
    ops: list[Op] = field(default_factory=list)
    faults: list[FaultEvent] = field(default_factory=list)

    def by_key(self, workload: str) -> dict[str, list[Op]]:
        """The operations of ``workload`` grouped per key, in completion order."""
        grouped: dict[str, list[Op]] = {}
        for op in self.ops:
            if op.workload == workload:
                grouped.setdefault(op.key, []).append(op)
        return grouped

    def of(self, workload: str) -> Iterator[Op]:
        return (op for op in self.ops if op.workload == workload)

    # --- persistence: one JSON object per line, so a crashed run keeps what it had

    def write_jsonl(self, path: Path) -> None:
        with path.open("w", encoding="utf-8") as out:
            out.write(json.dumps({"type": "run", "seed": self.seed}) + "\n")
            for op in self.ops:
                out.write(json.dumps({"type": "op", **asdict(op)}) + "\n")
            for fault in self.faults:
                out.write(json.dumps({"type": "fault", **asdict(fault)}) + "\n")

    @classmethod
    def read_jsonl(cls, path: Path) -> History:
        return cls.from_records(
            json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line
        )

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> History:
        history = cls(seed=0)
        for record in records:
            kind = record.pop("type")
            if kind == "run":
                history.seed = int(record["seed"])
            elif kind == "op":
                history.ops.append(Op(**record))
            elif kind == "fault":
                record["targets"] = tuple(record.get("targets", ()))
                history.faults.append(FaultEvent(**record))
            else:
                raise ValueError(f"unknown history record type {kind!r}")
        return history

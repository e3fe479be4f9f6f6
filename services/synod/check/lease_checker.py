"""The lease checker: leases neither expire early, nor come back, nor outlive their TTL.

Input: the ``lease`` workload's operations (lease_workload.py, vocabulary in
history.py). Every lease has its own key, put once with that lease and never
deleted by anyone (only the lease's revoke or expiry removes it), so all of a
lease's operations share one ``key`` and a read of the key tells whether the
lease still stands.

Time. Every time in the history is the harness's ``time.monotonic()``; the
members run on the same machine (network namespaces share the kernel's
CLOCK_MONOTONIC) and the leader counts TTLs on that same clock
(consensus/leases.py ``LeaseClock``). So harness times and the leader's
deadlines are directly comparable: there is no skew and no rate difference.

Definitions, for a lease L with key k and granted TTL T:

- An **extension** of L is an ``ok`` grant (TTL T) or an ``ok`` keepalive that
  returned a TTL > 0. The leader set L's deadline to ``s + TTL`` at some moment
  ``s`` between the call's invoke and its completion, so the deadline is at
  least ``invoke + TTL``; it is the conservative start (never later than the
  real one). A new leader gives every lease its whole TTL again from its
  promotion (as etcd does), which only moves deadlines later.
- The key is **known put** before a read when the put was ``ok`` and
  completed before the read was invoked.
- A read sees the store at some moment ``r`` between its invoke and completion.
  So ``r <= complete``: a read that *completed* before a deadline was served
  before it. (A read merely *invoked* before the deadline may be served after
  it, and legitimately find the key gone: using invoke there would flag a
  correct system.)

Safety (any outcome of the nemesis, faults or not):

1. **No early expiry.** An ``ok`` read of k that saw it absent, with k known
   put before the read and no revoke of L invoked before the read completed,
   must have completed at or after ``invoke + TTL - eps`` for every extension
   of L. If the extension was invoked before the read completed, the lease
   expired early (e.g. a leader whose clock runs fast, or one that forgot a
   keepalive). If it was invoked after, the lease was renewed after its key
   was seen gone: a lease came back from the dead. Both are violations.
   Likewise an ``ok`` keepalive answering TTL 0 (the leader found L expired)
   that *completed* before ``invoke + TTL - eps`` of an extension that had
   completed before it was invoked is an early expiry.
2. **No resurrection.** Once L is known gone at time g (an ``ok`` revoke
   completed at g, or an ``ok`` read completing at g saw k absent while k was
   known put), no read invoked after g may see k present, and no keepalive
   invoked after g may be answered with a TTL > 0. Our keys are put once, and
   a late (``info``) put cannot apply once its lease is gone, so nothing
   legitimately re-creates k.
3. **Right lease.** A read that sees k present sees it with lease L, and only
   after a put of k was invoked.

``info`` operations: an ``info`` keepalive or grant may have extended the lease
(at any time after its invoke) or not; safety never relies on it (it is not an
extension), and it can only make the lease live longer, which rules 1–3 allow.
An ``info`` revoke may have removed the lease at any time after its invoke, so
reads completing after that invoke are not held to rule 1. A keepalive that
answered TTL 0 is not proof that L is gone: Synod answers 0 as soon as the
leader has *proposed* the revoke, before it applies, and a leader change may
even give L a new life; it only proves "not extended".

``eps`` (default 0.1 s): with one shared monotonic clock and conservative ends
on both sides (extension invoke, read completion) the rules hold with eps = 0;
eps absorbs float rounding and nothing else, and is far below the early
expiries worth catching (a leader that expires leases even 10 % early is off by
200 ms on a 2 s lease). Across machines eps would also have to cover clock rate
drift over one TTL (ppm: microseconds).

Liveness (only once the faults are over: the last fault is a heal, or there
were none). A lease's **last possible extension** ``t`` is the completion of its
grant or of its last keepalive that was ``ok`` with TTL > 0 or ``info`` (the
leader may still have processed an info one up to then). Its key must be gone
for any ``ok`` read invoked after ``max(t, healed) + T + bound``: the lease's
own TTL, counted from the heal at the earliest because a leader elected while
or after healing gives every lease its whole TTL again (etcd does the same),
plus ``bound`` for that election, the leader's expiry tick and committing the
revoke (default 5 s: two election timeouts of the harness's 1 s plus margin).
A lease whose due time no read reached makes the verdict ``unknown``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from synod.check.history import History, Op
from synod.check.liveness import DEFAULT_HEAL_KINDS
from synod.check.verdict import CheckResult, Verdict, combine

WORKLOAD = "lease"
#: see the module docstring: float rounding only, on one shared monotonic clock
DEFAULT_EPS = 0.1
#: seconds past TTL within which a lapsed lease's key is gone once healthy
DEFAULT_BOUND = 5.0


@dataclass
class _Lease:
    key: str
    id: int | None = None
    ttl: int = 0
    grant: Op | None = None
    put: Op | None = None
    puts: list[Op] = field(default_factory=list)
    keepalives: list[Op] = field(default_factory=list)
    revokes: list[Op] = field(default_factory=list)
    reads: list[Op] = field(default_factory=list)

    def extensions(self) -> list[tuple[Op, int]]:
        """(op, TTL) of every ok grant and ok keepalive with TTL > 0."""
        out: list[tuple[Op, int]] = []
        if self.grant is not None and self.grant.outcome == "ok":
            out.append((self.grant, self.ttl))
        out += [(ka, int(ka.result)) for ka in self.keepalives if ka.outcome == "ok" and ka.result]
        return out

    def known_put_before(self, op: Op) -> bool:
        return self.put is not None and self.put.complete < op.invoke

    def revoke_invoked_before(self, t: float) -> bool:
        return any(rv.invoke < t for rv in self.revokes)


def _leases(ops: Iterable[Op]) -> list[_Lease]:
    by_key: dict[str, _Lease] = {}
    for op in ops:
        lease = by_key.setdefault(op.key, _Lease(op.key))
        if op.f == "grant":
            lease.grant = op
            if op.outcome == "ok":
                lease.id, lease.ttl = int(op.result[0]), int(op.result[1])
        elif op.f == "put":
            lease.puts.append(op)
            if op.outcome == "ok" and (lease.put is None or op.complete < lease.put.complete):
                lease.put = op
        elif op.f == "keepalive":
            lease.keepalives.append(op)
        elif op.f == "revoke":
            lease.revokes.append(op)
        elif op.f == "read":
            lease.reads.append(op)
        else:
            raise ValueError(f"lease checker: unknown op {op.f!r} on {op.key}")
    return list(by_key.values())


def _lid(lease: _Lease) -> str:
    return f"{lease.id:x}" if lease.id is not None else "?"


def _safety(lease: _Lease, eps: float) -> list[str]:
    problems: list[str] = []
    lid, key = _lid(lease), lease.key
    exts = lease.extensions()
    ok_reads = [r for r in lease.reads if r.outcome == "ok"]
    # 3. right lease, and never before a put
    for r in ok_reads:
        if r.result is None:
            continue
        if not any(p.invoke < r.complete for p in lease.puts):
            problems.append(
                f"lease {lid} key {key}: read [{r.invoke:.3f}, {r.complete:.3f}] saw the key "
                f"(lease {int(r.result):x}) before any put of it was invoked"
            )
        elif lease.id is not None and int(r.result) != lease.id:
            problems.append(
                f"lease {lid} key {key}: read [{r.invoke:.3f}, {r.complete:.3f}] saw the key "
                f"attached to lease {int(r.result):x}"
            )
    # 1. no early expiry: absent reads against every extension
    for r in ok_reads:
        if r.result is not None or not lease.known_put_before(r):
            continue
        if lease.revoke_invoked_before(r.complete):
            continue
        for ext, ttl in exts:
            alive_until = ext.invoke + ttl
            if r.complete >= alive_until - eps:
                continue
            if ext.invoke < r.complete:
                problems.append(
                    f"lease {lid} key {key}: expired early: {ext.f} ok invoked at "
                    f"{ext.invoke:.3f} (TTL {ttl} s) keeps it until at least "
                    f"{alive_until:.3f}, but a read completed at {r.complete:.3f} "
                    f"(invoked {r.invoke:.3f}) found the key gone, "
                    f"{alive_until - r.complete:.3f} s early (eps {eps} s)"
                )
            else:
                problems.append(
                    f"lease {lid} key {key}: came back: a read completed at {r.complete:.3f} "
                    f"found the key gone, then a keepalive invoked at {ext.invoke:.3f} "
                    f"was answered TTL {ttl}"
                )
            break  # one problem per read is enough
    # 1'. a keepalive answering 0 before an earlier extension's deadline
    for ka in lease.keepalives:
        if ka.outcome != "ok" or ka.result:
            continue
        if lease.revoke_invoked_before(ka.complete):
            continue
        for ext, ttl in exts:
            if ext.complete < ka.invoke and ka.complete < ext.invoke + ttl - eps:
                problems.append(
                    f"lease {lid} key {key}: expired early: {ext.f} ok invoked at "
                    f"{ext.invoke:.3f} (TTL {ttl} s) keeps it until at least "
                    f"{ext.invoke + ttl:.3f}, but a keepalive completed at {ka.complete:.3f} "
                    f"was answered TTL 0"
                )
                break
    # 2. no resurrection
    gone: list[tuple[float, str]] = [
        (rv.complete, f"revoke ok at {rv.complete:.3f}") for rv in lease.revokes
        if rv.outcome == "ok"
    ]  # fmt: skip
    gone += [
        (r.complete, f"read completed at {r.complete:.3f} found the key gone")
        for r in ok_reads
        if r.result is None and lease.known_put_before(r)
    ]
    if gone:
        g, why = min(gone)
        for r in ok_reads:
            if r.result is not None and r.invoke > g:
                problems.append(
                    f"lease {lid} key {key}: resurrected: {why}, then a read invoked at "
                    f"{r.invoke:.3f} saw it (lease {int(r.result):x})"
                )
                break
        for ka in lease.keepalives:
            if ka.outcome == "ok" and ka.result and ka.invoke > g:
                problems.append(
                    f"lease {lid} key {key}: resurrected: {why}, then a keepalive invoked at "
                    f"{ka.invoke:.3f} was answered TTL {ka.result}"
                )
                break
    return problems


def _last_extension(lease: _Lease) -> float:
    assert lease.grant is not None
    t = lease.grant.complete
    for ka in lease.keepalives:
        if ka.outcome == "info" or (ka.outcome == "ok" and ka.result):
            t = max(t, ka.complete)
    return t


def _healed(history: History, heal_kinds: Iterable[str]) -> float | None:
    """When the faults ended (None: the run ended inside one)."""
    if not history.faults:
        return min((op.invoke for op in history.ops), default=0.0)
    last = max(history.faults, key=lambda f: f.at)
    return last.at if last.kind in set(heal_kinds) else None


def check_leases(
    history: History,
    *,
    eps: float = DEFAULT_EPS,
    bound: float = DEFAULT_BOUND,
    heal_kinds: Iterable[str] = DEFAULT_HEAL_KINDS,
) -> CheckResult:
    leases = [lease for lease in _leases(history.of(WORKLOAD)) if lease.id is not None]
    counts: dict[str, int] = {
        "leases": len(leases),
        "keepalives": sum(1 for lease in leases for ka in lease.keepalives if ka.outcome == "ok"),
        "reads": sum(1 for lease in leases for r in lease.reads if r.outcome == "ok"),
        "eps_ms": round(eps * 1000),
        "bound_ms": round(bound * 1000),
    }
    problems: list[str] = []
    verdicts: list[Verdict] = []
    for lease in leases:
        found = _safety(lease, eps)
        problems += found
        verdicts.append("invalid" if found else "valid")

    healed = _healed(history, heal_kinds)
    if healed is None:
        problems.append("lease liveness: the run ended inside a fault; not checked")
        counts["lapsed_checked"] = 0
        return CheckResult("lease", combine([*verdicts, "unknown"]), counts, problems)
    checked = unchecked = 0
    for lease in leases:
        if lease.put is None:
            continue  # the key may never have existed: nothing to see go
        due = max(_last_extension(lease), healed) + lease.ttl + bound
        late = [r for r in lease.reads if r.outcome == "ok" and r.invoke > due]
        if not late:
            unchecked += 1
            continue
        checked += 1
        stuck = next((r for r in late if r.result is not None), None)
        if stuck is not None:
            problems.append(
                f"lease {_lid(lease)} key {lease.key}: never expired: last possible "
                f"extension at {_last_extension(lease):.3f} (faults over at {healed:.3f}), "
                f"TTL {lease.ttl} s + bound {bound} s = due by {due:.3f}, but a read "
                f"invoked at {stuck.invoke:.3f} still saw the key"
            )
            verdicts.append("invalid")
    counts["lapsed_checked"] = checked
    if unchecked:
        problems.append(
            f"lease liveness: {unchecked} lease(s) with no read after their due time "
            "(the run stopped too soon to tell)"
        )
        verdicts.append("unknown")
    return CheckResult("lease", combine(verdicts), counts, problems)

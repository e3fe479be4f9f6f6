"""What a run leaves behind: the summary table and the HTML timeline.

The timeline is one self-contained HTML file (inline SVG, no scripts, no
external assets): a row per client process, each operation a bar from invoke
to complete colored by outcome (green ok, red fail, amber info), and each
fault a translucent band across all rows from its start to its heal.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from synod.check.history import FaultEvent, History

#: fault kinds that start something, and the kinds that end it
_ENDS = {
    "kill": ("restart",),
    "pause": ("resume",),
    "partition": ("heal",),
    "member-remove": ("member-add",),
}
_COLORS = {"ok": "#2e9d4f", "fail": "#d33c3c", "info": "#e6a117"}
_FAULT_COLORS = {
    "kill": "#d33c3c",
    "pause": "#7a5cd6",
    "partition": "#2f7bd6",
    "member-remove": "#1aa3a3",
}


@dataclass
class CheckerLine:
    name: str
    verdict: str  # valid | invalid | unknown | not run
    detail: str = ""
    problems: list[str] = field(default_factory=list)


def outcome_counts(history: History) -> dict[str, Counter[str]]:
    """Per workload: how many ok / fail / info."""
    out: dict[str, Counter[str]] = {}
    for op in history.ops:
        out.setdefault(op.workload, Counter())[op.outcome] += 1
    return out


def summary_text(history: History, checkers: list[CheckerLine], meta: dict[str, Any]) -> str:
    lines = [
        f"synod check  seed={history.seed}  duration={meta.get('duration')}s  "
        f"members={meta.get('members')}  workloads={','.join(meta.get('workloads', []))}",
        f"faults: {meta.get('faults_spec', '')}",
        "",
    ]
    rows: list[tuple[str, ...]] = [("WORKLOAD", "OPS", "OK", "FAIL", "INFO")]
    total: Counter[str] = Counter()
    for workload, counts in sorted(outcome_counts(history).items()):
        rows.append((workload, *_outcome_cells(counts)))
        total.update(counts)
    rows.append(("total", *_outcome_cells(total)))
    lines += _table(rows)
    lines.append("")
    kinds = Counter(f.detail.get("fault", f.kind) for f in history.faults if f.kind not in
                    ("restart", "resume", "heal", "member-add"))  # fmt: skip
    rows = [("FAULT", "COUNT")] + [(k, str(n)) for k, n in sorted(kinds.items())]
    lines += _table(rows)
    lines.append("")
    rows = [("CHECKER", "VERDICT", "DETAIL")]
    rows += [(line.name, line.verdict.upper(), line.detail) for line in checkers]
    lines += _table(rows)
    for c in checkers:
        for p in c.problems[:10]:
            lines.append(f"  {c.name}: {p}")
        if len(c.problems) > 10:
            lines.append(f"  {c.name}: ... {len(c.problems) - 10} more")
    lines.append("")
    verdict = overall(checkers)
    lines.append(f"RESULT: {verdict.upper()}  (seed {history.seed})")
    return "\n".join(lines) + "\n"


def _outcome_cells(c: Counter[str]) -> tuple[str, ...]:
    return (str(sum(c.values())), str(c["ok"]), str(c["fail"]), str(c["info"]))


def overall(checkers: list[CheckerLine]) -> str:
    """Invalid if any checker found a violation; unknown if any could not decide (or
    none ran); else valid. Checkers that had no input ("not run") do not count."""
    verdicts = {c.verdict for c in checkers if c.verdict != "not run"}
    if "invalid" in verdicts:
        return "invalid"
    if "unknown" in verdicts or not verdicts:
        return "unknown"
    return "valid"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


# --- timeline ----------------------------------------------------------------------


def fault_bands(faults: list[FaultEvent], end: float) -> list[tuple[float, float, str, str]]:
    """(start, end, kind, label) for each fault, paired with the event that healed it."""
    bands = []
    open_: list[tuple[FaultEvent, float]] = []
    for f in sorted(faults, key=lambda f: f.at):
        if f.kind in _ENDS or f.kind == "kill":
            open_.append((f, f.at))
            continue
        for i, (start, t0) in enumerate(open_):
            ends = _ENDS.get(start.kind, ())
            if f.kind in ends and (not f.targets or set(f.targets) & set(start.targets)
                                   or f.kind == "heal"):  # fmt: skip
                bands.append((t0, f.at, start.kind, _label(start)))
                del open_[i]
                break
        if f.kind == "heal-all":
            bands += [(t0, f.at, s.kind, _label(s)) for s, t0 in open_]
            open_.clear()
    bands += [(t0, end, s.kind, _label(s)) for s, t0 in open_]
    return bands


def _label(f: FaultEvent) -> str:
    groups = f.detail.get("groups")
    what = " | ".join(",".join(g) for g in groups) if groups else ",".join(f.targets)
    return f"{f.detail.get('fault', f.kind)} {what}"


def timeline_html(history: History, title: str) -> str:
    ops = history.ops
    times = [op.invoke for op in ops] + [op.complete for op in ops] + [f.at for f in history.faults]
    if not times:
        return f"<!doctype html><title>{html.escape(title)}</title><p>empty history</p>"
    t0, t1 = min(times), max(times)
    span = max(t1 - t0, 1e-3)
    processes = sorted({op.process for op in ops})
    row = {p: i for i, p in enumerate(processes)}
    # ~30 px per second (a long run scrolls sideways), at least a screen wide
    width, left, row_h, top = int(min(max(1600, span * 30), 30000)), 70, 12, 30
    height = top + row_h * len(processes) + 20

    def x(t: float) -> float:
        return left + (t - t0) / span * (width - left - 10)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="monospace" font-size="10">'
    ]
    for start, end, kind, label in fault_bands(history.faults, t1):
        color = _FAULT_COLORS.get(kind, "#888")
        parts.append(
            f'<rect x="{x(start):.1f}" y="{top - 12}" width="{max(x(end) - x(start), 1):.1f}" '
            f'height="{height - top}" fill="{color}" fill-opacity="0.15">'
            f"<title>{html.escape(label)}: {start - t0:.2f}s to {end - t0:.2f}s</title></rect>"
        )
        parts.append(
            f'<text x="{x(start) + 2:.1f}" y="{top - 16}" fill="{color}">'
            f"{html.escape(label)}</text>"
        )
    for p in processes:
        y = top + row[p] * row_h
        parts.append(f'<text x="2" y="{y + row_h - 3}">p{p}</text>')
    for op in ops:
        y = top + row[op.process] * row_h
        tip = (
            f"p{op.process} {op.workload} {op.f} {op.key} {op.value!r} -> {op.outcome} "
            f"{op.result!r} {op.error} [{op.invoke - t0:.3f}s, {op.complete - t0:.3f}s]"
        )
        parts.append(
            f'<rect x="{x(op.invoke):.1f}" y="{y + 1}" '
            f'width="{max(x(op.complete) - x(op.invoke), 1.0):.1f}" height="{row_h - 2}" '
            f'fill="{_COLORS[op.outcome]}"><title>{html.escape(tip)}</title></rect>'
        )
    parts.append("</svg>")
    legend = " ".join(
        f'<span style="background:{c};color:white;padding:0 4px">{k}</span>'
        for k, c in [*_COLORS.items(), *_FAULT_COLORS.items()]
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body><h3>{html.escape(title)}</h3><p>{legend} — hover a bar for the "
        f"operation; time runs left to right over {span:.1f}s</p>"
        f"<div style='overflow-x:auto'>{''.join(parts)}</div></body></html>\n"
    )

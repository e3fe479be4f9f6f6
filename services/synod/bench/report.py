"""The outputs: a terminal table (and the same as Markdown), a JSON file, PNG charts."""

from __future__ import annotations

import json
from pathlib import Path

from synod.bench.figures import FIGURES, INFLIGHTS, Figure
from synod.bench.runner import Recorder, Stats

#: points kept per latency distribution in bench.json
SKETCH_POINTS = 2000


def _num(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _cell(s: Stats | None) -> str:
    if s is None or not s.values:
        return "—"
    lo, hi = min(s.values), max(s.values)
    if len(s.values) == 1:
        return _num(s.median)
    return f"{_num(s.median)} [{_num(lo)}–{_num(hi)}]"


def ratio(rec: Recorder, f: Figure) -> float | None:
    a, b = rec.stats.get((f.key, "synod")), rec.stats.get((f.key, "etcd"))
    if f.synod_only or a is None or b is None or not b.median:
        return None
    return a.median / b.median


def rows(rec: Recorder) -> list[list[str]]:
    out = [["figure", "unit", "Synod median [min–max]", "etcd median [min–max]", "Synod/etcd",
            "target", "gen CPU"]]  # fmt: skip
    for f in FIGURES.values():
        a, b = rec.stats.get((f.key, "synod")), rec.stats.get((f.key, "etcd"))
        if a is None and b is None:
            continue
        r = ratio(rec, f)
        verdict = ""
        if r is not None and f.target is not None:
            verdict = f"{f.target_text} {'met' if f.meets(r) else 'MISSED'}"
        elif f.target is not None:
            verdict = f.target_text
        gen = max([*(a.gen_cpu if a else []), *(b.gen_cpu if b else [])], default=0.0)
        out.append([
            f.title, f.unit, _cell(a), "n/a (Synod only)" if f.synod_only else _cell(b),
            f"{r:.2f}×" if r is not None else "", verdict, f"{gen:.2f}" if gen else "",
        ])  # fmt: skip
    return out


def terminal_table(rec: Recorder) -> str:
    rs = rows(rec)
    widths = [max(len(r[i]) for r in rs) for i in range(len(rs[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rs]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rec: Recorder) -> str:
    rs = rows(rec)
    out = ["| " + " | ".join(rs[0]) + " |", "|" + "---|" * len(rs[0])]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rs[1:]]
    return "\n".join(out)


def to_json(rec: Recorder, meta: dict[str, object]) -> dict[str, object]:
    figures = []
    for f in FIGURES.values():
        per = {system: rec.stats[(f.key, system)].as_json()
               for system in ("synod", "etcd") if (f.key, system) in rec.stats}  # fmt: skip
        if not per:
            continue
        r = ratio(rec, f)
        figures.append({
            "key": f.key, "title": f.title, "unit": f.unit,
            "higher_is_better": f.higher_is_better, "synod_only": f.synod_only,
            **per, "ratio_synod_over_etcd": r,
            "target": f.target_text or None, "target_met": f.meets(r) if r is not None else None,
        })  # fmt: skip
    dists = {f"{n}/{system}": quantile_sketch(lat) for (n, system), lat in rec.samples.items()}
    return {**meta, "figures": figures, "failures": rec.failures, "runs": rec.runs,
            "latency_samples_ms": dists}  # fmt: skip


def quantile_sketch(values: list[float], points: int = SKETCH_POINTS) -> list[float]:
    """At most `points` of the sorted values, evenly spaced by rank, in µs resolution.

    Keeps the distribution (every quantile to within 1/points) at a fraction of
    the size: bench.json is committed under docs/.
    """
    s = sorted(values)
    if len(s) > points:
        s = [s[round(i * (len(s) - 1) / (points - 1))] for i in range(points)]
    return [round(v, 3) for v in s]


def write_json(path: Path, doc: dict[str, object]) -> None:
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


COLORS = {"synod": "#1f77b4", "etcd": "#d62728"}


def charts(rec: Recorder, out: Path) -> list[Path]:
    """bench-throughput.png (put ops/s vs in flight), bench-latency.png (latency CDFs)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written = []
    systems = [s for s in ("synod", "etcd") if any(k[1] == s for k in rec.stats)]

    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system in systems:
        xs, med, lo, hi = [], [], [], []
        for n in INFLIGHTS:
            s = rec.stats.get((f"put_{n}", system))
            if s and s.values:
                xs.append(n)
                med.append(s.median)
                lo.append(s.median - min(s.values))
                hi.append(max(s.values) - s.median)
        if xs:
            ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3, label=system,
                        color=COLORS[system])  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(INFLIGHTS), [str(n) for n in INFLIGHTS])
    ax.set_xlabel("requests in flight")
    ax.set_ylabel("put ops/s (median, min–max)")
    ax.set_title("Put throughput vs requests in flight (3 members, fsync on)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    p = out / "bench-throughput.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    panels = [
        ("put_seq", "put, sequential"),
        ("put_64", "put @64 in flight"),
        ("watch_delay", "watch end-to-end delay"),
        ("lock_handoff", "lock handoff, 8 contenders"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (name, title) in zip(axes.flat, panels, strict=True):
        for system in systems:
            lat = sorted(rec.samples.get((name, system), []))
            if lat:
                ys = [(i + 1) / len(lat) for i in range(len(lat))]
                ax.plot(lat, ys, label=system, color=COLORS[system])
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plain)  # 1, 10, 100 rather than 10^0 ...
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(title)
        ax.set_xlabel("ms (log)")
        ax.set_ylabel("fraction ≤ x")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle("Latency distributions (CDF)")
    fig.tight_layout()
    p = out / "bench-latency.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)
    return written

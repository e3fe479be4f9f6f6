"""`synod bench --quick --only synod`: the suite runs end to end and writes sane outputs.

A smoke test of the harness, not of performance: it checks that every figure
is there and is a positive finite number, that the JSON carries the machine
and the load, that both charts are PNGs, that no process of the bench's
stacks outlives it, and that --from-json redraws the same table. Numbers are
never compared with anything.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

from synod.bench.figures import FIGURES


def _cmdlines() -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return out


def test_quick_bench_writes_every_figure_json_and_charts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, "-m", "synod", "bench", "--quick", "--only", "synod", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    data_dir = re.search(r"data in (\S+)", p.stderr)
    assert data_dir, p.stderr[-2000:]
    assert not [c for c in _cmdlines() if data_dir.group(1) in c], "stack processes left running"
    assert not Path(data_dir.group(1)).exists(), "data directory left behind"

    doc = json.loads((out / "bench.json").read_text())
    assert doc["failures"] == [], doc["failures"]
    assert doc["settings"]["systems"] == ["synod"]
    assert doc["machine"]["nproc"] >= 1 and doc["machine"]["python"]
    assert len(doc["loadavg_before"]) == 3 and len(doc["loadavg_after"]) == 3
    got = {f["key"]: f for f in doc["figures"]}
    assert set(got) == set(FIGURES), set(FIGURES) ^ set(got)
    for key, f in got.items():
        assert "etcd" not in f and f["ratio_synod_over_etcd"] is None, key
        s = f["synod"]
        assert s["values"], key
        assert all(math.isfinite(v) and v > 0 for v in s["values"]), (key, s["values"])
        assert s["min"] <= s["median"] <= s["max"], (key, s)
    assert doc["latency_samples_ms"]["put_seq/synod"]
    assert {r["system"] for r in doc["runs"]} == {"synod"}

    for name in ("bench-throughput.png", "bench-latency.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, name
    table = (out / "bench-table.md").read_text()
    assert "put throughput @64 in flight" in table and "Synod only" in table
    assert "put throughput @64 in flight" in p.stdout  # the terminal table

    # The saved JSON redraws the same table (how docs/performance.md is refreshed).
    again = tmp_path / "again"
    r = subprocess.run(
        [sys.executable, "-m", "synod", "bench", "--from-json", str(out / "bench.json"),
         "--out", str(again)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    assert (again / "bench-table.md").read_text() == table
    assert (again / "bench-latency.png").read_bytes()[:4] == b"\x89PNG"

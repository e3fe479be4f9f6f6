"""`synod up`: the whole local suite comes up healthy, and Ctrl-C stops every process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ports import free_base


def children_of(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.add(int(entry.name))
    return out


def test_up_reaches_all_healthy_then_sigint_stops_everything(tmp_path: Path) -> None:
    base = free_base()
    p = subprocess.Popen(
        [sys.executable, "-m", "synod", "up", "--base-port", str(base), "--timeout", "60"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    try:
        assert p.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("Ctrl-C stops everything"):
                break
        out = "\n".join(lines)
        assert "synod up: all healthy" in out, out
        rows = [ln for ln in lines if ln.startswith(("consensus", "lock", "router"))]
        states = [ln.split(None, 3)[3] for ln in rows]
        assert sum(ln.startswith("consensus") for ln in rows) == 3
        assert sum(ln.startswith("lock") for ln in rows) == 2
        assert sum(ln.startswith("router") for ln in rows) == 2
        assert sorted(s.split(",")[0] for s in states[:3]) == ["follower", "follower", "leader"], (
            out
        )
        assert all("healthy" in s and "NOT" not in s for s in states), out
        children = children_of(p.pid)
        assert len(children) == 7
    except BaseException:
        # A failed check must not leave a whole local Synod running behind it.
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
        raise
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=30) == 0
    left = [
        c
        for c in children
        if Path(f"/proc/{c}").exists()
        and "zombie" not in Path(f"/proc/{c}/status").read_text().lower()
    ]
    assert not left, f"processes left behind: {left}"


def test_up_says_clearly_when_ports_are_taken(tmp_path: Path) -> None:
    base = free_base()
    with socket.socket() as s:
        s.bind(("127.0.0.1", base + 6))
        s.listen()
        p = subprocess.run(
            [sys.executable, "-m", "synod", "up", "--base-port", str(base)],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert p.returncode == 2
    assert f"{base + 6}" in p.stderr and "already in use" in p.stderr and "--base-port" in p.stderr

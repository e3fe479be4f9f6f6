"""`synodctl` against a real `synod up` (one per module), run as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import free_base

SYNODCTL = [sys.executable, "-m", "synod.ctl"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The synodctl command line (with endpoints) for a running `synod up`."""
    base = free_base()
    cwd = tmp_path_factory.mktemp("synod-up")
    up = subprocess.Popen(
        [sys.executable, "-m", "synod", "up", "--base-port", str(base), "--timeout", "60"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
    )  # fmt: skip
    assert up.stdout is not None
    lines = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = up.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Ctrl-C stops everything"):
            break
    try:
        assert any("all healthy" in ln for ln in lines), "".join(lines)
        yield [
            *SYNODCTL,
            "--endpoints", ",".join(f"127.0.0.1:{base + d}" for d in (0, 2, 4)),
            "--lock-endpoints", f"127.0.0.1:{base + 6},127.0.0.1:{base + 7}",
            "--router-endpoints", f"127.0.0.1:{base + 8},127.0.0.1:{base + 9}",
        ]  # fmt: skip
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()


def run(ctl: list[str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*ctl, *args], capture_output=True, text=True, timeout=30, env=ENV)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


class Bg:
    """A synodctl running in the background, stdout and stderr going to files."""

    def __init__(self, ctl: list[str], *args: str, tmp: Path) -> None:
        name = uuid.uuid4().hex
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.p = subprocess.Popen([*ctl, *args], stdout=out, stderr=err, env=ENV)

    def interrupt(self) -> str:
        self.p.send_signal(signal.SIGINT)
        assert self.p.wait(timeout=15) == 0, self.err.read_text()
        return self.out.read_text()


def wait_for(path: Path, text: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.05)


def test_status_table_and_json(ctl: list[str]) -> None:
    out = run(ctl, "status").stdout.splitlines()
    assert out[0].split()[:4] == ["SERVICE", "NAME", "ID", "ADDRESS"]
    rows = [ln.split() for ln in out[1:]]
    assert [r[0] for r in rows].count("consensus") == 3
    assert sorted(r[4] for r in rows if r[0] == "consensus") == ["follower", "follower", "leader"]
    assert [r[4] for r in rows if r[0] in ("lock", "router")] == ["healthy"] * 4
    services = json.loads(run(ctl, "-o", "json", "status").stdout)["services"]
    members = [s for s in services if s["service"] == "consensus"]
    assert len(members) == 3 and [m["state"] for m in members].count("leader") == 1
    assert all(m["raft_term"] >= 1 and m["name"] for m in members)
    assert sum(s["service"] == "lock" and s["healthy"] for s in services) == 2
    assert sum(s["service"] == "router" and s["healthy"] for s in services) == 2
    assert len(json.loads(run(ctl, "-o", "json", "members").stdout)["members"]) == 3


def test_put_get_del_round_trip(ctl: list[str]) -> None:
    assert run(ctl, "put", "rt/a", "one").stdout.startswith("OK")
    run(ctl, "put", "rt/b", "two")
    got = json.loads(run(ctl, "-o", "json", "get", "rt/a").stdout)
    assert [(k["key"], k["value"]) for k in got["kvs"]] == [("rt/a", "one")]
    table = run(ctl, "get", "rt/", "--prefix").stdout.splitlines()
    assert [ln.split()[:2] for ln in table[1:]] == [["rt/a", "one"], ["rt/b", "two"]]
    assert json.loads(run(ctl, "-o", "json", "del", "rt/", "--prefix").stdout)["deleted"] == 2
    missing = run(ctl, "get", "rt/a", ok=False)
    assert missing.returncode == 1 and missing.stderr.strip() == "synodctl: key 'rt/a' not found"


def test_errors_are_one_line(ctl: list[str]) -> None:
    p = subprocess.run(
        [*SYNODCTL, "--endpoints", "127.0.0.1:1", "get", "x"], capture_output=True, text=True
    )
    assert p.returncode == 1 and p.stderr.startswith("synodctl: ") and p.stderr.count("\n") == 1
    assert run(ctl, "get", ok=False).returncode == 2


def test_lock_acquire_inspect_and_ctrl_c_releases(ctl: list[str], tmp_path: Path) -> None:
    holder = Bg(ctl, "lock", "acquire", "ctl-lock", tmp=tmp_path)
    wait_for(holder.err, "holding ctl-lock")
    ins = json.loads(run(ctl, "-o", "json", "lock", "inspect", "ctl-lock").stdout)
    assert len(ins["holders"]) == 1
    session = ins["holders"][0]["session_id"]
    assert session in run(ctl, "lock", "inspect", "ctl-lock").stdout
    waiter = Bg(ctl, "lock", "acquire", "ctl-lock", tmp=tmp_path)
    wait_for(waiter.err, f"waiting for ctl-lock (held by session {session}, token")
    token = int(holder.interrupt().strip())
    assert token == ins["holders"][0]["fencing_token"]
    wait_for(waiter.err, "holding ctl-lock")
    assert int(waiter.interrupt().strip()) > token
    ins = json.loads(run(ctl, "-o", "json", "lock", "inspect", "ctl-lock").stdout)
    assert ins["holders"] == [] and ins["waiters"] == []


def test_router_register_then_lookup(ctl: list[str], tmp_path: Path) -> None:
    reg = Bg(ctl, "router", "register", "ctl-ring", "b1", "127.0.0.1:9", tmp=tmp_path)
    wait_for(reg.err, "keeping b1 alive")
    found = json.loads(run(ctl, "-o", "json", "router", "lookup", "ctl-ring", "k").stdout)
    assert [(m["id"], m["address"]) for m in found["members"]] == [("b1", "127.0.0.1:9")]
    assert "b1" in run(ctl, "router", "ring", "ctl-ring").stdout
    reg.interrupt()
    ring = json.loads(run(ctl, "-o", "json", "router", "ring", "ctl-ring").stdout)
    assert ring["members"] == []


def test_watch_prints_a_put(ctl: list[str], tmp_path: Path) -> None:
    w = Bg(ctl, "watch", "wt/", "--prefix", tmp=tmp_path)
    wait_for(w.err, "watching wt/* from revision ")
    rev = json.loads(run(ctl, "-o", "json", "put", "wt/x", "hello").stdout)["revision"]
    wait_for(w.out, "wt/x")
    out = w.interrupt().splitlines()
    assert out and out[0].split()[:3] == ["PUT", "wt/x", "hello"], out
    assert f"(revision {rev})" in out[0]

"""Network namespaces on a bridge: partitions really drop packets, heal restores them,
and teardown (or a sweep after a crashed run) leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys

import pytest
from harness_run import need_netns

from synod.check.netns import STATE_DIR, NetnsNetwork, sweep_stale

pytestmark = pytest.mark.xdist_group("chaos")

_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7000)); s.listen(16); print("up", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"hi"); c.close()
"""


def _reach(net: NetnsNetwork, src: str, dst: str, timeout: float = 0.5) -> bool:
    """Can ``src`` (a member namespace, or None for the host) open a TCP connection to dst?"""
    code = (
        "import socket,sys\n"
        "try:\n"
        f"    socket.create_connection(('{net.address(dst)}', 7000), timeout={timeout}).recv(2)\n"
        "except OSError: sys.exit(1)\n"
    )
    prefix = net.exec_prefix(src) if src != "host" else []
    return subprocess.run([*prefix, sys.executable, "-c", code], timeout=30).returncode == 0


def _names(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True).stdout


def test_partition_drops_packets_between_members_not_from_the_host() -> None:
    need_netns()
    net = NetnsNetwork(["a", "b", "c"])
    servers = []
    try:
        net.setup()
        for m in net.members:
            p = subprocess.Popen(
                [*net.exec_prefix(m), sys.executable, "-c", _SERVER, net.address(m)],
                stdout=subprocess.PIPE,
            )
            assert p.stdout is not None and p.stdout.readline() == b"up\n"
            servers.append(p)
        assert _reach(net, "a", "b") and _reach(net, "b", "c") and _reach(net, "host", "a")

        net.partition([{"a"}, {"b", "c"}])
        assert not _reach(net, "a", "b")
        assert not _reach(net, "b", "a")
        assert not _reach(net, "c", "a")
        assert _reach(net, "b", "c")
        assert _reach(net, "host", "a")  # clients still reach an isolated member

        net.partition([{"a", "b"}, {"b", "c"}])  # b bridges
        assert _reach(net, "a", "b") and _reach(net, "b", "c")
        assert not _reach(net, "a", "c") and not _reach(net, "c", "a")

        net.heal()
        assert _reach(net, "a", "c") and _reach(net, "c", "a")
    finally:
        for p in servers:
            p.kill()
            p.wait()
        net.teardown()
    assert net.namespace("a") not in _names(["ip", "netns", "list"])
    assert net.bridge not in _names(["ip", "link", "show"])


def test_sweep_removes_what_a_killed_run_left() -> None:
    need_netns()
    code = (
        "from synod.check.netns import NetnsNetwork\n"
        "n = NetnsNetwork(['x', 'y']); n.setup(); print('RUN', n.run_id, flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        run_id = next(line.split()[1] for line in p.stdout if line.startswith("RUN "))
        assert (STATE_DIR / f"{run_id}.json").exists()
        assert f"synod-{run_id}-x" in _names(["ip", "netns", "list"])
    finally:
        p.kill()  # as kill -9 of a harness: no finally runs in it
        p.wait()
    swept = sweep_stale()
    assert run_id in swept
    assert f"synod-{run_id}-x" not in _names(["ip", "netns", "list"])
    assert f"sb{run_id}" not in _names(["ip", "link", "show"])
    assert not (STATE_DIR / f"{run_id}.json").exists()

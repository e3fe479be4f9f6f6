"""Each consensus member in its own network namespace, joined by one bridge; partitions
are nftables DROP rules inside the namespaces.

Layout of one run (``run_id`` is random, so parallel runs never collide)::

    root namespace: bridge  sb<run_id>  10.A.B.1/24     (the harness and its clients)
    namespace synod-<run_id>-<member>:  eth0  10.A.B.(10+i)/24  (veth to the bridge)

A partition only ever cuts traffic *between members* (each side drops packets
from the other side's addresses on input); the harness's clients, on the
bridge address, still reach every member, as a Jepsen client does. That is
what makes a stale read from an isolated follower observable.

Everything a run creates is written to a state file under ``STATE_DIR`` first,
so ``sweep_stale()`` can remove what a crashed (SIGKILLed) run left behind:
teardown also runs from ``finally`` and on SIGTERM/SIGINT in the runner.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("synod.check.netns")

STATE_DIR = Path("/run/synod-check")
TABLE = "synod_check"


class NetnsUnavailable(RuntimeError):
    """Network namespaces (or nft) cannot be used here: the message says why."""


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used on this machine, or None if they can."""
    if os.geteuid() != 0:
        return "not root (network namespaces need CAP_NET_ADMIN)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed (make deps installs nftables)"
    probe = f"synod-probe-{os.getpid()}-{random.randrange(1 << 24):06x}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "netns", "exec", probe, "nft", "add", "table", "inet", TABLE)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        return f"cannot create a namespace with an nft table: {e}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def _used_subnets() -> set[tuple[int, int]]:
    out = _run("ip", "-4", "-o", "addr", "show", check=False).stdout
    used = set()
    for word in out.split():
        parts = word.split("/")[0].split(".")
        if len(parts) == 4 and parts[0] == "10" and all(p.isdigit() for p in parts):
            used.add((int(parts[1]), int(parts[2])))
    return used


@dataclass
class NetnsNetwork:
    """The namespaces, veths and bridge of one run. ``setup()`` then ``teardown()``."""

    members: list[str]
    run_id: str = field(default_factory=lambda: f"{random.randrange(1 << 24):06x}")
    subnet: tuple[int, int] = (0, 0)
    #: member -> the members whose packets it currently drops
    blocked: dict[str, set[str]] = field(default_factory=dict)
    _created: bool = False

    @property
    def bridge(self) -> str:
        return f"sb{self.run_id}"

    @property
    def host_address(self) -> str:
        return f"10.{self.subnet[0]}.{self.subnet[1]}.1"

    def namespace(self, member: str) -> str:
        return f"synod-{self.run_id}-{member}"

    def address(self, member: str) -> str:
        return f"10.{self.subnet[0]}.{self.subnet[1]}.{10 + self.members.index(member)}"

    def exec_prefix(self, member: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(member)]

    def member_env(self, member: str) -> dict[str, str]:
        return {}

    def _state_file(self) -> Path:
        return STATE_DIR / f"{self.run_id}.json"

    def setup(self) -> None:
        used = _used_subnets()
        rng = random.Random()
        while True:
            self.subnet = (rng.randrange(100, 250), rng.randrange(0, 256))
            if self.subnet not in used:
                break
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self._state_file().write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "bridge": self.bridge,
                    "namespaces": [self.namespace(m) for m in self.members],
                }
            )
        )
        self._created = True
        prefix = f"10.{self.subnet[0]}.{self.subnet[1]}"
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{prefix}.1/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for i, m in enumerate(self.members):
            self._add_member(i, m)
        log.info("netns_ready", run_id=self.run_id, bridge=self.bridge, subnet=f"{prefix}.0/24")

    def _add_member(self, i: int, m: str) -> None:
        ns = self.namespace(m)
        host_end, ns_end = f"sv{self.run_id}{i}", f"sp{self.run_id}{i}"
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _run("ip", "link", "set", ns_end, "netns", ns)
        _run("ip", "-n", ns, "link", "set", ns_end, "name", "eth0")
        _run("ip", "-n", ns, "addr", "add", f"{self.address(m)}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "link", "set", host_end, "master", self.bridge)
        _run("ip", "link", "set", host_end, "up")
        nft = ["ip", "netns", "exec", ns, "nft"]
        _run(*nft, "add", "table", "inet", TABLE)
        hook = "{ type filter hook input priority 0 ; }"
        _run(*nft, "add", "chain", "inet", TABLE, "input", hook)
        self.blocked[m] = set()

    # --- partitions -------------------------------------------------------------

    def partition(self, groups: list[set[str]]) -> None:
        """Cut every member off from the members outside its group(s).

        A member may sit in several groups (a *bridge*): it then reaches all of them.
        Members named in no group are cut from everyone.
        """
        for m in self.members:
            reach = set().union(*(g for g in groups if m in g)) | {m}
            self._drop(m, set(self.members) - reach)

    def heal(self) -> None:
        for m in self.members:
            self._drop(m, set())

    def _drop(self, member: str, sources: set[str]) -> None:
        if self.blocked.get(member) == sources:
            return
        nft = ["ip", "netns", "exec", self.namespace(member), "nft"]
        _run(*nft, "flush", "chain", "inet", TABLE, "input")
        for s in sorted(sources):
            rule = ["ip", "saddr", self.address(s), "drop"]
            _run(*nft, "add", "rule", "inet", TABLE, "input", *rule)
        self.blocked[member] = set(sources)

    def teardown(self) -> None:
        if not self._created:
            return
        for m in self.members:
            _run("ip", "netns", "del", self.namespace(m), check=False)
        _run("ip", "link", "del", self.bridge, check=False)
        self._state_file().unlink(missing_ok=True)
        self._created = False
        log.info("netns_removed", run_id=self.run_id)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Remove namespaces and bridges left by runs whose process is gone; returns run ids."""
    swept: list[str] = []
    if not STATE_DIR.is_dir():
        return swept
    for f in STATE_DIR.glob("*.json"):
        try:
            state = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if _alive(int(state.get("pid", 0))):
            continue
        for ns in state.get("namespaces", []):
            _run("ip", "netns", "del", ns, check=False)
        if state.get("bridge"):
            _run("ip", "link", "del", state["bridge"], check=False)
        f.unlink(missing_ok=True)
        swept.append(f.stem)
    return swept

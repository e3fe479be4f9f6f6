"""What the cluster and the nemesis need from a network: addresses, and partitions.

Two implementations: ``netns.NetnsNetwork`` (a namespace per member on a
bridge, nft DROP rules; the real thing) and ``proxy.ProxyNetwork`` (loopback
addresses and a fault-injecting CONNECT proxy per member; the fallback where
namespaces are unavailable).
"""

from __future__ import annotations

from typing import Protocol


class Network(Protocol):
    members: list[str]

    def setup(self) -> None: ...

    def teardown(self) -> None: ...

    def address(self, member: str) -> str:
        """The member's own IP address (clients and peers reach it there)."""
        ...

    def exec_prefix(self, member: str) -> list[str]:
        """What to put before a command to run it as that member (e.g. ip netns exec)."""
        ...

    def member_env(self, member: str) -> dict[str, str]:
        """Environment variables that member's process needs."""
        ...

    def partition(self, groups: list[set[str]]) -> None:
        """Cut every member off from the members outside its group(s)."""
        ...

    def heal(self) -> None: ...

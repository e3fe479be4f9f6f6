"""The fallback network (no namespaces): members on loopback addresses, each dialing
its peers through its own fault-injecting CONNECT proxy. Isolating the leader
there must really cut it off: the majority elects another leader, and after
healing every member follows one leader again."""

from __future__ import annotations

from pathlib import Path

import pytest
from waits import wait_until

from synod.check.cluster import ChaosCluster
from synod.check.proxy import ProxyNetwork

pytestmark = pytest.mark.xdist_group("chaos")


def test_proxy_partition_isolates_the_leader_and_heal_reunites(tmp_path: Path) -> None:
    net = ProxyNetwork(["m1", "m2", "m3"])
    net.setup()
    cluster = ChaosCluster(net, tmp_path, lock_replicas=0, router_replicas=0,
                           heartbeat_ms=50, election_ms=500)  # fmt: skip
    try:
        cluster.start()
        old = cluster.leader()
        assert all(tunnels for (src, dst), tunnels in net._tunnels.items() if src != dst), (
            "peer traffic does not go through the proxies"
        )
        rest = {m.name for m in cluster.members} - {old.name}
        net.partition([{old.name}, rest])

        def new_leader() -> str | None:
            for m in cluster.members:
                st = cluster.status(m)
                if m.name in rest and st and st.leader == st.header.member_id:
                    return m.name
            return None

        elected = wait_until(new_leader, 20, "a leader in the majority")
        # The old leader, cut off, cannot have heard of the new leader.
        new_status, old_status = cluster.status(cluster.member(elected)), cluster.status(old)
        assert new_status is not None and old_status is not None
        assert old_status.leader != new_status.header.member_id

        net.heal()

        def one_leader() -> bool:
            leaders = {getattr(cluster.status(m), "leader", 0) for m in cluster.members}
            return len(leaders) == 1 and 0 not in leaders

        wait_until(one_leader, 20, "every member to follow one leader after healing")
    finally:
        cluster.stop()
        net.teardown()

"""Leases: grant/ttl/revoke, keep-alive over one shared stream, loss reporting."""

from __future__ import annotations

import asyncio
import time

import pytest
from etcd_harness import EtcdCluster, wait_for

from synod.client.errors import NotFound, Unavailable
from synod.client.etcd import EtcdClient, LeaseKeeper
from synod.client.leases import REASON_EXPIRED, REASON_REVOKED


async def test_grant_ttl_revoke(cluster1: EtcdCluster) -> None:
    async with EtcdClient(cluster1.endpoints) as c:
        lid, ttl = await c.grant(30)
        assert lid != 0 and ttl == 30
        await c.put("leased", "v", lease=lid)
        t = await c.time_to_live(lid, keys=True)
        assert 0 < t.TTL <= 30 and t.grantedTTL == 30 and list(t.keys) == [b"leased"]
        assert lid in await c.leases()

        explicit, ttl2 = await c.grant(20, id=0x1234)
        assert (explicit, ttl2) == (0x1234, 20)

        r = await c.keep_alive_once(lid)
        assert r.ID == lid and r.TTL == 30

        await c.revoke(lid)
        assert (await c.get("leased")).count == 0
        assert (await c.time_to_live(lid)).TTL == -1  # etcd: unknown lease -> TTL -1
        assert lid not in await c.leases()
        with pytest.raises(NotFound):
            await c.revoke(lid)
        with pytest.raises(NotFound):
            await c.keep_alive_once(lid)
        with pytest.raises(NotFound):
            await c.keep_alive(lid).start()


async def test_keepalive_keeps_leases_past_3x_ttl(cluster1: EtcdCluster) -> None:
    async with EtcdClient(cluster1.endpoints) as c:
        ttl = 1  # etcd's minimum with these election settings
        leases = [(await c.grant(ttl))[0] for _ in range(5)]
        for i, lid in enumerate(leases):
            await c.put(f"ka/{i}", "x", lease=lid)
        keepers = [await c.keep_alive(lid) for lid in leases]
        start = time.monotonic()
        # Each renewal happens ~ttl/3 apart: 12 renewals span > 3x TTL.
        await wait_for(lambda: all(k.renewals >= 12 for k in keepers), 20, "12 renewals each")
        assert time.monotonic() - start > 3 * ttl
        assert (await c.get("ka/", prefix=True)).count == 5
        for lid in leases:
            # TTL is whole seconds, rounded down: 0 = alive, < 1s left; -1 = gone.
            assert (await c.time_to_live(lid)).TTL >= 0
        assert all(k.active and not k.lost for k in keepers)
        assert c.keepalive_streams_opened == 1  # all leases share one stream

        for k in keepers:
            await k.aclose()
        # No longer renewed: the leases expire and take their keys along.
        await wait_for(
            lambda: _count_zero(c),
            15,
            "leases to expire after the keepers stopped",
        )
        assert not any(k.lost for k in keepers)  # stopping is not losing


async def _count_zero(c: EtcdClient) -> bool:
    return (await c.get("ka/", prefix=True, count_only=True)).count == 0


async def test_lease_lost_reported_after_revoke(cluster1: EtcdCluster) -> None:
    async with EtcdClient(cluster1.endpoints) as c:
        lid, _ = await c.grant(3)
        other, _ = await c.grant(3)
        called: list[LeaseKeeper] = []
        async with c.keep_alive(lid, on_lost=called.append) as keeper, c.keep_alive(other) as k2:
            await c.revoke(lid)
            reason = await asyncio.wait_for(keeper.wait_lost(), 10)
            assert reason == REASON_REVOKED
            assert called == [keeper] and not keeper.active
            # The other lease on the same stream is unaffected.
            renewals = k2.renewals
            await wait_for(lambda: k2.renewals >= renewals + 2, 10, "other lease renewals")
            assert not k2.lost and (await c.time_to_live(other)).TTL > 0


async def test_lease_lost_when_it_cannot_be_renewed(cluster1: EtcdCluster) -> None:
    async with EtcdClient(cluster1.endpoints, timeout=2.0) as c:
        lid, ttl = await c.grant(2)
        lost = asyncio.Event()
        keeper = await c.keep_alive(lid, on_lost=lambda k: lost.set())
        cluster1.kill(cluster1.members[0])
        start = time.monotonic()
        await asyncio.wait_for(lost.wait(), 10)
        assert keeper.lost_reason == REASON_EXPIRED
        assert time.monotonic() - start <= ttl + 1.0
        with pytest.raises(Unavailable):
            await c.get("x", timeout=1.0)

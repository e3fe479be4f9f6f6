"""Failover in a 3-member etcd cluster: kill the member the client talks to."""

from __future__ import annotations

import asyncio

import pytest
from etcd_harness import EtcdCluster, free_port, wait_for

from synod.client.errors import DeadlineExceeded, Unavailable
from synod.client.etcd import EtcdClient, compare_create_revision, op_put


async def put_once(c: EtcdClient, key: str, value: str) -> None:
    """Create `key` exactly once despite failures: the txn guard makes retrying safe."""
    async with asyncio.timeout(20):
        while True:
            try:
                await c.txn([compare_create_revision(key, "==", 0)], [op_put(key, value)])
                return
            except (Unavailable, DeadlineExceeded):
                await asyncio.sleep(0.05)


async def test_kill_connected_member_gets_and_watch_continue(cluster3: EtcdCluster) -> None:
    n = 60
    async with EtcdClient(cluster3.endpoints, timeout=5.0) as c:
        victim = cluster3.member(c.current_endpoint)
        survivors = [m.endpoint for m in cluster3.members if m is not victim]
        async with EtcdClient(survivors) as writer:
            async with c.watch("fo/", prefix=True) as w:
                assert c.watch_streams_opened == 1
                seen: list[tuple[bytes, int]] = []

                async def consume() -> None:
                    async for resp in w:
                        seen.extend((e.kv.key, e.kv.mod_revision) for e in resp.events)

                consumer = asyncio.create_task(consume())
                for i in range(n):
                    if i == n // 3:
                        cluster3.kill(victim)
                    await put_once(writer, f"fo/{i:03d}", str(i))
                    if i == n // 3:
                        # the client's gets fail over (retried on the next endpoint)
                        got = await c.get("fo/", prefix=True, count_only=True)
                        assert got.count == i + 1
                        assert c.current_endpoint != victim.endpoint
                await wait_for(lambda: len(seen) >= n, 20, f"{n} watch events")
                consumer.cancel()
                await asyncio.gather(consumer, return_exceptions=True)

        keys = [k for k, _ in seen]
        assert keys == [f"fo/{i:03d}".encode() for i in range(n)]  # none lost, no duplicates
        revs = [r for _, r in seen]
        assert revs == sorted(set(revs))
        assert c.watch_streams_opened >= 2  # the stream was re-established
        assert (await c.get("fo/", prefix=True, count_only=True)).count == n


async def test_keepalive_survives_member_death(cluster3: EtcdCluster) -> None:
    async with EtcdClient(cluster3.endpoints) as c:
        # TTL 4: room for an election and a reconnect on a loaded 2-core machine.
        lid, ttl = await c.grant(4)
        async with c.keep_alive(lid) as keeper:
            await wait_for(lambda: c.keepalive_streams_opened == 1, 10, "keepalive stream")
            victim = cluster3.member(c.current_endpoint)
            cluster3.kill(victim)
            before = keeper.renewals
            await wait_for(lambda: keeper.renewals >= before + 6, 20, "renewals after failover")
            assert not keeper.lost
            assert c.keepalive_streams_opened >= 2
            assert (await c.time_to_live(lid)).TTL >= 0


async def test_put_on_dead_endpoint_not_retried_but_get_is(cluster1: EtcdCluster) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here
    live = cluster1.endpoints[0]
    async with EtcdClient([dead, live]) as c:
        assert c.current_endpoint == dead
        with pytest.raises(Unavailable) as ei:
            await c.put("np", "1")
        assert ei.value.endpoint == dead and not ei.value.maybe_applied
        assert c.current_endpoint == live  # the caller's retry goes elsewhere
    async with EtcdClient([live]) as check:
        assert (await check.get("np")).count == 0  # not applied, and not retried

    async with EtcdClient([dead, live]) as c:
        await check_get_retried(c, live)


async def check_get_retried(c: EtcdClient, live: str) -> None:
    got = await c.get("np")
    assert got.count == 0
    assert c.current_endpoint == live


async def test_inflight_put_when_member_dies_raises_unavailable(cluster3: EtcdCluster) -> None:
    async with EtcdClient(cluster3.endpoints) as c:
        await c.put("x", "1")  # connected
        victim = cluster3.member(c.current_endpoint)
        cluster3.kill(victim)
        with pytest.raises(Unavailable):
            await c.put("x", "2")
        assert c.current_endpoint != victim.endpoint
        # Idempotent reads and read-only txns fail over transparently.
        assert (await c.get("x")).count == 1
        assert (await c.member_list()).members
        st = await c.status()
        assert st.header.member_id != 0

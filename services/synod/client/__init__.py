"""Asyncio clients for the etcd v3 gRPC API spoken by Synod's consensus service.

`synod.client.etcd.EtcdClient` is the internal client used by Synod's lock and
router services; it works against Synod's consensus service or a real etcd
cluster. The public client will be added later; this package deliberately
exports nothing at the top level yet.
"""

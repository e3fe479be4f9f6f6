"""`synod bench`: Synod and etcd measured side by side on one machine (issue 10).

The same load generator (raw etcd v3 gRPC stubs, many calls in flight on a few
channels) runs each scenario against a Synod stack and an etcd stack started
here on loopback, alternating between them repetition by repetition, and the
report gives medians with min-max and the ratio Synod/etcd. Entry point:
`synod.bench.main.run`.
"""

"""The lock service: leased, fenced, fair distributed locks kept in the consensus service.

`rules.py` decides who holds a lock (pure), `service.py` serves the gRPC
contracts (synod.lock.v1 and etcd's v3lockpb), `main.py` runs the process.
See docs/locks.md.
"""

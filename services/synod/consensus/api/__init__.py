"""The client-facing gRPC API of a consensus member: etcd v3 services, thin handlers.

Each handler validates its request, then either proposes it through the log
and waits for this member to apply it (writes), or waits for a ReadIndex
barrier and reads local state (linearizable reads), or reads local state
directly (serializable reads).
"""

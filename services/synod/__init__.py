"""Synod: Raft consensus (etcd-compatible gRPC API), lock and router services."""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""Jepsen-style fault injection and checking (``synod check``): see docs/reliability.md."""

"""Synod router: key placement on a set of weighted backends (see docs/router.md)."""

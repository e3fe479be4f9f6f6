"""The loopback ports harnesses hand to the servers they start (services/synod/ports.py)."""

from __future__ import annotations

import socket

import pytest

from synod.ports import PortSource, _ephemeral_start, free_loopback_ports, share


def test_xdist_workers_draw_from_disjoint_shares() -> None:
    gw0 = share("gw0", 2, 20000, 32768)
    gw1 = share("gw1", 2, 20000, 32768)
    assert gw0 == (20000, 26384)
    assert gw1 == (26384, 32768)
    assert share(None, 1, 20000, 32768) == (20000, 32768)
    assert share("master", 2, 20000, 32768) == (20000, 32768)


def test_ports_stay_below_the_ephemeral_range_and_never_repeat() -> None:
    ports = [p for _ in range(50) for p in free_loopback_ports(3)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= p < _ephemeral_start() for p in ports)


def test_a_port_with_a_listener_is_skipped() -> None:
    source = PortSource(21000, 21100, first=21050)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 21050))
        listener.listen()
        assert source.take(2) == [21051, 21052]


def test_the_walk_wraps_at_the_end_of_the_range() -> None:
    source = PortSource(23000, 23100, first=23099)
    assert source.take(2) == [23099, 23000]


def test_contiguous_span_skips_past_a_port_in_use() -> None:
    source = PortSource(22000, 22100, first=22000)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 22002))
        listener.listen()
        span = source.take(4, contiguous=True)
    assert span == [22003, 22004, 22005, 22006]


def test_asking_for_none_gives_none() -> None:
    assert free_loopback_ports(0) == []


def test_a_range_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        PortSource(30000, 30010)

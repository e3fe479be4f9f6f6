"""Channels to the lock and router services: TLS or plaintext, from one place.

(The consensus service's channels are made by `_transport.Transport`, which
takes the same credentials.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import grpc
import grpc.aio

from ._transport import normalize_endpoint


def uses_https(endpoints: Iterable[str]) -> bool:
    """Some endpoint is an https:// URL: the caller meant TLS even without a CA or cert."""
    return any(e.strip().lower().startswith("https://") for e in endpoints)


def open_channel(
    endpoint: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel to `endpoint` ("host:port" or an http(s):// URL); TLS with `credentials`."""
    target = normalize_endpoint(endpoint)
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=options)
    return grpc.aio.insecure_channel(target, options=options)

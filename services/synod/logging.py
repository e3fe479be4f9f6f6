"""Structured logging for all Synod services (structlog, to stderr).

Call :func:`configure` once, early (the CLI does this); then use :func:`get_logger`.
Output is JSON lines when stderr is not a TTY, human-friendly ``key=value`` lines when
it is. Timestamps are ISO-8601 UTC. Standard-library ``logging`` records (grpc,
asyncio, ...) are rendered through the same pipeline.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor

__all__ = ["configure", "get_logger", "is_configured"]

_LEVELS: dict[str, int] = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}

# (level, json) of the active configuration; None until configure() runs.
_active: tuple[int, bool] | None = None


class _SynodHandler(logging.StreamHandler):
    """Root-logger handler installed by :func:`configure` (marker type for idempotency)."""


class _NamedPrintLogger(structlog.PrintLogger):
    """PrintLogger that remembers the name passed to ``structlog.get_logger(name)``."""

    def __init__(self, file: Any, name: str | None) -> None:
        super().__init__(file)
        self.name = name


def _logger_factory(*args: Any) -> _NamedPrintLogger:
    # Resolve sys.stderr when the logger is created, not at configure() time.
    return _NamedPrintLogger(sys.stderr, str(args[0]) if args else None)


def _add_logger_name(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    name = getattr(logger, "name", None)
    if name is not None:
        event_dict.setdefault("logger", name)
    return event_dict


def _parse_level(level: str) -> int:
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        choices = ", ".join(sorted(_LEVELS))
        raise ValueError(f"unknown log level {level!r} (choose from {choices})") from None


def _stderr_is_tty() -> bool:
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # closed or unusual stream
        return False


def configure(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog (and stdlib logging) to write to stderr.

    ``json=None`` selects JSON when stderr is not a TTY. Calling again with the same
    effective settings is a no-op; different settings reconfigure.
    """
    global _active
    lvl = _parse_level(level)
    use_json = (not _stderr_is_tty()) if json is None else json
    if _active == (lvl, use_json):
        return

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if use_json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_stderr_is_tty())

    structlog.configure(
        processors=[_add_logger_name, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_logger_factory,
        context_class=dict,
        cache_logger_on_first_use=True,
    )

    # Route stdlib logging through the same renderer.
    handler = _SynodHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SynodHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)
    _active = (lvl, use_json)


def is_configured() -> bool:
    return _active is not None


def get_logger(name: str | None = None, **initial_values: Any) -> FilteringBoundLogger:
    """Return a (lazy) structlog logger; records carry ``logger=name``.

    Configures defaults first if :func:`configure` has not run, so that nothing is
    ever written to stdout by structlog's built-in default configuration.
    """
    if _active is None:
        configure()
    args = () if name is None else (name,)
    logger: FilteringBoundLogger = structlog.get_logger(*args, **initial_values)
    return logger

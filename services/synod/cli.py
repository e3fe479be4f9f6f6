"""``synod`` command-line entry point.

Adding a subcommand = one handler function + one registration line::

    @subcommand("lock", help="Run the lock service.", args=_lock_args)
    def _lock(args: argparse.Namespace) -> int: ...

``args`` (optional) is a function that adds options to the subcommand's parser.
Handlers return a process exit code. Import heavy service modules inside the handler
so ``synod version`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from synod import __version__
from synod import logging as synod_logging

Handler = Callable[[argparse.Namespace], int]
ArgsAdder = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    handler: Handler
    add_args: ArgsAdder | None = None


_SUBCOMMANDS: dict[str, Subcommand] = {}


def subcommand(
    name: str, *, help: str, args: ArgsAdder | None = None
) -> Callable[[Handler], Handler]:
    """Decorator registering ``handler`` as ``synod <name>``."""

    def register(handler: Handler) -> Handler:
        if name in _SUBCOMMANDS:
            raise ValueError(f"subcommand {name!r} registered twice")
        _SUBCOMMANDS[name] = Subcommand(name, help, handler, args)
        return handler

    return register


# --- subcommands --------------------------------------------------------------


@subcommand("version", help="Print the Synod version and exit.")
def _version(args: argparse.Namespace) -> int:
    print(f"synod {__version__}")
    return 0


def _consensus_args(p: argparse.ArgumentParser) -> None:
    from synod.consensus.main import add_arguments

    add_arguments(p)


@subcommand("consensus", help="Run one consensus (Raft) member.", args=_consensus_args)
def _consensus(args: argparse.Namespace) -> int:
    from synod.consensus.main import run

    return run(args)


def _snapshot_args(p: argparse.ArgumentParser) -> None:
    from synod.consensus.restore import add_arguments

    add_arguments(p)


@subcommand(
    "snapshot",
    help="Restore a consensus member's data directory from a backup.",
    args=_snapshot_args,
)
def _snapshot(args: argparse.Namespace) -> int:
    from synod.consensus.restore import run

    return run(args)


def _lock_args(p: argparse.ArgumentParser) -> None:
    from synod.lock.main import add_arguments

    add_arguments(p)


@subcommand("lock", help="Run one replica of the lock service.", args=_lock_args)
def _lock(args: argparse.Namespace) -> int:
    from synod.lock.main import run

    return run(args)


def _router_args(p: argparse.ArgumentParser) -> None:
    from synod.router.main import add_arguments

    add_arguments(p)


@subcommand("router", help="Run a router replica (key -> backend, proxy).", args=_router_args)
def _router(args: argparse.Namespace) -> int:
    from synod.router.main import run

    return run(args)


def _up_args(p: argparse.ArgumentParser) -> None:
    from synod.up import add_arguments

    add_arguments(p)


@subcommand(
    "up", help="Run a whole local Synod (3 members, 2 lock, 2 router replicas).", args=_up_args
)
def _up(args: argparse.Namespace) -> int:
    from synod.up import run

    return run(args)


def _check_args(p: argparse.ArgumentParser) -> None:
    from synod.check.command import add_arguments

    add_arguments(p)


@subcommand(
    "check",
    help="Jepsen-style run: a cluster under faults, workloads, checkers (docs/reliability.md).",
    args=_check_args,
)
def _check(args: argparse.Namespace) -> int:
    from synod.check.command import main

    return main(args)


def _bench_args(p: argparse.ArgumentParser) -> None:
    from synod.bench.main import add_arguments

    add_arguments(p)


@subcommand("bench", help="Benchmark Synod side by side with etcd here.", args=_bench_args)
def _bench(args: argparse.Namespace) -> int:
    from synod.bench.main import run

    return run(args)


# --- entry point ----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synod", description="Synod coordination suite.")
    parser.add_argument("--version", action="version", version=f"synod {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error", "critical"],
        help="minimum log level (default: info)",
    )
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument(
        "--log-json",
        dest="log_json",
        action="store_const",
        const=True,
        default=None,
        help="force JSON logs (default: JSON unless stderr is a TTY)",
    )
    fmt.add_argument(
        "--log-console",
        dest="log_json",
        action="store_const",
        const=False,
        help="force human-readable key=value logs",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in _SUBCOMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if cmd.add_args is not None:
            cmd.add_args(p)
        p.set_defaults(_handler=cmd.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    synod_logging.configure(level=args.log_level, json=args.log_json)
    handler: Handler = args._handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())

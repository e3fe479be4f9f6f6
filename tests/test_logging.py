"""synod.logging: JSON to stderr when not a TTY, level filtering, idempotency."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta


def _run(code: str) -> subprocess.CompletedProcess[str]:
    # stderr is a pipe, i.e. not a TTY.
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _json_lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def test_json_when_stderr_not_a_tty() -> None:
    proc = _run(
        """
        from synod.logging import configure, get_logger
        configure()
        configure()  # idempotent
        get_logger("synod.test").info("hello", node=3, peers=["a", "b"])
        """
    )
    assert proc.stdout == ""
    records = _json_lines(proc.stderr)
    assert len(records) == 1
    rec = records[0]
    assert rec["event"] == "hello"
    assert rec["level"] == "info"
    assert rec["logger"] == "synod.test"
    assert rec["node"] == 3
    assert rec["peers"] == ["a", "b"]
    ts = datetime.fromisoformat(str(rec["timestamp"]).replace("Z", "+00:00"))
    assert ts.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - ts) < timedelta(minutes=5)


def test_level_filtering_and_stdlib_bridge() -> None:
    proc = _run(
        """
        import logging
        from synod.logging import configure, get_logger
        configure(level="warning")
        log = get_logger("synod.test")
        log.debug("dropped-debug")
        log.info("dropped-info")
        log.warning("kept-warning", k="v")
        logging.getLogger("grpc.stub").error("kept-stdlib")
        logging.getLogger("grpc.stub").info("dropped-stdlib")
        """
    )
    assert proc.stdout == ""
    records = _json_lines(proc.stderr)
    assert [r["event"] for r in records] == ["kept-warning", "kept-stdlib"]
    assert records[0]["level"] == "warning"
    assert records[1]["level"] == "error"
    assert records[1]["logger"] == "grpc.stub"
    assert "timestamp" in records[1]


def test_console_renderer_when_forced() -> None:
    proc = _run(
        """
        from synod.logging import configure, get_logger
        configure(json=False)
        get_logger("synod.test").info("hello", node=3)
        """
    )
    assert proc.stdout == ""
    line = proc.stderr.strip()
    assert "hello" in line and "node" in line and "3" in line
    assert not line.startswith("{")


def test_exceptions_rendered_in_json() -> None:
    proc = _run(
        """
        from synod.logging import configure, get_logger
        configure(json=True)
        try:
            1 / 0
        except ZeroDivisionError:
            get_logger("x").exception("boom")
        """
    )
    (rec,) = _json_lines(proc.stderr)
    assert rec["event"] == "boom"
    assert rec["level"] == "error"
    assert "ZeroDivisionError" in str(rec["exception"])


def test_get_logger_before_configure_never_uses_stdout() -> None:
    proc = _run(
        """
        from synod.logging import get_logger
        get_logger("x").info("early")
        """
    )
    assert proc.stdout == ""
    assert _json_lines(proc.stderr)[0]["event"] == "early"

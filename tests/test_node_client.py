"""The Node.js example (clients/node/) against a real `synod up`: lock with a fencing
token, then register a backend and look a key up."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    from ports import free_base  # tests/support/ports.py
except ImportError:  # pragma: no cover - older tree: the helper lived in test_up
    from test_up import free_base

NODE_DIR = Path(__file__).resolve().parent.parent / "clients" / "node"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node not installed (Node client test)"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir(),
        reason="clients/node/node_modules missing: run `make node-deps` "
        "(cd clients/node && npm ci)",
    ),
]


def test_node_example_locks_and_routes(tmp_path: Path) -> None:
    base = free_base()
    up = subprocess.Popen(
        [sys.executable, "-m", "synod", "up", "--base-port", str(base), "--timeout", "60"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    assert up.stdout is not None
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("Ctrl-C stops everything"):
                break
        assert "synod up: all healthy" in lines, "\n".join(lines)

        backend = f"node-test-{base}"
        run = subprocess.run(
            [NODE, str(NODE_DIR / "example.js"),
             "--lock", f"127.0.0.1:{base + 6}", "--router", f"127.0.0.1:{base + 8}",
             "--ring", "node-test", "--id", backend, "--key", "alice"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        out = run.stdout + run.stderr
        assert run.returncode == 0, out
        token = re.search(r"fencing token (\d+)", run.stdout)
        assert token is not None and int(token.group(1)) > 0, out
        owner = re.search(r"key alice owner (\S+)", run.stdout)
        assert owner is not None and owner.group(1) == backend, out
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        try:
            up.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.communicate()
    assert up.returncode == 0

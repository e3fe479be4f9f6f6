"""The ``synod`` CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from synod import __version__
from synod.cli import main


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("module", ["synod", "synod.cli"])
def test_version_via_python_m(module: str) -> None:
    proc = _run(sys.executable, "-m", module, "version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"synod {__version__}"


def test_version_via_console_script() -> None:
    script = Path(sys.executable).parent / "synod"
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    proc = _run(str(script), "version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"synod {__version__}"


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-level", "warning", "version"]) == 0
    assert capsys.readouterr().out.strip() == f"synod {__version__}"


def test_missing_or_unknown_subcommand_fails() -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2

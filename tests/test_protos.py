"""Every .proto under protos/ has importable, up-to-date, git-ignored generated stubs."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "services"


def _load_gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "tools" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_gen()
PROTOS: list[Path] = gen.find_protos()


def test_there_are_protos() -> None:
    assert PROTOS, "no .proto files found under protos/"


@pytest.mark.parametrize("proto", PROTOS, ids=str)
def test_generated_modules_importable(proto: Path) -> None:
    name = gen.module_name(proto)
    pb2 = importlib.import_module(name)
    assert pb2.DESCRIPTOR.name == proto.as_posix()
    importlib.import_module(name + "_grpc")
    pyi = SERVICES / proto.parent / (proto.stem + "_pb2.pyi")
    assert pyi.is_file(), f"missing type stub {pyi}"


def test_generated_stubs_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--quiet", "--out", str(tmp_path)],
        check=True,
        timeout=120,
    )
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in gen.generated_files(tmp_path)}
    current = {p.relative_to(SERVICES): p.read_bytes() for p in gen.generated_files(SERVICES)}
    assert fresh, "generation produced no files"
    assert sorted(current) == sorted(fresh), "stale or missing stubs; run `make protos`"
    stale = [str(p) for p in fresh if fresh[p] != current[p]]
    assert not stale, f"stubs out of date (run `make protos`): {stale}"
    for init in gen.generated_inits(tmp_path):
        assert (SERVICES / init.relative_to(tmp_path)).is_file()


def test_generated_files_are_gitignored() -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = gen.generated_files(SERVICES) + gen.generated_inits(SERVICES)
    assert files
    proc = subprocess.run(
        [git, "check-ignore", "--no-index", "--verbose", "--non-matching", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    not_ignored = [
        line.split("\t", 1)[1] for line in proc.stdout.splitlines() if line.startswith("::")
    ]
    assert not not_ignored, f"generated files not covered by .gitignore: {not_ignored}"

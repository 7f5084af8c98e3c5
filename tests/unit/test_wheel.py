"""The wheel built from pyproject.toml holds the tool and its BPF sources, and no lab.

The lab (vm-images/lab) only works from a checkout: it finds kernels.toml, tests/kmod and
scripts/ beside itself. A wheel that carried it would install a package named ``lab`` that
cannot run. Built without build isolation (setuptools comes with the test extras), so the
test needs no network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    # From a copy of what the build reads: setuptools reuses a build/ left in the source
    # tree, whose stale modules would land in the wheel.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("subsecinspect", "bpf", "vm-images"):
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "cache"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(src)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (whl,) = out.glob("subsecinspect-*.whl")
    with zipfile.ZipFile(whl) as z:
        return z.namelist()


def test_wheel_holds_no_lab(wheel_files: list[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_files}
    assert all(t == "subsecinspect" or t.startswith("subsecinspect-0") for t in tops), tops
    assert not [n for n in wheel_files if "/lab/" in n or n.startswith("lab/")]
    assert not [n for n in wheel_files if n.endswith((".sh", ".toml")) or "kmod" in n]


def test_wheel_holds_every_module_of_the_package(wheel_files: list[str]) -> None:
    want = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "subsecinspect").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert want, "no package modules found"
    assert want <= set(wheel_files), sorted(want - set(wheel_files))


def test_wheel_holds_every_bpf_source(wheel_files: list[str]) -> None:
    """The front ends load their C from share/subsecinspect/bpf (probes.bcc_env)."""
    want = {p.name for p in (ROOT / "bpf").iterdir() if p.suffix in (".c", ".h")}
    shipped = {n.rsplit("/", 1)[1] for n in wheel_files if "/share/subsecinspect/bpf/" in n}
    assert want, "no BPF sources found"
    assert shipped == want

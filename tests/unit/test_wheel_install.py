"""The wheel installs into a fresh venv and works there, as the README's Install section says.

``python -m venv --system-site-packages`` (so Debian's python3-bpfcc is seen by ``trace``), then
``pip install`` of the wheel built from this checkout. Its dependencies come from the lab's
wheel cache when that holds them (no network), else from PyPI. The installed tool answers
``--version``, ``--help`` and completion, ships its man page where man(1) finds it, exposes
the drgn plugin entry point, and classifies a saved snapshot exactly as the checkout does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cliout import run_cli

from lab.buildutil import cache_dir
from lab.wheel import build_wheel
from subsecinspect import __version__

ROOT = Path(__file__).resolve().parents[2]
SNAP = Path(__file__).parent / "fixtures" / "lab" / "nvdimm_mixed_6.1_dump.json"


def _local_wheels() -> list[str]:
    """``--no-index --find-links DIR`` for a lab wheel cache that holds drgn, rich and typer."""
    for d in sorted((cache_dir() / "wheels").glob("*/")):
        names = [p.name for p in d.glob("*.whl")]
        if all(any(n.startswith(f"{dep}-") for n in names) for dep in ("drgn", "rich", "typer")):
            return ["--no-index", "--find-links", str(d)]
    return []


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("install")
    whl = build_wheel(tmp / "build")
    env = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--system-site-packages", str(env)], check=True,
                   timeout=300)
    r = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", *_local_wheels(), str(whl)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    return env


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Out of the checkout, so nothing but the installed package can be imported.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(venv / "bin" / "subsecinspect"), *args], capture_output=True,
                          text=True, timeout=300, cwd="/", env=env)


def test_version_and_help(venv: Path) -> None:
    r = _run(venv, "--version")
    assert (r.returncode, r.stdout) == (0, f"subsecinspect {__version__}\n")
    r = _run(venv, "--help")
    assert r.returncode == 0
    assert all(c in r.stdout for c in ("classify", "explain", "sections", "pgmaps", "trace"))


def test_completion_script(venv: Path) -> None:
    r = _run(venv, "--show-completion", "bash")
    assert r.returncode == 0 and "_SUBSECINSPECT_COMPLETE=complete_bash" in r.stdout


def test_man_page_is_installed_and_renders(venv: Path) -> None:
    page = venv / "share" / "man" / "man1" / "subsecinspect.1"
    assert page.read_text() == (ROOT / "man" / "subsecinspect.1").read_text()
    r = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MANPAGER": "cat"})
    assert r.returncode == 0 and "SUBSECINSPECT(1)" in r.stdout


def test_installed_package_is_the_wheel_and_has_the_plugin(venv: Path) -> None:
    code = ("import subsecinspect, importlib.metadata as m; print(subsecinspect.__file__); "
            "print([e.value for e in m.entry_points(group='drgn.plugins') "
            "if e.name == 'subsecinspect'])")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True,
                       text=True, timeout=60, cwd="/",
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    path, eps = r.stdout.splitlines()
    assert path.startswith(str(venv)), path
    assert eps == "['subsecinspect.drgn_plugin']"


def test_classifies_a_saved_snapshot(venv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = _run(venv, "classify", str(SNAP), "--json")
    assert r.returncode == 0, r.stderr
    _, want, _ = run_cli(capsys, "classify", str(SNAP), "--json")
    assert r.stdout == want
    assert json.loads(r.stdout)["ranges"]

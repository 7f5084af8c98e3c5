"""Build this checkout's wheel, the way a user would install the tool.

For the tests that install the wheel (on the host, tests/unit/test_wheel_install.py, and in a
guest, tests/vm/test_drgn_plugin.py) and list what it holds (tests/unit/test_wheel.py). Built
without build isolation (setuptools comes with the test extras), so no network is needed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ("build_wheel",)

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(work: Path) -> Path:
    """``pip wheel`` of a copy of this checkout into *work*/wheel: :return: the ``.whl``.

    From a copy of what the build reads: setuptools reuses a build/ left in the source
    tree, whose stale modules would land in the wheel.
    """
    src = work / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("subsecinspect", "bpf", "man", "vm-images"):
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "cache"))
    out = work / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(src)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (whl,) = out.glob("subsecinspect-*.whl")
    return whl

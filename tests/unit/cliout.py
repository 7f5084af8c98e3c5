"""Run the ``subsecinspect`` command line in-process and capture what it prints.

The reference the API, the drgn plugin and the fleet commands are compared against: the same
entry point as the console script (:func:`subsecinspect.cli.main.main`), fast path included.
"""

from __future__ import annotations

import pytest

from subsecinspect.cli import main as cli

__all__ = ("run_cli",)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``subsecinspect ARGV...`` -> ``(exit code, stdout, stderr)``."""
    capsys.readouterr()
    try:
        cli.main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err

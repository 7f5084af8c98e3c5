"""The man page shipped in man/subsecinspect.1 is the one the command line generates, and renders.

A stale page (an option added, a help text changed, without ``python scripts/gen_manpage.py``)
fails here. Rendering is checked with groff's warnings on (``-ww``) and with ``man -l``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from subsecinspect import __version__
from subsecinspect.cli.app import app, package_version
from subsecinspect.cli.manpage import manpage

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "man" / "subsecinspect.1"


def test_shipped_man_page_is_fresh() -> None:
    assert PAGE.read_text() == manpage(__version__), "run: python scripts/gen_manpage.py"


def test_man_page_names_every_command_and_option() -> None:
    import typer.main

    text = PAGE.read_text()
    for name, cmd in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        assert f".SS {name}\n" in text
        for p in cmd.params:
            for opt in getattr(p, "opts", []) if p.param_type_name == "option" else []:
                assert f"\\fB{opt.replace('-', chr(92) + '-')}\\fR" in text, (name, opt)


def test_man_page_renders_without_warnings() -> None:
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(PAGE)],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, "")
    r = subprocess.run(["man", "-l", str(PAGE)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "80"})
    assert r.returncode == 0, r.stderr
    assert "SUBSECINSPECT(1)" in r.stdout and "EXIT STATUS" in r.stdout
    assert f"subsecinspect {__version__}" in r.stdout


def test_version_comes_from_the_package() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        want = version("subsecinspect")
    except PackageNotFoundError:
        want = __version__
    assert package_version() == want == __version__

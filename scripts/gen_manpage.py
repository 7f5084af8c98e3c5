#!/usr/bin/env python3
"""Write man/subsecinspect.1 from the command line's definition (subsecinspect.cli.manpage).

Run after changing a command, an option or a help text; tests/unit/test_packaging.py fails
while the shipped page differs from a fresh one. ``--check`` only compares (exit 1 if stale).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from subsecinspect import __version__  # noqa: E402
from subsecinspect.cli.manpage import manpage  # noqa: E402

PAGE = ROOT / "man" / "subsecinspect.1"


def main() -> int:
    text = manpage(__version__)
    if "--check" in sys.argv[1:]:
        return 0 if PAGE.exists() and PAGE.read_text() == text else 1
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

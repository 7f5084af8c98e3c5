"""lab.rundirs: a run directory name is held by one VM at a time; old ones go."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lab.rundirs import claim, prune, release


def test_a_held_name_gives_the_second_claimant_its_own_directory(tmp_path: Path) -> None:
    a, fa = claim(tmp_path, "test-cli-6.1")
    b, fb = claim(tmp_path, "test-cli-6.1")  # another open file description: flock conflicts
    assert a == "test-cli-6.1"
    assert b == f"test-cli-6.1-{os.getpid()}"
    release(fa)
    c, fc = claim(tmp_path, "test-cli-6.1")
    assert c == "test-cli-6.1"
    release(fb)
    release(fc)


def test_prune_deletes_old_unheld_directories_only(tmp_path: Path) -> None:
    old = time.time() - 30 * 86400
    for name in ("old-free", "old-held", "new"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "console.log").write_text("x")
    (tmp_path / "old-free.failed-boot.log").write_text("Oops")
    for p in ("old-free", "old-held", "old-free.failed-boot.log"):
        os.utime(tmp_path / p, (old, old))
    _, fd = claim(tmp_path, "old-held")
    gone = prune(tmp_path, max_age_days=7)
    release(fd)
    assert sorted(p.name for p in gone) == ["old-free", "old-free.failed-boot.log"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == ["new", "old-held"]

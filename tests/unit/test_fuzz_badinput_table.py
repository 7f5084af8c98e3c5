"""The bad-input recorder (tests/conftest.py) and its renderer (scripts/bad_input_table.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


table = _load("bad_input_table", ROOT / "scripts" / "bad_input_table.py")
recorder_mod = _load("badinput_recorder", ROOT / "tests" / "conftest.py")


def _rec(case: str, kernel: str | None, answer: str, rc: int | None = 3,
         outcome: str = "passed", group: str = "g") -> dict[str, Any]:
    return {"case": case, "tried": "classify x | y", "answer": answer, "exit_code": rc,
            "traceback": False, "kernel": kernel, "group": group, "test": f"t::{case}[{kernel}]",
            "outcome": outcome, "recorded": "2026-11-25T18:00:00Z"}


def test_render_folds_kernels_escapes_pipes_and_flags_failures() -> None:
    text = table.render([
        _rec("wrong vmlinux", "6.12", "error: B"), _rec("wrong vmlinux", "5.10", "error: A"),
        _rec("truncated", None, "a|b", outcome="failed"),
    ])
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert rows[1] == ("| wrong vmlinux | 5.10, 6.12 | `classify x \\| y` | 5.10: `error: A` "
                       "(differs in detail on other kernels) | 3 |")
    assert rows[2].startswith("| truncated **(test failed)** | - |")
    assert "`a\\|b`" in rows[2]


def test_replace_section_is_idempotent_and_needs_both_markers() -> None:
    readme = f"intro\n{table.BEGIN}\nold\n{table.END}\ntail\n"
    once = table.replace_section(readme, "new\n")
    assert once == f"intro\n{table.BEGIN}\nnew\n{table.END}\ntail\n"
    assert table.replace_section(once, "new\n") == once
    with pytest.raises(SystemExit):
        table.replace_section("no markers", "x")


def test_recorder_cleans_and_merges_by_test(tmp_path: Path) -> None:
    out = tmp_path / "bad-input.json"
    old = [_rec("kept", "6.1", "x"), _rec("replaced", "6.1", "old answer")]
    out.write_text(json.dumps({"format": 1, "records": old}))
    rec = recorder_mod._Recorder()
    rec.current = "t::replaced[6.1]"
    rec.ran = {"t::replaced[6.1]"}
    rec.outcomes = {"t::replaced[6.1]": "passed"}
    rec.record("replaced", "classify /tmp/pytest-of-root/pytest-9/test_x0/core",
               "Traceback (most recent call last):\n  ...\nsubsecinspect: error: boom\n", 1)
    rec.write(out)
    records = json.loads(out.read_text())["records"]
    assert [r["case"] for r in records] == ["kept", "replaced"]
    new = records[1]
    assert new["tried"] == "classify <tmp>/core"
    assert new["answer"] == "subsecinspect: error: boom"
    assert new["traceback"] is True and new["outcome"] == "passed"

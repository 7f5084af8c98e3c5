"""The typer-free fast path of ``classify --json`` against the typer app, on saved snapshots.

The same argv is run as ``python -m subsecinspect`` (fast path) and through the typer app
directly; stdout, stderr, exit code and written files must be identical. Runs without a
kernel: the targets are snapshots in tests/unit/fixtures (plus damaged copies of them).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from subsecinspect.cli import main as cli

PY = sys.executable
TMPNAME = re.compile(r"\.subsecinspect-\w+\.tmp")
FIXTURES = Path(__file__).parent / "fixtures"
LAB_SNAPSHOT = FIXTURES / "lab" / "nvdimm_mixed_6.1_dump.json"

TYPER = "import sys; from subsecinspect.cli.app import app; sys.argv[0] = 'subsecinspect'; app()"
#: A child that refuses typer, rich, pydantic and click, then runs the console-script entry.
BLOCKED = r"""
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("typer", "rich", "pydantic", "pydantic_core", "click"):
            raise ImportError(f"{name} is blocked for this test")
        return None

sys.meta_path.insert(0, Block())
from subsecinspect.cli.main import main
sys.argv[0] = "subsecinspect"
main()
"""


def run_fast(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "subsecinspect", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def run_typer(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-c", TYPER, *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def with_warnings(tmp_path: Path) -> Path:
    """The lab snapshot with two warnings (printed on stderr by both paths)."""
    data = json.loads(LAB_SNAPSHOT.read_text())
    data["warnings"] = ["first warning: pgmap 0x1 odd", "second [bold]not markup[/bold] :smile:"]
    p = tmp_path / "warned.json"
    p.write_text(json.dumps(data))
    return p


def test_console_script_is_the_fast_entry_point() -> None:
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "subsecinspect"]
    assert ep.value == "subsecinspect.cli.main:main"
    assert ep.load() is cli.main


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["classify", "--json"], dict(target=None, vmlinux=None, save=None, output=None)),
        (["classify", "d.core", "-s", "vml", "--json"],
         dict(target="d.core", vmlinux="vml", save=None, output=None)),
        (["classify", "--json", "--vmlinux=vml", "--save=s.json", "-o", "o.json", "x"],
         dict(target="x", vmlinux="vml", save="s.json", output="o.json")),
        (["classify", "--output", "o", "--debug", "--json"],
         dict(target=None, vmlinux=None, save=None, output="o", debug=True)),
        (["classify", "--no-bpf", "--json"],
         dict(target=None, vmlinux=None, save=None, output=None, bpf=False)),
        (["classify", "d.core", "--debuginfo", "btf", "-m", "System.map", "--json"],
         dict(target="d.core", vmlinux=None, save=None, output=None, debuginfo="btf",
              system_map="System.map")),
    ],
)
def test_fast_args_accepted(argv: list[str], want: dict[str, object]) -> None:
    assert cli.fast_classify_args(argv) == {
        "debug": False, "bpf": True, "debuginfo": "auto", "system_map": None, **want
    }


@pytest.mark.parametrize(
    "argv",
    [
        [], ["classify"], ["classify", "x"], ["sections", "--json"], ["explain", "1", "--json"],
        ["classify", "--json", "--help"], ["classify", "--json", "a", "b"],
        ["classify", "--json", "--json"], ["classify", "--json", "-s"],
        ["classify", "--json", "-s", "-o"], ["classify", "--json", "-s", ""],
        ["classify", "--json", "--", "x"], ["classify", "--json", "--jsonx"],
        ["classify", "--json", "-sVML"], ["classify", "--json=1"], ["classify", "-", "--json"],
        ["classify", "--json", "--save", "a", "--save", "b"],
        ["classify", "--json", "--no-bpf", "--no-bpf"], ["classify", "--json", "--no-bpf=1"],
    ],
)
def test_fast_args_leave_the_rest_to_typer(argv: list[str]) -> None:
    assert cli.fast_classify_args(argv) is None


CASES = {
    "plain": lambda p, t: ["classify", str(p), "--json"],
    "warnings": lambda p, t: ["classify", str(with_warnings(t)), "--json"],
    "missing snapshot": lambda p, t: ["classify", str(t / "nope.json"), "--json"],
    "not a snapshot": lambda p, t: ["classify", str(t / "bad.json"), "--json"],
    "vmlinux with snapshot": lambda p, t: ["classify", str(p), "-s", "/vmlinux", "--json"],
    "missing vmcore": lambda p, t: ["classify", str(t / "nope.core"), "--json"],
    "missing vmcore, debug": lambda p, t: ["classify", str(t / "nope.core"), "--json", "--debug"],
    "output dir missing": lambda p, t: ["classify", str(p), "--json", "-o", str(t / "no/x")],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_and_typer_paths_agree(case: str, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps({"hello": 1}))
    argv = CASES[case](LAB_SNAPSHOT, tmp_path)
    assert cli.fast_classify_args(argv) is not None
    fast, slow = run_fast(*argv, cwd=tmp_path), run_typer(*argv, cwd=tmp_path)
    assert (fast.returncode, fast.stdout) == (slow.returncode, slow.stdout)
    if case.endswith("debug"):  # tracebacks differ in their frames, not in the last line
        assert "Traceback" in fast.stderr and "Traceback" in slow.stderr
        assert fast.stderr.splitlines()[-1] == slow.stderr.splitlines()[-1]
    else:  # write_atomic's temporary file names are random
        assert TMPNAME.sub("TMP", fast.stderr) == TMPNAME.sub("TMP", slow.stderr)
    if fast.returncode == 0:
        doc = json.loads(fast.stdout)
        assert doc["document"] == "classify" and doc["ranges"]
        assert doc["warnings"] == (["first warning: pgmap 0x1 odd",
                                    "second [bold]not markup[/bold] :smile:"]
                                   if case == "warnings" else [])
        want = [f"subsecinspect: warning: {w}" for w in doc["warnings"]]
        assert fast.stderr.splitlines() == want
    else:
        assert fast.stdout == ""
        assert fast.stderr.splitlines()[-1].startswith("subsecinspect: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["bad.json"] + (["warned.json"] if case == "warnings" else []))


def test_exit_codes_of_the_fast_path(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{}")
    codes = {case: run_fast(*CASES[case](LAB_SNAPSHOT, tmp_path), cwd=tmp_path).returncode
             for case in ("plain", "missing snapshot", "not a snapshot", "vmlinux with snapshot",
                          "missing vmcore", "output dir missing")}
    assert codes == {"plain": 0, "missing snapshot": 3, "not a snapshot": 3,
                     "vmlinux with snapshot": 2, "missing vmcore": 3, "output dir missing": 1}


def test_save_and_output_files_agree(tmp_path: Path) -> None:
    files = {}
    for name, runner in (("fast", run_fast), ("typer", run_typer)):
        d = tmp_path / name
        d.mkdir()
        r = runner("classify", str(LAB_SNAPSHOT), "--json", "--save", "snap.json",
                   "-o", "out.json", cwd=d)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        assert sorted(p.name for p in d.iterdir()) == ["out.json", "snap.json"]
        files[name] = {p.name: p.read_text() for p in d.iterdir()}
    assert files["fast"] == files["typer"]
    # The saved snapshot classifies to the same document (up to its target path).
    d = tmp_path / "fast"
    again = run_fast("classify", "snap.json", "--json", cwd=d)
    first, second = json.loads(files["fast"]["out.json"]), json.loads(again.stdout)
    assert second["target"]["path"] == "snap.json"
    assert {**second, "target": first["target"]} == first


def test_fast_path_imports_no_typer_rich_or_pydantic(tmp_path: Path) -> None:
    argv = ["classify", str(LAB_SNAPSHOT), "--json"]
    blocked = subprocess.run([PY, "-c", BLOCKED, *argv], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
    assert blocked.returncode == 0, blocked.stderr
    assert blocked.stdout == run_typer(*argv, cwd=tmp_path).stdout
    # ... and the same child does need them for everything else (the test can fail).
    tables = subprocess.run([PY, "-c", BLOCKED, "classify", str(LAB_SNAPSHOT)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert tables.returncode != 0 and "is blocked for this test" in tables.stderr


def test_other_command_lines_still_reach_typer(tmp_path: Path) -> None:
    tables = run_fast("classify", str(LAB_SNAPSHOT), cwd=tmp_path)
    assert tables.returncode == 0 and "C2_DEV_VALID" in tables.stdout
    assert not tables.stdout.lstrip().startswith("{")
    # two targets: the typer app's JSON lines (cli/fleet.py), one error line per missing dump
    many = run_fast("classify", "--json", "a", "b", cwd=tmp_path)
    assert many.returncode == 3
    assert [json.loads(ln)["document"] for ln in many.stdout.splitlines()] == [
        "classify_error", "classify_error"]
    usage = run_fast("sections", "--json", "a", "b", cwd=tmp_path)
    assert usage.returncode == 2 and "Got unexpected extra argument" in usage.stderr
    sections = run_fast("sections", str(LAB_SNAPSHOT), "--json", cwd=tmp_path)
    assert sections.returncode == 0 and json.loads(sections.stdout)["document"] == "sections"

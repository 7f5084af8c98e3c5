"""CLI behaviour without a guest: one-line errors, exit codes, atomic writes, no drgn import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from subsecinspect.cli.common import parse_location, write_atomic
from subsecinspect.errors import OptionError

PY = sys.executable


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "subsecinspect", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("4660", (4660, "pfn")),
        ("pfn:0x1234", (0x1234, "pfn")),
        ("pfn:4660", (4660, "pfn")),
        ("0x100000000", (0x100000000, "phys")),
        ("phys:4096", (4096, "phys")),
        ("0x1_0000", (0x10000, "phys")),
    ],
)
def test_parse_location(text: str, want: tuple[int, str]) -> None:
    assert parse_location(text) == want


@pytest.mark.parametrize("text", ["", "zz", "pfn:", "0x", "-5", "1.5"])
def test_parse_location_rejects(text: str, bad_input_record: Any) -> None:
    with pytest.raises(OptionError) as ei:
        parse_location(text)
    bad_input_record(f"bad explain location {text!r}", f"parse_location({text!r})",
                     f"OptionError: {ei.value}", ei.value.exit_code)


def test_missing_target_exit_3(tmp_path: Path, bad_input_record: Any) -> None:
    r = run("classify", str(tmp_path / "nope"))
    bad_input_record("missing vmcore", "classify <tmp>/nope", r.stderr, r.returncode)
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [
        f"subsecinspect: error: no such vmcore: {tmp_path / 'nope'}"
    ]
    assert r.stdout == ""


def test_bad_location_exit_2(tmp_path: Path, bad_input_record: Any) -> None:
    r = run("explain", "zz", str(tmp_path / "nope"))
    bad_input_record("bad location", "explain zz <tmp>/nope", r.stderr, r.returncode)
    assert r.returncode == 2
    assert r.stderr.startswith("subsecinspect: error: bad location 'zz'")
    assert "Traceback" not in r.stderr


def test_json_that_is_not_a_snapshot_exit_3(tmp_path: Path, bad_input_record: Any) -> None:
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"hello": 1}))
    r = run("classify", str(p))
    bad_input_record("JSON that is not a snapshot", 'classify x.json ({"hello": 1})', r.stderr,
                     r.returncode)
    assert r.returncode == 3
    assert "is not a saved subsecinspect snapshot" in r.stderr
    assert "Traceback" not in r.stderr


def test_vmlinux_with_snapshot_is_an_option_error(tmp_path: Path, bad_input_record: Any) -> None:
    p = tmp_path / "x.json"
    p.write_text("{}")
    r = run("sections", str(p), "-s", "/vmlinux")
    bad_input_record("vmlinux with a saved snapshot", "sections x.json -s /vmlinux", r.stderr,
                     r.returncode)
    assert r.returncode == 2
    assert "-s/--vmlinux does not apply" in r.stderr


def test_no_kcore_or_not_root(bad_input_record: Any) -> None:
    r = run("classify")
    if os.path.exists("/proc/kcore") and os.geteuid() == 0:
        pytest.skip("this host has a readable /proc/kcore: the error path cannot be shown here")
    bad_input_record("no /proc/kcore or not root (host)", "classify", r.stderr, r.returncode)
    assert r.returncode == 3
    assert r.stderr.startswith("subsecinspect: error: ")
    assert ("no /proc/kcore" in r.stderr) or ("run as root" in r.stderr)


def test_debug_shows_traceback(tmp_path: Path, bad_input_record: Any) -> None:
    r = run("classify", str(tmp_path / "nope"), "--debug")
    bad_input_record("missing vmcore, --debug", "classify <tmp>/nope --debug", r.stderr,
                     r.returncode)
    assert r.returncode == 3
    assert "Traceback" in r.stderr
    assert r.stderr.rstrip().endswith(f"subsecinspect: error: no such vmcore: {tmp_path / 'nope'}")


def test_cli_does_not_import_drgn() -> None:
    code = "import sys, subsecinspect.cli.main; print('drgn' in sys.modules)"
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_write_atomic_leaves_nothing_on_error(tmp_path: Path, bad_input_record: Any) -> None:
    target = tmp_path / "out.json"

    with pytest.raises(TypeError) as ei:
        write_atomic(str(target), 12345)  # type: ignore[arg-type]
    bad_input_record("error while writing a new output file", "write_atomic(out.json, 12345)",
                     f"{type(ei.value).__name__} propagated; files left: "
                     f"{sorted(p.name for p in tmp_path.iterdir()) or 'none'}", None)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    write_atomic(str(target), "ok\n")
    assert target.read_text() == "ok\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_atomic_keeps_old_file_on_error(tmp_path: Path, bad_input_record: Any) -> None:
    target = tmp_path / "out.json"
    target.write_text("old\n")
    with pytest.raises(TypeError) as ei:
        write_atomic(str(target), None)  # type: ignore[arg-type]
    bad_input_record("error while overwriting an output file", "write_atomic(out.json, None)",
                     f"{type(ei.value).__name__} propagated; out.json holds "
                     f"{target.read_text()!r}; files: {sorted(p.name for p in tmp_path.iterdir())}",
                     None)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_sigterm_leaves_no_partial_output(tmp_path: Path, bad_input_record: Any) -> None:
    # A snapshot big enough that classify is still running when SIGTERM arrives is not
    # available without a guest; instead the signal is delivered while the command waits
    # on a FIFO it is reading as its snapshot. Nothing may be written to -o.
    import signal
    import time

    fifo = tmp_path / "snap.json"
    os.mkfifo(fifo)
    out = tmp_path / "out.json"
    p = subprocess.Popen(
        [PY, "-m", "subsecinspect", "classify", str(fifo), "--json", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(2.0)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    left = "left" if out.exists() else "absent"
    bad_input_record("SIGTERM while classifying", "classify FIFO.json --json -o out.json, "
                     "SIGTERM after 2 s", f"{err.strip()} (-o file {left})", p.returncode)
    assert p.returncode == 143, err
    assert err.strip().splitlines()[-1] == "subsecinspect: error: terminated"
    assert not out.exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["snap.json"]

"""``classify TARGET... --jobs N``: JSON lines in input order, one error line per bad target.

Good saved lab snapshots with a corrupt one (random bytes as a vmcore) and a JSON file that is
no snapshot among them: every good one's line is exactly its ``classify --json`` document, the
bad ones are ``classify_error`` lines with the one-line error and exit code the single-target
CLI gives, and the run's exit code is theirs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cliout import run_cli

LAB = Path(__file__).parent / "fixtures" / "lab"
GOOD = [str(LAB / n) for n in ("nvdimm_mixed_6.1_dump.json", "legacy_pmem_6.1_live.json",
                                "nvdimm_mixed_7.2_dump.json")]


@pytest.fixture
def targets(tmp_path: Path) -> list[str]:
    bad = tmp_path / "garbage.vmcore"
    bad.write_bytes(bytes(range(256)) * 16)
    notsnap = tmp_path / "x.json"
    notsnap.write_text('{"hello": 1}')
    return [GOOD[0], str(bad), GOOD[1], str(notsnap), GOOD[2]]


def test_one_bad_target_is_one_error_line(targets: list[str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "classify", *targets, "--jobs", "3")
    lines = [json.loads(ln) for ln in out.splitlines()]
    assert len(lines) == len(targets)
    assert code == 3
    for target, doc in zip(targets, lines, strict=True):
        single_code, single_out, single_err = run_cli(capsys, "classify", target, "--json")
        if single_code == 0:
            assert doc == json.loads(single_out)
            assert doc["document"] == "classify"
        else:
            assert list(doc) == ["schema_version", "tool_version", "document", "target",
                                 "error", "exit_code"]
            assert doc["document"] == "classify_error" and doc["target"] == {"path": target}
            assert single_err.strip() == f"subsecinspect: error: {doc['error']}"
            assert doc["exit_code"] == single_code == 3
    assert sum(d["document"] == "classify" for d in lines) == 3
    # progress for people on stderr, one line per target when it is not a terminal
    assert len([ln for ln in err.splitlines() if ln.startswith("subsecinspect: [")]) == 5


def test_output_file_holds_every_line(targets: list[str], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "triage.jsonl"
    code, out, _ = run_cli(capsys, "classify", *GOOD, "-j", "2", "-o", str(out_file))
    assert (code, out) == (0, "")
    docs = [json.loads(ln) for ln in out_file.read_text().splitlines()]
    assert [d["target"]["path"] for d in docs] == GOOD


@pytest.mark.parametrize("extra, msg", [
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--save", "s.json"], "several targets or --jobs: JSON lines only"),
    (["-s", "/vmlinux"], "-s/--vmlinux does not apply to a saved snapshot"),
    (["--picture", "p.svg"], "several targets or --jobs: JSON lines only"),
])
def test_bad_options(extra: list[str], msg: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "classify", *GOOD[:2], *extra)
    assert code == 2 and out == "" and msg in err

"""``subsecinspect diff``: the ranges whose class changed, on snapshots built with known changes.

1. Boot RAM only -> the lab's four namespaces (nvdimm_mixed): every device range appears,
   before HOLE (past the old end_pfn), after the class the classifier gives it; nothing below.
2. Namespace A mid-initialisation -> A initialised: only A's PFNs past the frontier change,
   C4_DEV_INITIALISING -> C2_DEV_VALID, with both evidences.
3. A snapshot against itself: no change. The CLI's JSON holds the same changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import snapshot
from cliout import run_cli
from test_classify_cases import K61, memmap_a, nvdimm_mixed, ram

from subsecinspect.classify.classes import PageClass
from subsecinspect.classify.decide import classify
from subsecinspect.classify.diff import diff_classifications
from subsecinspect.snapshot.codec import snapshot_to_json

FRONTIER = 0x108000


def test_hot_added_namespaces_appear() -> None:
    before, after = snapshot(K61, ram(16)), nvdimm_mixed(mm_a=memmap_a())
    changes = diff_classifications(classify(before), classify(after))
    want = [r for r in classify(after).ranges if r.start_pfn >= 16 << 15
            and r.cls != PageClass.HOLE]
    assert [(c.start_pfn, c.end_pfn, c.after) for c in changes] == [
        (r.start_pfn, r.end_pfn, r) for r in want]
    assert {c.before.cls for c in changes} == {PageClass.HOLE}
    back = diff_classifications(classify(after), classify(before))
    assert [(c.start_pfn, c.end_pfn, c.before.cls, c.after.cls) for c in back] == [
        (c.start_pfn, c.end_pfn, c.after.cls, c.before.cls) for c in changes]


def test_initialisation_finishing() -> None:
    mid = nvdimm_mixed(mm_a=memmap_a(frontier_pfn=FRONTIER))
    done = nvdimm_mixed(mm_a=memmap_a())
    changes = diff_classifications(classify(mid), classify(done))
    assert [(c.start_pfn, c.end_pfn, c.before.cls, c.after.cls) for c in changes] == [
        (FRONTIER, 0x10C000, PageClass.C4_DEV_INITIALISING, PageClass.C2_DEV_VALID)]
    assert changes[0].before.evidence["frontier_pfn"] == FRONTIER


def test_no_change() -> None:
    s = nvdimm_mixed(mm_a=memmap_a())
    assert diff_classifications(classify(s), classify(s)) == []


@pytest.mark.parametrize("json_", [True, False])
def test_cli(json_: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "before.json", tmp_path / "after.json"
    a.write_text(snapshot_to_json(nvdimm_mixed(mm_a=memmap_a(frontier_pfn=FRONTIER))))
    b.write_text(snapshot_to_json(nvdimm_mixed(mm_a=memmap_a())))
    code, out, err = run_cli(capsys, "diff", str(a), str(b), *(["--json"] if json_ else []))
    assert code == 0, err
    if not json_:
        assert "C4_DEV_INITIALISING" in out and "C2_DEV_VALID" in out and "1 changed" in out
        return
    doc = json.loads(out)
    assert list(doc)[:5] == ["schema_version", "tool_version", "document", "kernel", "target"]
    assert doc["document"] == "diff" and doc["before"]["target"]["path"] == str(a)
    (c,) = doc["changes"]
    assert (c["start_pfn"], c["end_pfn"], c["before"]["class"], c["after"]["class"]) == (
        FRONTIER, 0x10C000, "C4_DEV_INITIALISING", "C2_DEV_VALID")
    assert c["before"]["evidence"]["frontier_pfn"] == FRONTIER


def test_cli_bad_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "diff", str(tmp_path / "no.json"), str(tmp_path / "b.json"))
    assert code == 3 and out == "" and err.startswith("subsecinspect: error: cannot read snapshot")

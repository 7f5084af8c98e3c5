"""subsecinspect.api returns the documents the command line prints, byte for byte.

On saved lab snapshots (tests/unit/fixtures/lab): for every document, ``api.dumps`` of the
API's answer equals the stdout of the same command line; bad arguments raise the errors whose
exit codes the command line uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cliout import run_cli

from subsecinspect import api
from subsecinspect.errors import OptionError, TargetError

LAB = Path(__file__).parent / "fixtures" / "lab"
SNAPS = [str(LAB / n) for n in ("nvdimm_mixed_6.1_dump.json", "nvdimm_mixed_5.10_live.json",
                                "legacy_pmem_6.1_dump.json")]


@pytest.mark.parametrize("snap", SNAPS, ids=lambda p: Path(p).stem)
def test_documents_equal_the_cli(snap: str, capsys: pytest.CaptureFixture[str]) -> None:
    for cmd, doc in (("classify", api.classification_document(snap)),
                     ("sections", api.sections_document(snap)),
                     ("pgmaps", api.pgmaps_document(snap))):
        code, out, err = run_cli(capsys, cmd, snap, "--json")
        assert code == 0
        assert err.splitlines() == [f"subsecinspect: warning: {w}" for w in doc["warnings"]]
        assert api.dumps(doc) == out, cmd
    assert api.classification_document(snap)["document"] == "classify"


def test_explain_by_pfn_and_by_address_equal_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    snap = SNAPS[0]
    doc = api.classification_document(snap)
    device = next(r for r in doc["ranges"] if r["class"] == "C2_DEV_VALID")
    pfn = device["start_pfn"] + 1
    by_pfn = api.explain_document(snap, pfn)
    by_addr = api.explain_document(snap, phys_addr=pfn << 12 | 0x123)
    assert by_pfn == by_addr
    assert by_pfn["verdict"]["class"] == "C2_DEV_VALID"
    _, out, _ = run_cli(capsys, "explain", f"pfn:{pfn:#x}", snap, "--json")
    assert api.dumps(by_pfn) == out


def test_a_snapshot_object_is_a_source() -> None:
    snap = api.load_saved_snapshot(SNAPS[0])
    assert api.snapshot(snap) is snap
    assert api.classification(snap).end_pfn == api.classification_document(SNAPS[0])["end_pfn"]


@pytest.mark.parametrize("call, exc, msg", [
    (lambda: api.snapshot(SNAPS[0], vmlinux="/vmlinux"), OptionError, "saved snapshot"),
    (lambda: api.explain_document(SNAPS[0]), OptionError, "one of pfn and phys_addr"),
    (lambda: api.explain_document(SNAPS[0], 1, phys_addr=4096), OptionError, "one of"),
    (lambda: api.explain_document(SNAPS[0], -1), OptionError, "negative"),
    (lambda: api.snapshot("/nonexistent/x.json"), TargetError, "cannot read snapshot"),
])
def test_bad_arguments_raise_one_line_errors(call, exc, msg) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc) as info:
        call()
    assert msg in str(info.value) and "\n" not in str(info.value)


def test_a_file_that_is_not_a_snapshot(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(TargetError, match="is not a saved subsecinspect snapshot") as info:
        api.classification_document(bad)
    assert info.value.exit_code == 3

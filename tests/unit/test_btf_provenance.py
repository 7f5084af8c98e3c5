"""The debug-info provenance is recorded in the JSON documents and in saved snapshots."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from subsecinspect.classify.decide import classify
from subsecinspect.render import jsondoc
from subsecinspect.snapshot.codec import snapshot_from_json, snapshot_to_json

FIXTURE = Path(__file__).parent / "fixtures" / "nvdimm_mixed_6.1.json"
BTF = "btf:vmcore:.BTF@0xffffffffaea38070 kallsyms:vmcoreinfo"


def test_document_and_snapshot_carry_the_source() -> None:
    snap = snapshot_from_json(FIXTURE.read_text())
    assert snap.target.debuginfo == ""  # a snapshot saved before the key existed
    doc = jsondoc.classification_document(snap, classify(snap), tool_version="test")
    assert "debuginfo" not in doc["target"]  # a key that does not apply is left out
    snap = dataclasses.replace(snap, target=dataclasses.replace(snap.target, debuginfo=BTF))
    doc = jsondoc.classification_document(snap, classify(snap), tool_version="test")
    assert doc["target"]["debuginfo"] == BTF and doc["schema_version"] == 1
    assert snapshot_from_json(snapshot_to_json(snap)).target.debuginfo == BTF

"""Renderers: golden JSON documents (schema version 1) and the rich tables.

Regenerate the golden files after an intended schema change with
``SUBSECINSPECT_REGEN_GOLDEN=1 pytest tests/unit/test_render.py`` and bump
``SCHEMA_VERSION`` if a key was renamed, removed or retyped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from test_classify_cases import MID_FIRST, memmap_a, mid_init, nvdimm_mixed

from subsecinspect.classify.classes import PageClass
from subsecinspect.classify.decide import classify
from subsecinspect.classify.explain import explain
from subsecinspect.render import jsondoc, picture, tables
from subsecinspect.snapshot.model import Snapshot

FIXTURES = Path(__file__).parent / "fixtures"
REGEN = os.environ.get("SUBSECINSPECT_REGEN_GOLDEN") == "1"


def _snap() -> Snapshot:
    return nvdimm_mixed(mm_a=memmap_a())


def _documents() -> dict[str, dict[str, Any]]:
    snap = _snap()
    c = classify(snap)
    mid = mid_init(MID_FIRST + 2996)
    return {
        "classify": jsondoc.classification_document(snap, c, tool_version="test"),
        "sections": jsondoc.sections_document(snap, tool_version="test"),
        "pgmaps": jsondoc.pgmaps_document(mid, tool_version="test"),
        "explain": jsondoc.explain_document(snap, explain(snap, 0x100001, c),
                                            tool_version="test"),
    }


@pytest.mark.parametrize("name", ["classify", "sections", "pgmaps", "explain"])
def test_golden_document(name: str) -> None:
    doc = _documents()[name]
    text = jsondoc.dumps(doc)
    path = FIXTURES / f"golden_{name}_v{jsondoc.SCHEMA_VERSION}.json"
    if REGEN:
        path.write_text(text)
    assert json.loads(path.read_text()) == json.loads(text)


def _walk(value: Any, where: str = "$") -> None:
    """Shape rules of the style guide: snake_case keys, no floats, no tuples."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str) and k == k.lower() and " " not in k, f"{where}: key {k!r}"
            _walk(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, f"{where}[{i}]")
    else:
        assert value is None or isinstance(value, str | int | bool), f"{where}: {value!r}"
        assert not isinstance(value, float), where


def test_document_shape_rules() -> None:
    for name, doc in _documents().items():
        _walk(doc, name)
        assert list(doc)[:3] == ["schema_version", "tool_version", "document"]
        assert doc["schema_version"] == 1
        assert {"release"} <= set(doc["kernel"]) and doc["kernel"]["vmemmap"].startswith("0x")
        assert {"kind", "path", "format", "page_size"} <= set(doc["target"])


def test_classify_document_ranges_cover_end_and_use_class_names() -> None:
    doc = _documents()["classify"]
    pos = 0
    for r in doc["ranges"]:
        assert r["start_pfn"] == pos
        assert r["class"] in PageClass.__members__
        assert r["phys_start"] == hex(r["start_pfn"] << 12)
        pos = r["end_pfn"]
    assert pos == doc["end_pfn"]
    assert sum(s["pages"] for s in doc["summary"]) == doc["end_pfn"]
    c5 = [s for s in doc["summary"] if s["class"] == "C5_DEV_DRIVER_RESERVED"]
    assert c5 == [{"class": "C5_DEV_DRIVER_RESERVED", "pages": 4, "bytes": 16384, "ranges": 2}]


def _render(renderable: Any) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_tables_show_the_layout() -> None:
    snap = _snap()
    c = classify(snap)
    summary = _render(tables.summary_table(c))
    assert "C5b_DEV_ALTMAP_MEMMAP" in summary and "10.0 MiB" in summary
    ranges = _render(tables.ranges_table(c))
    assert "0x100000000-0x100001fff" in ranges and "C5_DEV_DRIVER_RESERVED" in ranges
    secs = _render(tables.sections_table(snap))
    assert "1" * 40 + "." * 24 in secs and "PARTIAL 40/64" in secs
    pgs = _render(tables.pgmaps_table(snap))
    assert "0x100000/2/1022/510/512" in pgs and "GENERIC" in pgs
    panel = _render(tables.explain_panel(explain(snap, 0x100001, c)))
    assert "C5_DEV_DRIVER_RESERVED" in panel and "pgmap_pfn_valid" in panel and "✗" in panel


def test_picture_one_char_per_subsection() -> None:
    snap = _snap()
    text = picture.section_picture(snap, classify(snap), first_section=37, last_section=37)
    line = text.plain.splitlines()[0]
    assert line.endswith("2" * 40 + "3" * 24)
    head = picture.section_picture(snap, classify(snap), first_section=32, last_section=32)
    assert head.plain.splitlines()[0].split()[-1].startswith("*m2")

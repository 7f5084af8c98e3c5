"""Property tests: classify() on random snapshots against the brute-force oracle."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import oracle_end_pfn, reference_class
from strategies import snapshots

from subsecinspect.classify.classes import MEMMAP_DEPENDENT, PageClass
from subsecinspect.classify.decide import classify, classify_pfn
from subsecinspect.classify.explain import explain
from subsecinspect.render import jsondoc
from subsecinspect.snapshot.model import Snapshot

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: For the cheaper invariants (the brute-force comparison above checks them all anyway).
LIGHT = settings(SETTINGS, max_examples=80)


@LIGHT
@given(snapshots())
def test_ranges_cover_every_pfn_once_sorted_and_maximal(snap: Snapshot) -> None:
    result = classify(snap)
    assert result.end_pfn == oracle_end_pfn(snap)
    pos = 0
    for i, r in enumerate(result.ranges):
        assert r.start_pfn == pos, "gap or overlap"
        assert r.end_pfn > r.start_pfn, "empty range"
        if i:
            assert not result.ranges[i - 1].same_kind(r), "adjacent ranges of one kind not merged"
        pos = r.end_pfn
    assert pos == result.end_pfn


@SETTINGS
@given(snapshots())
def test_classify_equals_brute_force_reference(snap: Snapshot) -> None:
    result = classify(snap)
    for r in result.ranges:
        for pfn in range(r.start_pfn, r.end_pfn):
            cls, conf, pgmap = reference_class(snap, pfn)
            got = (r.cls, r.confidence)
            assert got == (cls, conf), f"pfn {pfn:#x}: classify {got}, reference {(cls, conf)}"
            if cls is not PageClass.CORRUPT or (pgmap and "," in pgmap):
                assert r.evidence.get("pgmap") == pgmap, f"pfn {pfn:#x}"


@LIGHT
@given(snapshots())
def test_classify_pfn_agrees_with_ranges(snap: Snapshot) -> None:
    result = classify(snap)
    for r in result.ranges:
        for pfn in (r.start_pfn, (r.start_pfn + r.end_pfn) // 2, r.end_pfn - 1):
            one = classify_pfn(snap, pfn)
            assert (one.cls, one.evidence_items, one.confidence) == \
                (r.cls, r.evidence_items, r.confidence)
            assert result.lookup(pfn) is r
    assert result.lookup(result.end_pfn) is None


@LIGHT
@given(snapshots())
def test_only_memmap_dependent_classes_are_replaced(snap: Snapshot) -> None:
    """MEMMAP_UNREADABLE / MEMMAP_NOT_CAPTURED only stand in for C2, C4 and C5b, and
    always say which class the lifecycle alone implies."""
    for r in classify(snap).ranges:
        if r.cls in (PageClass.MEMMAP_UNREADABLE, PageClass.MEMMAP_NOT_CAPTURED):
            implied = r.evidence["lifecycle_class"]
            assert implied == "unknown" or PageClass(implied) in MEMMAP_DEPENDENT
            assert r.evidence["memmap"] in ("unreadable", "not_captured")
            assert "pgmap" in r.evidence


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), st.integers(0, 16 * 64))
def test_explain_and_documents_never_fail(snap: Snapshot, pfn: int) -> None:
    """explain(), the predicates and every JSON document work on any snapshot, and the
    explain verdict is the classification's range for that PFN."""
    result = classify(snap)
    e = explain(snap, pfn, result)
    r = result.lookup(pfn)
    assert e.verdict == (r if r is not None else classify_pfn(snap, pfn))
    assert [p.name.split(" ")[0] for p in e.predicates][:3] == \
        ["pfn_valid", "pfn_to_online_page", "get_dev_pagemap"]
    for doc in (jsondoc.classification_document(snap, result), jsondoc.sections_document(snap),
                jsondoc.pgmaps_document(snap), jsondoc.explain_document(snap, e)):
        assert json.loads(jsondoc.dumps(doc)) == doc

"""Property tests: classify() on random snapshots against the brute-force oracle."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from oracle import oracle_end_pfn, reference_class
from strategies import snapshots

from subsecinspect.classify import classify, classify_pfn
from subsecinspect.pageclass import PageClass
from subsecinspect.snapshot import Snapshot

SETTINGS = settings(max_examples=3000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
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
            if cls is not PageClass.CORRUPT or pgmap and "," in pgmap:
                assert r.evidence.get("pgmap") == pgmap, f"pfn {pfn:#x}"


@SETTINGS
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

"""The race checker (vm-images/lab/racecheck.py) and the churn's iomem parsing.

Real ``classify --json`` documents of hand-made snapshots must pass :func:`doc_problems`;
each kind of damage must be caught. :func:`plausibility_problems` is run on synthetic churn
logs.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from test_classify_cases import MID_FIRST, kmem, memmap_a, mid_init, nvdimm_mixed, teardown

from lab.churn import namespace_extent
from lab.racecheck import (
    doc_problems,
    in_flux_spans,
    lives,
    plausibility_problems,
)
from subsecinspect.classify.decide import classify
from subsecinspect.render import jsondoc
from subsecinspect.snapshot.model import Snapshot

S = 0x8000  # PFNs per section
PAGE = 4096


def _doc(snap: Snapshot) -> dict[str, Any]:
    return jsondoc.classification_document(snap, classify(snap), tool_version="test")


def _in_flux(snap: Snapshot, nrs: set[int]) -> Snapshot:
    secs = tuple(dataclasses.replace(s, in_flux=True) if s.section_nr in nrs else s
                 for s in snap.sections)
    return dataclasses.replace(snap, sections=secs)


@pytest.mark.parametrize("build", [
    lambda: nvdimm_mixed(mm_a=memmap_a()), lambda: mid_init(MID_FIRST + 2996), kmem, teardown,
    lambda: _in_flux(nvdimm_mixed(mm_a=memmap_a()), {33, 34}),
], ids=["nvdimm_mixed", "mid_init", "kmem", "teardown", "in_flux"])
def test_real_documents_are_consistent(build: Any) -> None:
    assert doc_problems(_doc(build())) == []


def test_in_flux_spans_are_the_marked_sections() -> None:
    doc = _doc(_in_flux(nvdimm_mixed(mm_a=memmap_a()), {33, 34}))
    assert in_flux_spans(doc) == [(33 * S, 35 * S)]


def _damaged(edit: Any) -> list[str]:
    doc = copy.deepcopy(_doc(nvdimm_mixed(mm_a=memmap_a())))
    edit(doc)
    return doc_problems(doc)


def _c2(doc: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in doc["ranges"] if r["class"] == "C2_DEV_VALID")


def _split(doc: dict[str, Any]) -> None:
    r = _c2(doc)
    i = doc["ranges"].index(r)
    a = dict(r, end_pfn=r["start_pfn"] + 1, phys_end=hex((r["start_pfn"] + 1) * PAGE))
    b = dict(r, start_pfn=r["start_pfn"] + 1, phys_start=hex((r["start_pfn"] + 1) * PAGE))
    doc["ranges"][i:i + 1] = [a, b]
    next(s for s in doc["summary"] if s["class"] == "C2_DEV_VALID")["ranges"] += 1


@pytest.mark.parametrize(("edit", "says"), [
    (lambda d: d["ranges"].pop(1), "starts at"),
    (lambda d: d["ranges"][-1].update(end_pfn=d["ranges"][-1]["end_pfn"] + 1), "end_pfn"),
    (lambda d: _c2(d).update({"class": "C9"}), "unknown class"),
    (lambda d: _c2(d)["evidence"].pop("pgmap"), "no pgmap"),
    (lambda d: d["summary"][0].update(pages=d["summary"][0]["pages"] + 1), "summary"),
    (lambda d: d["summary"][0].update(bytes=1), "bytes"),
    (lambda d: _c2(d).update(phys_start="0x0"), "phys"),
    (_split, "not maximal"),
    (lambda d: d.pop("summary"), "no 'summary'"),
])
def test_damage_is_caught(edit: Any, says: str) -> None:
    problems = _damaged(edit)
    assert any(says in p for p in problems), problems


# --- plausibility against a churn log ----------------------------------------------------------

def _ev(op: str, t0: float, t1: float, name: str, raw: tuple[int, int] = (0, 0),
        rc: int = 0, blocks: dict[str, str] | None = None) -> dict[str, Any]:
    ns = {"name": name, "dev": f"namespace0.{name}", "mode": "fsdax", "map": "mem",
          "raw_start": raw[0] * PAGE, "raw_end": raw[1] * PAGE, "data_start": raw[0] * PAGE}
    return {"op": op, "t0": t0, "t1": t1, "rc": rc, "cmd": op, "ns": ns, "blocks": blocks}


def _doc_of(spans: list[tuple[int, int, str]]) -> dict[str, Any]:
    ev = {"C2_DEV_VALID": {"pgmap": "0x1"}, "IN_FLUX": {"reason": "moved"},
          "HOLE": {"reason": "section not present"}}
    return {"end_pfn": spans[-1][1], "ranges": [
        {"start_pfn": a, "end_pfn": b, "class": c, "evidence": ev.get(c, {})}
        for a, b, c in spans]}


WINDOW = (32 * S, 40 * S)
P = (32 * S, 33 * S)
A = (33 * S, 34 * S + 0x1000)


def _check(doc: dict[str, Any], events: list[dict[str, Any]], t0: float = 10.0,
           t1: float = 20.0) -> list[str]:
    ls, unknown = lives(events, PAGE)
    return plausibility_problems(doc, t0, t1, ls, unknown, WINDOW, S)


def test_stable_namespace_must_be_c2() -> None:
    events = [_ev("create", 1, 2, "P", P)]
    good = _doc_of([(0, 32 * S, "ONLINE_RAM"), (*P, "C2_DEV_VALID"), (33 * S, 40 * S, "HOLE")])
    assert _check(good, events) == []
    bad = _doc_of([(0, 32 * S, "ONLINE_RAM"), (*P, "C1_OFFLINE_RAM"), (33 * S, 40 * S, "HOLE")])
    assert any("P (" in p and "C1_OFFLINE_RAM" in p for p in _check(bad, events))


def test_in_flux_only_where_the_churn_worked() -> None:
    events = [_ev("create", 1, 2, "P", P), _ev("create", 12, 13, "A", A)]
    doc = _doc_of([(0, 32 * S, "ONLINE_RAM"), (*P, "C2_DEV_VALID"), (33 * S, 35 * S, "IN_FLUX"),
                   (35 * S, 40 * S, "HOLE")])
    assert _check(doc, events) == []
    # the same document while nothing happened to A during the run: a false IN_FLUX
    assert any("IN_FLUX" in p for p in _check(doc, events, 30.0, 40.0))
    # and P's section IN_FLUX while only A was created: also false
    doc = _doc_of([(0, 32 * S, "ONLINE_RAM"), (32 * S, 35 * S, "IN_FLUX"),
                   (35 * S, 40 * S, "HOLE")])
    assert any("IN_FLUX" in p for p in _check(doc, events))


def test_free_pmem_must_not_be_device_memory() -> None:
    events = [_ev("create", 1, 2, "P", P), _ev("create", 3, 4, "A", A),
              _ev("destroy", 5, 6, "A")]
    doc = _doc_of([(0, 32 * S, "ONLINE_RAM"), (*P, "C2_DEV_VALID"),
                   (33 * S, 35 * S, "C2_DEV_VALID"), (35 * S, 40 * S, "HOLE")])
    assert any("no namespace held" in p for p in _check(doc, events))


def test_kmem_blocks_follow_their_state() -> None:
    k = (33 * S, 36 * S)
    events = [_ev("create", 1, 2, "K", k), _ev("kmem", 3, 4, "K", k, blocks={"34": "offline"}),
              _ev("online", 5, 6, "K", k, blocks={"34": "online"})]
    doc = _doc_of([(0, 32 * S, "ONLINE_RAM"), (32 * S, 34 * S, "HOLE"),
                   (34 * S, 35 * S, "C1_OFFLINE_RAM"), (35 * S, 40 * S, "HOLE")])
    assert any("block 34 online" in p for p in _check(doc, events))
    doc = _doc_of([(0, 32 * S, "ONLINE_RAM"), (32 * S, 34 * S, "HOLE"),
                   (34 * S, 35 * S, "ONLINE_RAM"), (35 * S, 40 * S, "HOLE")])
    assert _check(doc, events) == []


def test_failed_operation_without_namespace_suspends_the_free_space_check() -> None:
    events = [_ev("create", 1, 2, "P", P), {"op": "create", "t0": 12, "t1": 13, "rc": 1,
                                            "cmd": "ndctl create-namespace", "ns": None}]
    doc = _doc_of([(0, 32 * S, "ONLINE_RAM"), (*P, "C2_DEV_VALID"),
                   (33 * S, 34 * S, "C2_DEV_VALID"), (34 * S, 40 * S, "HOLE")])
    assert _check(doc, events) == []
    assert _check(doc, events, 30, 40) != []


def test_corrupt_is_never_plausible_live() -> None:
    doc = _doc_of([(0, 32 * S, "ONLINE_RAM"), (32 * S, 40 * S, "CORRUPT")])
    assert any("CORRUPT" in p for p in _check(doc, []))


def test_namespace_extent_from_iomem() -> None:
    iomem = [(0x100000000, 0x108000000, "namespace0.0"), (0x108000000, 0x108400000, "namespace0.2"),
             (0x108400000, 0x112000000, "dax0.2")]
    assert namespace_extent(iomem, "namespace0.0", 0x7E00000) == (0x100000000, 0x108000000,
                                                                   0x100200000)
    assert namespace_extent(iomem, "namespace0.2", 0x9C00000) == (0x108000000, 0x112000000,
                                                                   0x108400000)
    assert namespace_extent(iomem, "namespace0.9", 1) is None

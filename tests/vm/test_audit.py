"""Lab tests: ``audit --model kernel`` equals, PFN by PFN, what the running kernel answers.

Per scenario (nvdimm-mixed: four namespaces sharing sections, a partial tail section;
legacy-pmem: e820 pmem inside the early, online System RAM sections 8 and 10) the guest saves
a snapshot (``classify --save``), then the ground-truth module (tests/kmod/subsec_gt, v2) asks
the kernel's own ``pfn_valid()``, ``pfn_to_online_page()``, ``get_dev_pagemap()`` (without the
pfn_valid() guard) and ``pgmap_pfn_valid()`` about every PFN of every pgmap range and of every
partially present section. The kernel model's answers (piecewise, from the snapshot) must equal
them on every one of those PFNs, and so must the memory_failure() walker derived from them.

Where the kernel is known wrong the unsafe ranges are named: the altmap reserve (C5) for
``pfn_valid()`` everywhere; on kernels without the out-of-line ``pfn_to_online_page()``
(5.10: the v5.12 fix 1f90a3477df3 is absent) the C5 reserve inside the online early section
of legacy pmem, which the >= v5.12 form hides. Marker ``lab``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from lab import groundtruth
from lab.groundtruth import GroundTruth
from lab.scenarios import LEGACY_PMEM, NVDIMM_MIXED, Scenario, apply
from subsecinspect.classify.audit.tally import answer_spans, audit
from subsecinspect.classify.classes import PageClass
from subsecinspect.classify.decide import classify
from subsecinspect.snapshot.codec import snapshot_from_json
from subsecinspect.snapshot.model import Snapshot

pytestmark = pytest.mark.lab
#: CI runs this module on the oldest and newest kernel (tests/vm/conftest.py tier_kernels);
#: LAB_MATRIX=full runs all four (vm-images/README.md, "Tiers").
LAB_TIER = "edges"

_SNAP = "/tmp/audit-snapshot.json"
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (NVDIMM_MIXED, LEGACY_PMEM)}


def _audited_spans(snap: Snapshot) -> list[tuple[int, int]]:
    """Every pgmap range and every partially present section, merged."""
    k = snap.kernel
    full = (1 << k.subsections_per_section) - 1
    spans = [(r.start_pfn, r.end_pfn) for pg in snap.pgmaps for r in pg.ranges]
    spans += [(s.section_nr * k.pages_per_section, (s.section_nr + 1) * k.pages_per_section)
              for s in snap.sections
              if s.present and s.subsection_map is not None and s.subsection_map & full != full]
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def observed(request: pytest.FixtureRequest, kernel_id: str, boot_scenario: Any
             ) -> Iterator[tuple[str, Snapshot, dict[int, GroundTruth]]]:
    scenario = SCENARIOS[request.param]
    ko = groundtruth.build(kernel_id)
    with boot_scenario(scenario, kernel_id) as vm:
        apply(vm, scenario)
        vm.run(f"python3 -m subsecinspect classify /proc/kcore --save {_SNAP} >/dev/null",
               timeout=900, check=True)
        snap = snapshot_from_json(vm.get(_SNAP).decode())
        header = groundtruth.load(vm, ko)
        assert header.startswith("subsec_gt v2 "), header
        answers = {g.pfn: g for g in groundtruth.query_spans(vm, _audited_spans(snap))}
    yield scenario.name, snap, answers


def _expected(g: GroundTruth, has_ppv: bool) -> dict[str, bool]:
    """The module's answers as the kernel model's questions (memory_failure() composed
    from them the way mm/memory-failure.c composes the calls)."""
    dev = g.dev_pagemap is not None
    ppv = bool(g.dev_pgmap_pfn_valid)
    out = {"pfn_valid": g.pfn_valid, "pfn_to_online_page": g.online,
           "get_dev_pagemap": dev, "walker:kpageflags": g.online,
           "walker:memory_failure": g.online or (
               g.pfn_valid and g.pgmap is not None and (ppv or not has_ppv))}
    if has_ppv:
        out["pgmap_pfn_valid"] = dev and ppv
    return out


def test_kernel_model_equals_the_running_kernel_on_every_audited_pfn(observed: Any) -> None:
    name, snap, answers = observed
    spans = _audited_spans(snap)
    assert len(answers) == sum(b - a for a, b in spans), name
    model = answer_spans(snap, classify(snap), "kernel")
    has_ppv = snap.kernel.has("pgmap_pfn_valid")
    assert set(model) == set(_expected(next(iter(answers.values())), has_ppv))
    wrong: list[str] = []
    for question, pieces in model.items():
        for a, b, page in pieces:
            for pfn in range(max(a, spans[0][0]), b):
                g = answers.get(pfn)
                if g is not None and _expected(g, has_ppv)[question] is not page:
                    wrong.append(f"{question} {pfn:#x}: model {page}, kernel {not page}")
    assert not wrong, f"{name}: {len(wrong)} mismatches, first {wrong[:5]}"


def _unsafe(snap: Snapshot, question: str) -> list[tuple[int, int, PageClass]]:
    (m,) = audit(snap, classify(snap), ("kernel",)).models
    return m.questions[question].spans("unsafe")


def test_pfn_valid_is_unsafe_exactly_on_the_altmap_reserve(observed: Any) -> None:
    name, snap, _ = observed
    reserve = [(r.start_pfn, r.end_pfn, r.cls) for r in classify(snap).ranges
               if r.cls is PageClass.C5_DEV_DRIVER_RESERVED]
    assert reserve, f"{name}: --map=dev namespaces have an altmap reserve"
    assert _unsafe(snap, "pfn_valid") == reserve, name


def test_pfn_to_online_page_unsafe_only_where_v5_12_was_not_applied(observed: Any) -> None:
    name, snap, _ = observed
    got = _unsafe(snap, "pfn_to_online_page")
    shared = name == "legacy-pmem" and not snap.kernel.has("pfn_to_online_page_fn")
    if not shared:
        assert got == [], (name, got)
        return
    # the macro returns the struct page of every PFN in an online section, so the
    # never-initialised info block of the legacy namespace (early section 8) is handed out
    assert got and {c for _, _, c in got} == {PageClass.C5_DEV_DRIVER_RESERVED}, got
    assert [(hex(a), hex(b)) for a, b, _ in got] == [("0x45000", "0x45002")], got

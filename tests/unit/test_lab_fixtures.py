"""Snapshots saved by the readers from real lab guests (fixtures/lab/), classified offline.

Each pair was read from one guest: live through /proc/kcore inside it, then from
a QMP ELF dump of the same guest on the host (5.10.0-32, 6.1.0-56, 6.12.117,
7.2.12). Ground truth is the declared layout of lab-notes §5.2 (nvdimm-mixed)
and §5.3 (legacy ``memmap=208M!1104M``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from subsecinspect.classify.classes import Classification, PageClass
from subsecinspect.classify.decide import classify
from subsecinspect.classify.explain import explain
from subsecinspect.snapshot.codec import snapshot_from_json
from subsecinspect.snapshot.model import Snapshot
from subsecinspect.snapshot.pageinit import (
    altmap_free_fingerprint,
    data_first_pfn,
    zone_device_memmap_initialised,
)

LAB = Path(__file__).parent / "fixtures" / "lab"
P = PageClass
KERNELS = ["5.10", "6.1", "6.12", "7.2"]
REPLACED = (P.MEMMAP_UNREADABLE, P.MEMMAP_NOT_CAPTURED)


def load(name: str) -> Snapshot:
    return snapshot_from_json((LAB / f"{name}.json").read_text())


def classes_at(c: Classification, pfns: list[int]) -> list[PageClass]:
    return [c.lookup(p).cls for p in pfns]  # type: ignore[union-attr]


# (pfn, class in the dump) for namespaces A-D of lab-notes §5.2.
NVDIMM_TRUTH = [
    (0x100000, P.C5_DEV_DRIVER_RESERVED), (0x100001, P.C5_DEV_DRIVER_RESERVED),
    (0x100002, P.C5b_DEV_ALTMAP_MEMMAP), (0x1003FF, P.C5b_DEV_ALTMAP_MEMMAP),
    (0x100400, P.C2_DEV_VALID), (0x10BFFF, P.C2_DEV_VALID),           # A data
    (0x10C000, P.C2_DEV_VALID), (0x111FFF, P.C2_DEV_VALID),           # B (map=mem)
    (0x112000, P.C2_DEV_VALID), (0x11BFFF, P.C2_DEV_VALID),           # C (map=mem)
    (0x11C000, P.C5_DEV_DRIVER_RESERVED), (0x11C002, P.C5b_DEV_ALTMAP_MEMMAP),
    (0x11C600, P.C2_DEV_VALID), (0x12CFFF, P.C2_DEV_VALID),           # D data
    (0x12D000, P.C3_SUBSECTION_GAP), (0x12FFFF, P.C3_SUBSECTION_GAP),  # section 37 tail
    (0x1000, P.ONLINE_RAM), (0x80000, P.HOLE),
]


@pytest.mark.parametrize("kernel", KERNELS)
def test_nvdimm_dump_matches_declared_layout(kernel: str) -> None:
    c = classify(load(f"nvdimm_mixed_{kernel}_dump"))
    pfns = [p for p, _ in NVDIMM_TRUTH]
    assert classes_at(c, pfns) == [cls for _, cls in NVDIMM_TRUTH]
    assert c.end_pfn == 0x130000
    assert all(r.confidence is None for r in c.ranges)  # nr_range decides on >= 5.10


@pytest.mark.parametrize("kernel", KERNELS)
def test_live_agrees_with_dump_apart_from_unreadable_memmap(kernel: str) -> None:
    """Same guest: every PFN has the dump's class, or MEMMAP_UNREADABLE whose
    lifecycle_class is the dump's class (map=dev memmap through /proc/kcore)."""
    live = classify(load(f"nvdimm_mixed_{kernel}_live"))
    dump = classify(load(f"nvdimm_mixed_{kernel}_dump"))
    assert live.end_pfn == dump.end_pfn
    cuts = sorted({r.start_pfn for r in live.ranges} | {r.start_pfn for r in dump.ranges})
    unreadable = 0
    for pfn in cuts:
        a, b = live.lookup(pfn), dump.lookup(pfn)
        assert a is not None and b is not None
        if a.cls is P.MEMMAP_UNREADABLE:
            assert a.evidence["lifecycle_class"] == b.cls.value, hex(pfn)
            unreadable += 1
        else:
            assert a.cls is b.cls, hex(pfn)
    # A's fully covered section 32 (free pages + data) and D's section 36.
    assert classes_at(live, [0x100002, 0x100400, 0x120000]) == [P.MEMMAP_UNREADABLE] * 3
    assert unreadable >= 3


@pytest.mark.parametrize("kind", ["live", "dump"])
def test_legacy_pmem_in_early_online_sections(kind: str) -> None:
    """memmap=208M!1104M: pmem inside early online sections 8 and 10 is ZONE_DEVICE;
    the RAM before and after it in the same sections stays ONLINE_RAM."""
    c = classify(load(f"legacy_pmem_6.1_{kind}"))
    truth = [(0x44FFF, P.ONLINE_RAM), (0x45000, P.C5_DEV_DRIVER_RESERVED),
             (0x45002, P.C5b_DEV_ALTMAP_MEMMAP), (0x45400, P.C2_DEV_VALID),
             (0x51FFF, P.C2_DEV_VALID), (0x52000, P.ONLINE_RAM)]
    assert classes_at(c, [p for p, _ in truth]) == [cls for _, cls in truth]
    if kind == "live":  # section 9 was hot-added for the pmem: memmap in the altmap
        r = c.lookup(0x48000)
        assert r is not None and r.cls is P.MEMMAP_UNREADABLE
        assert r.evidence["lifecycle_class"] == "C2_DEV_VALID"


@pytest.mark.parametrize("name", sorted(p.stem for p in LAB.glob("*.json")))
def test_real_struct_page_samples_pass_the_fingerprint(name: str) -> None:
    """Every struct page the readers sampled in a complete range is initialised:
    data pages pass §4.4 (incl. 6.x head|1 and 7.x mask|1 tails), altmap free
    pages pass the lru-self fingerprint."""
    snap = load(name)
    pgmaps = {pg.address: pg for pg in snap.pgmaps}
    checked = 0
    for mm in snap.memmaps:
        pg = pgmaps[mm.pgmap]
        rng = next(r for r in pg.ranges if r.index == mm.range_index)
        first = data_first_pfn(pg, rng)
        for s in mm.samples:
            if s.status.value != "read":
                continue
            if s.pfn >= first:
                fp = zone_device_memmap_initialised(s, pg, snap.kernel, snap.zones)
            else:
                fp = altmap_free_fingerprint(s, snap.kernel)
            assert fp, f"{name} pfn {s.pfn:#x}: {fp.reason} {fp.detail}"
            checked += 1
    assert checked >= 4


def test_7x_tail_samples_use_the_mask_encoding() -> None:
    """7.2 devdax (vmemmap_shift 9) tails hold compound_info = mask | 1 (lab-notes §14)
    and pass the fingerprint through the head (checked above)."""
    snap = load("nvdimm_mixed_7.2_dump")
    tails = [s for m in snap.memmaps for s in m.samples if s.pgmap_slot & 1]
    assert tails
    assert all(s.pgmap_slot == 0xFFFFFFFFFFFF8001 for s in tails)


def test_explain_on_real_snapshot() -> None:
    snap = load("nvdimm_mixed_6.1_dump")
    e = explain(snap, 0x100000)
    assert e.verdict.cls is P.C5_DEV_DRIVER_RESERVED
    answers = {p.name.split(" ")[0]: (p.answer, p.correct) for p in e.predicates}
    assert answers["pfn_valid"] == ("1", False)
    assert answers["pgmap_pfn_valid"] == ("false", True)

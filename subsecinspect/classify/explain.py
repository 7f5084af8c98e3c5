"""Explain: the chain of evidence behind one PFN's class.

Walks the same structures as :func:`subsecinspect.classify.decide.classify` for one
PFN and records each step: the ``mem_section`` and its flags, the subsection
bit, the memory block, the ``dev_pagemap`` and range, the altmap arithmetic,
the struct page fingerprint when a sample exists, the verdict, and what the
kernel's own predicates answer (kernel-semantics.md §5.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from subsecinspect.classify.classes import Classification, ClassRange, EvidenceValue
from subsecinspect.classify.decide import classify, classify_pfn
from subsecinspect.classify.lifecycle import complete_and_live, effective_frontier
from subsecinspect.classify.predicates import PredicateAnswer, kernel_answers
from subsecinspect.snapshot.index import SnapshotIndex
from subsecinspect.snapshot.model import DevPagemap, PgmapRange, Snapshot
from subsecinspect.snapshot.pageinit import (
    altmap_free_fingerprint,
    data_first_pfn,
    page_address,
    zone_device_memmap_initialised,
)

__all__ = ("ExplainStep", "Explanation", "explain")

_Items = tuple[tuple[str, EvidenceValue], ...]


@dataclass(frozen=True, slots=True)
class ExplainStep:
    """One link of the chain: a title and ordered (key, value) facts."""

    title: str
    items: _Items

    @property
    def facts(self) -> dict[str, EvidenceValue]:
        return dict(self.items)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything :func:`explain` found for one PFN."""

    pfn: int
    phys_addr: int
    steps: tuple[ExplainStep, ...]
    #: The maximal range holding the PFN (a one-page range beyond the classified end).
    verdict: ClassRange
    predicates: tuple[PredicateAnswer, ...]


def _section_step(ix: SnapshotIndex, pfn: int) -> ExplainStep:
    nr = ix.section_nr(pfn)
    sec = ix.sections.get(nr)
    if sec is None:
        return ExplainStep(f"section {nr}", (("present", False),
                                             ("note", "no mem_section (NULL root or not present)")))
    nsub = ix.kernel.subsections_per_section
    items: list[tuple[str, EvidenceValue]] = [
        ("section_mem_map", f"{sec.section_mem_map:#x}"),
        ("flags", "|".join(sec.flags) or "-"),
        ("map_consistent", sec.map_consistent),
        ("usage", f"{sec.usage:#x}"),
    ]
    if sec.in_flux:
        items.append(("in_flux", True))
    if sec.subsection_map is None:
        items.append(("subsection_map", "unavailable"))
        items.append(("note", "usage unreadable in an early section: CORRUPT" if sec.early else
                      "subsection state unknown: only a complete pgmap range with a live ref "
                      "vouches for it (sparse_add_section ran); elsewhere CORRUPT"))
    else:
        n = bin(sec.subsection_map & ((1 << nsub) - 1)).count("1")
        items.append(("subsection_map", "FULL" if n == nsub else f"PARTIAL {n}/{nsub}"))
        bit = ix.subsection_bit(sec, pfn)
        items.append(("subsection_bit", bool(bit)))
        if sec.early and not bit:
            items.append(("note", "early section: pfn_valid() is true for the whole section"))
    return ExplainStep(f"section {nr}", tuple(items))


def _block_step(ix: SnapshotIndex, pfn: int) -> ExplainStep | None:
    b = ix.block(pfn)
    if b is None:
        if not ix.have_blocks:
            return None
        return ExplainStep("memory block", (("block", "none"),))
    items: list[tuple[str, EvidenceValue]] = [("block_id", b.block_id), ("state", b.state)]
    if b.nid >= 0:
        items.append(("nid", b.nid))
    if b.zone:
        items.append(("zone", b.zone))
    if b.nr_vmemmap_pages:  # memmap_on_memory: the block's first PFNs hold its memmap
        items.append(("nr_vmemmap_pages", b.nr_vmemmap_pages))
        if b.vmemmap_marker:
            items.append(("vmemmap_marker", b.vmemmap_marker))
    nr = ix.section_nr(pfn)
    if any(a <= nr <= z for a, z in ix.snapshot.page_types_read):
        items.append(("page_offline", ix.logically_offline(pfn)))
    return ExplainStep(f"memory block {b.block_id}", tuple(items))


def _pgmap_steps(ix: SnapshotIndex, pfn: int) -> list[ExplainStep]:
    hit = ix.hit(pfn)
    if hit is None:
        lost = ix.snapshot.stat("pgmap_array_unreadable_nodes")
        if not lost:
            return [ExplainStep("dev_pagemap", (("pgmap_array", "no entry"),))]
        return [ExplainStep("dev_pagemap", (
            ("pgmap_array", "no entry found"), ("pgmap_array_unreadable_nodes", lost),
            ("note", "pgmap_array partly unreadable: a !ONLINE PFN without a memory block "
                     "may belong to a lost pgmap (CORRUPT)")))]
    sec = ix.section(pfn)
    steps = []
    for pg, rng in hit.claims:
        items: list[tuple[str, EvidenceValue]] = [
            ("type", pg.type), ("flags", f"{pg.flags:#x}"), ("nr_range", pg.nr_range),
            ("vmemmap_shift", pg.vmemmap_shift), ("ref_dying", pg.ref_dying),
        ]
        if rng is None:
            items.append(("range", "none (xarray entry outside every range)"))
        else:
            items += [("range_index", rng.index), ("range_start_pfn", rng.start_pfn),
                      ("range_end_pfn", rng.end_pfn),
                      ("range_state", "complete" if pg.nr_range < 0 or rng.index < pg.nr_range
                       else "in progress (index >= nr_range)")]
            if complete_and_live(pg, rng) and sec is not None and sec.subsection_map is not None \
                    and not ix.subsection_bit(sec, pfn):
                items.append(("note", "subsection bit clear in a complete range with a live "
                                      "ref: impossible in a healthy kernel (CORRUPT)"))
        steps.append(ExplainStep(f"dev_pagemap {pg.address:#x}", tuple(items)))
        if rng is not None:
            steps += _altmap_and_memmap(ix, pg, rng, pfn)
    return steps


def _altmap_and_memmap(
    ix: SnapshotIndex, pg: DevPagemap, rng: PgmapRange, pfn: int
) -> list[ExplainStep]:
    steps = []
    alt = pg.altmap
    if alt.valid and rng.index == 0:
        r_end = alt.base_pfn + alt.reserve
        f_end = r_end + alt.free
        where = ("reserve (C5)" if alt.base_pfn <= pfn < r_end else
                 "free: memmap storage (C5b)" if r_end <= pfn < f_end else "data")
        steps.append(ExplainStep("altmap", (
            ("base_pfn", alt.base_pfn), ("reserve", alt.reserve), ("free", alt.free),
            ("align", alt.align), ("alloc", alt.alloc),
            ("reserve_pfns", f"[{alt.base_pfn:#x}, {r_end:#x})"),
            ("free_pfns", f"[{r_end:#x}, {f_end:#x})"),
            ("pfn_first", data_first_pfn(pg, rng)), ("pfn_is_in", where))))
    mm = ix.memmap(pg, rng)
    items: list[tuple[str, EvidenceValue]] = [
        ("struct_page", f"{page_address(ix.kernel, pfn):#x}"),
        ("readability", ix.readability(mm, pfn).value),
    ]
    frontier = effective_frontier(ix, pg, rng)
    if frontier is not None:
        items.append(("frontier_pfn", frontier))
    if mm is not None:
        if mm.altmap_free_fingerprint:
            items.append(("altmap_free_fingerprint", mm.altmap_free_fingerprint))
        items.append(("samples", len(mm.samples)))
        for s in mm.samples:
            if s.pfn != pfn:
                continue
            in_free = alt.valid and rng.index == 0 and \
                alt.base_pfn + alt.reserve <= pfn < alt.base_pfn + alt.reserve + alt.free
            fp = (altmap_free_fingerprint(s, ix.kernel) if in_free else
                  zone_device_memmap_initialised(s, pg, ix.kernel, ix.snapshot.zones))
            items += [("sample_flags", f"{s.flags:#x}"),
                      ("sample_pgmap_slot", f"{s.pgmap_slot:#x}"),
                      ("fingerprint", "pass" if fp else f"fail ({fp.reason})"),
                      ("fingerprint_detail", fp.detail)]
            if fp.soft:
                items.append(("soft_signals", ", ".join(fp.soft)))
    steps.append(ExplainStep("memmap", tuple(items)))
    return steps


def explain(
    snapshot: Snapshot, pfn: int, classification: Classification | None = None
) -> Explanation:
    """The chain of evidence for *pfn* (pass *classification* to reuse a previous run)."""
    ix = SnapshotIndex(snapshot)
    k = snapshot.kernel
    steps = [ExplainStep("address", (
        ("pfn", pfn), ("phys_addr", f"{pfn << k.page_shift:#x}"),
        ("section_nr", ix.section_nr(pfn)), ("subsection", ix.subsection_index(pfn))))]
    steps.append(_section_step(ix, pfn))
    block = _block_step(ix, pfn)
    if block is not None:
        steps.append(block)
    steps += _pgmap_steps(ix, pfn)
    result = classification if classification is not None else classify(snapshot)
    verdict = result.lookup(pfn) or classify_pfn(snapshot, pfn, ix)
    preds = kernel_answers(snapshot, pfn, verdict.cls, ix)
    return Explanation(pfn, pfn << k.page_shift, tuple(steps), verdict, preds)

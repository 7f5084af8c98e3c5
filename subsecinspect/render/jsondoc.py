"""The versioned JSON documents of ``classify``, ``sections``, ``pgmaps`` and ``explain``.

Schema version 1. Every document is an object::

    {
      "schema_version": 1,                  # int; bumped on any rename/removal/retype
      "tool_version": "0.1.0",
      "document": "classify",               # "classify" | "sections" | "pgmaps" | "explain"
      "kernel": {"release": str, "page_shift": int, "section_size_bits": int,
                 "max_physmem_bits": int, "struct_page_size": int,
                 "vmemmap": "0x...", "features": [str, ...]},
      "target": {"kind": "live" | "vmcore", "path": str, "format": str, "page_size": int,
                 "dump_max_pfn": int  (only when known)},
      "warnings": [str, ...],
      ...document part...
    }

``classify`` adds::

      "end_pfn": int,                       # every PFN in [0, end_pfn) is in exactly one range
      "summary": [{"class": str, "pages": int, "bytes": int, "ranges": int}, ...],
      "ranges": [{"start_pfn": int,         # inclusive
                  "end_pfn": int,           # exclusive
                  "phys_start": "0x...", "phys_end": "0x...",   # end exclusive
                  "class": str,             # a PageClass name, e.g. "C2_DEV_VALID"
                  "evidence": {str: str | int | bool},
                  "confidence": str}, ...], # only where a fingerprint took part:
                                            # fingerprint | fingerprint_only | unverified | disputed
      "stats": {str: int}                   # counters of the read, e.g. struct_pages_read

Evidence keys (each appears only when it applies): ``reason``, ``pgmap``
("0x..."), ``pgmap_type``, ``range_index``, ``lifecycle`` ("range complete",
"range still initialising", "no nr_range (< v5.10)"), ``fingerprint`` ("pass",
"not examined", "lru_self", "other"), ``frontier_pfn``, ``compound_order``,
``altmap_base_pfn``, ``altmap_reserve``, ``block_state``,
``section_hosts_zone_device``, ``subsection_map`` ("unavailable"), ``memmap``
("unreadable", "not_captured") with ``lifecycle_class`` (the class the
lifecycle metadata alone implies, or "unknown"), ``note``.

``sections`` adds ``"sections"`` (``section_nr``, ``phys_start``,
``section_mem_map``, ``flags`` [str], ``usage``, ``subsection_map`` (hex, absent
if unavailable), ``subsections_present``, ``subsections_total``, ``state``
"FULL"/"PARTIAL"/"EMPTY", ``map_consistent``, ``in_flux``) and
``"memory_blocks"`` (``block_id``, ``start_section_nr``, ``nr_sections``,
``state``, ``nid``, ``zone``).

``pgmaps`` adds ``"pgmaps"``: ``address``, ``type``, ``flags``, ``nr_range``,
``vmemmap_shift``, ``ref_dying``, ``ranges`` [``index``, ``start_pfn``,
``end_pfn``, ``phys_start``, ``phys_end``, ``complete``], ``altmap``
{``valid``, ``base_pfn``, ``end_pfn``, ``reserve``, ``free``, ``align``,
``alloc``, ``inaccessible``}, ``xa_spans`` [{``first_pfn``, ``last_pfn``}],
``memmap`` [{``range_index``, ``first_pfn``, ``end_pfn``, ``frontier_pfn``,
``altmap_free_fingerprint``, ``samples``, ``readability`` [{``start_pfn``,
``end_pfn``, ``status``}]}].

``explain`` adds ``pfn``, ``phys_addr``, ``steps`` [{``title``, ``facts``
{...}}], ``verdict`` (one range object as above) and ``predicates``
[{``name``, ``answer``, ``judgement`` "right" | "wrong" | "uncertain", ``note``}].
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from subsecinspect import __version__
from subsecinspect.classify.classes import Classification, ClassRange
from subsecinspect.snapshot.model import DevPagemap, RangeMemmap, Section, Snapshot

if TYPE_CHECKING:  # the classify fast path does not import explain/predicates
    from subsecinspect.classify.explain import Explanation

__all__ = (
    "SCHEMA_VERSION",
    "classification_document",
    "dumps",
    "explain_document",
    "header",
    "pgmaps_document",
    "range_object",
    "sections_document",
)

SCHEMA_VERSION = 1


def _hex(value: int) -> str:
    return f"{value:#x}"


def _header(snapshot: Snapshot, document: str, tool_version: str | None) -> dict[str, Any]:
    k = snapshot.kernel
    t = snapshot.target
    target: dict[str, Any] = {"kind": t.kind, "path": t.path, "format": t.format,
                              "page_size": k.page_size}
    if t.dump_max_pfn is not None:
        target["dump_max_pfn"] = t.dump_max_pfn
    if t.debuginfo:
        target["debuginfo"] = t.debuginfo
    return {
        "schema_version": SCHEMA_VERSION,
        "tool_version": tool_version if tool_version is not None else __version__,
        "document": document,
        "kernel": {
            "release": k.release, "page_shift": k.page_shift,
            "section_size_bits": k.section_size_bits, "max_physmem_bits": k.max_physmem_bits,
            "struct_page_size": k.struct_page_size, "vmemmap": _hex(k.vmemmap),
            "features": list(k.features),
        },
        "target": target,
        "warnings": list(snapshot.warnings),
    }


def header(snapshot: Snapshot, document: str, tool_version: str | None) -> dict[str, Any]:
    """The common head of every document (also used by :mod:`subsecinspect.render.auditdoc`)."""
    return _header(snapshot, document, tool_version)


def range_object(r: ClassRange, page_shift: int) -> dict[str, Any]:
    """One ``ranges[]`` entry."""
    obj: dict[str, Any] = {
        "start_pfn": r.start_pfn, "end_pfn": r.end_pfn,
        "phys_start": _hex(r.start_pfn << page_shift), "phys_end": _hex(r.end_pfn << page_shift),
        "class": r.cls.value, "evidence": dict(r.evidence_items),
    }
    if r.confidence is not None:
        obj["confidence"] = r.confidence.value
    return obj


def classification_document(
    snapshot: Snapshot, classification: Classification, *, tool_version: str | None = None
) -> dict[str, Any]:
    """The ``classify --json`` document."""
    doc = _header(snapshot, "classify", tool_version)
    shift = snapshot.kernel.page_shift
    doc["end_pfn"] = classification.end_pfn
    doc["summary"] = [
        {"class": s.cls.value, "pages": s.pages, "bytes": s.bytes, "ranges": s.ranges}
        for s in classification.summary()
    ]
    doc["ranges"] = [range_object(r, shift) for r in classification.ranges]
    doc["stats"] = dict(snapshot.stats)
    return doc


def _section_object(s: Section, snapshot: Snapshot) -> dict[str, Any]:
    k = snapshot.kernel
    nsub = k.subsections_per_section
    obj: dict[str, Any] = {
        "section_nr": s.section_nr,
        "phys_start": _hex(s.section_nr << k.section_size_bits),
        "section_mem_map": _hex(s.section_mem_map),
        "flags": list(s.flags),
        "usage": _hex(s.usage),
    }
    if s.subsection_map is not None:
        n = bin(s.subsection_map & ((1 << nsub) - 1)).count("1")
        obj["subsection_map"] = _hex(s.subsection_map)
        obj["subsections_present"] = n
        obj["state"] = "FULL" if n == nsub else "EMPTY" if n == 0 else "PARTIAL"
    obj["subsections_total"] = nsub
    obj["map_consistent"] = s.map_consistent
    obj["in_flux"] = s.in_flux
    return obj


def sections_document(snapshot: Snapshot, *, tool_version: str | None = None) -> dict[str, Any]:
    """The ``sections --json`` document."""
    doc = _header(snapshot, "sections", tool_version)
    doc["sections"] = [_section_object(s, snapshot)
                       for s in sorted(snapshot.sections, key=lambda s: s.section_nr)]
    blocks = []
    for b in sorted(snapshot.memory_blocks, key=lambda b: b.block_id):
        obj: dict[str, Any] = {"block_id": b.block_id, "start_section_nr": b.start_section_nr,
                               "nr_sections": b.nr_sections, "state": b.state}
        if b.nid >= 0:
            obj["nid"] = b.nid
        if b.zone:
            obj["zone"] = b.zone
        blocks.append(obj)
    doc["memory_blocks"] = blocks
    return doc


def _memmap_object(m: RangeMemmap) -> dict[str, Any]:
    obj: dict[str, Any] = {"range_index": m.range_index, "first_pfn": m.first_pfn,
                           "end_pfn": m.end_pfn}
    if m.frontier_pfn is not None:
        obj["frontier_pfn"] = m.frontier_pfn
    if m.altmap_free_fingerprint:
        obj["altmap_free_fingerprint"] = m.altmap_free_fingerprint
    obj["samples"] = len(m.samples)
    obj["readability"] = [{"start_pfn": a, "end_pfn": b, "status": st.value}
                          for a, b, st in m.readability]
    return obj


def _pgmap_object(pg: DevPagemap, snapshot: Snapshot) -> dict[str, Any]:
    shift = snapshot.kernel.page_shift
    a = pg.altmap
    return {
        "address": _hex(pg.address), "type": pg.type, "flags": pg.flags,
        "nr_range": pg.nr_range, "vmemmap_shift": pg.vmemmap_shift, "ref_dying": pg.ref_dying,
        "ranges": [{"index": r.index, "start_pfn": r.start_pfn, "end_pfn": r.end_pfn,
                    "phys_start": _hex(r.start_pfn << shift), "phys_end": _hex(r.end_pfn << shift),
                    "complete": r.complete} for r in pg.ranges],
        "altmap": {"valid": a.valid, "base_pfn": a.base_pfn, "end_pfn": a.end_pfn,
                   "reserve": a.reserve, "free": a.free, "align": a.align, "alloc": a.alloc,
                   "inaccessible": a.inaccessible},
        "xa_spans": [{"first_pfn": f, "last_pfn": last} for f, last in pg.xa_spans],
        "memmap": [_memmap_object(m) for m in snapshot.memmaps if m.pgmap == pg.address],
    }


def pgmaps_document(snapshot: Snapshot, *, tool_version: str | None = None) -> dict[str, Any]:
    """The ``pgmaps --json`` document."""
    doc = _header(snapshot, "pgmaps", tool_version)
    doc["pgmaps"] = [_pgmap_object(pg, snapshot) for pg in snapshot.pgmaps]
    return doc


_JUDGEMENT = {True: "right", False: "wrong", None: "uncertain"}


def explain_document(
    snapshot: Snapshot, explanation: Explanation, *, tool_version: str | None = None
) -> dict[str, Any]:
    """The ``explain --json`` document."""
    doc = _header(snapshot, "explain", tool_version)
    doc["pfn"] = explanation.pfn
    doc["phys_addr"] = _hex(explanation.phys_addr)
    doc["steps"] = [{"title": s.title, "facts": dict(s.items)} for s in explanation.steps]
    doc["verdict"] = range_object(explanation.verdict, snapshot.kernel.page_shift)
    doc["predicates"] = [
        {"name": p.name, "answer": p.answer, "judgement": _JUDGEMENT[p.correct], "note": p.note}
        for p in explanation.predicates
    ]
    return doc


def dumps(document: dict[str, Any]) -> str:
    """Serialise a document (2-space indent, trailing newline)."""
    return json.dumps(document, indent=2) + "\n"

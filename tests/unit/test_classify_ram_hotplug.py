"""Hot-added RAM cases: virtio-mem's PageOffline sub-blocks and memmap_on_memory's vmemmap.

Layouts as measured in the lab (tests/vm/test_ram_hotplug.py, today-memory-notes.md): 1 GiB
of boot RAM, hot-added blocks from section 32 (PFN 0x100000), 128 MiB sections and blocks.
"""

from __future__ import annotations

from dataclasses import replace

from builders import K61, ONLINE_EARLY, PRESENT, block, section, snapshot

from subsecinspect.classify.classes import PageClass
from subsecinspect.classify.decide import classify, classify_pfn
from subsecinspect.render.picture import CLASS_CHARS
from subsecinspect.render.tables import CLASS_STYLES
from subsecinspect.snapshot.codec import snapshot_from_json, snapshot_to_json
from subsecinspect.snapshot.model import Snapshot

P = PageClass
ONLINE = (*PRESENT, "IS_ONLINE")
S = 0x8000


def _spans(snap: Snapshot, lo: int, hi: int) -> list[tuple[int, int, PageClass]]:
    out = []
    for r in classify(snap).ranges:
        a, b = max(lo, r.start_pfn), min(hi, r.end_pfn)
        if a < b:
            out.append((a, b, r.cls))
    return out


def virtio_mem_300m() -> Snapshot:
    """Blocks 32-34 online; the unplugged sub-blocks of block 34, 0x112c00-0x117fff, offline."""
    secs = [section(i, ONLINE_EARLY) for i in range(8)] + [section(n, ONLINE) for n in (32, 33, 34)]
    blocks = [block(i, "online") for i in (*range(8), 32, 33, 34)]
    return replace(snapshot(K61, secs, blocks=blocks), logically_offline=((0x112C00, 0x118000),),
                   page_types_read=((32, 34),))


def test_virtio_mem_unplugged_sub_blocks_are_logically_offline() -> None:
    assert _spans(virtio_mem_300m(), 0x100000, 0x118000) == [
        (0x100000, 0x112C00, P.ONLINE_RAM),
        (0x112C00, 0x118000, P.RAM_LOGICALLY_OFFLINE),
    ]
    r = classify_pfn(virtio_mem_300m(), 0x112C00)
    assert r.evidence["page_type"] == "offline"


def test_page_offline_spans_in_offline_sections_do_not_count() -> None:
    """A !ONLINE section's memmap is garbage: a stale PageOffline there is still C1."""
    snap = virtio_mem_300m()
    secs = tuple(section(n, PRESENT) if n == 34 else s
                 for n, s in ((s.section_nr, s) for s in snap.sections))
    snap = replace(snap, sections=secs, memory_blocks=tuple(
        replace(b, state="offline") if b.block_id == 34 else b for b in snap.memory_blocks))
    assert _spans(snap, 0x110000, 0x118000) == [(0x110000, 0x118000, P.C1_OFFLINE_RAM)]


def memmap_on_memory(state: str) -> Snapshot:
    """A 128 MiB pc-dimm as block 32 whose first 512 PFNs hold its memmap."""
    flags = ONLINE if state == "online" else PRESENT
    secs = [section(i, ONLINE_EARLY) for i in range(8)] + [section(32, flags)]
    blocks = [block(i, "online") for i in range(8)] + [
        replace(block(32, state), nr_vmemmap_pages=512,
                vmemmap_marker="vmemmap_self_hosted+reserved" if state == "online" else "")]
    return snapshot(K61, secs, blocks=blocks)


def test_memmap_on_memory_online_vmemmap_pages_are_self_hosted() -> None:
    snap = memmap_on_memory("online")
    assert _spans(snap, 0x100000, 0x108000) == [
        (0x100000, 0x100200, P.RAM_VMEMMAP_SELF_HOSTED),
        (0x100200, 0x108000, P.ONLINE_RAM),
    ]
    ev = classify_pfn(snap, 0x100000).evidence
    assert ev["nr_vmemmap_pages"] == 512 and ev["marker"] == "vmemmap_self_hosted+reserved"


def test_memmap_on_memory_offline_block_is_c1_with_the_vmemmap_noted() -> None:
    snap = memmap_on_memory("offline")
    assert _spans(snap, 0x100000, 0x108000) == [(0x100000, 0x100200, P.C1_OFFLINE_RAM),
                                                (0x100200, 0x108000, P.C1_OFFLINE_RAM)]
    assert classify_pfn(snap, 0x100000).evidence["memmap_on_memory"] is True
    assert "memmap_on_memory" not in classify_pfn(snap, 0x100200).evidence


def test_new_fields_round_trip_and_the_classes_have_a_style_and_a_char() -> None:
    for snap in (virtio_mem_300m(), memmap_on_memory("online")):
        assert snapshot_from_json(snapshot_to_json(snap)) == snap
    for cls in (P.RAM_LOGICALLY_OFFLINE, P.RAM_VMEMMAP_SELF_HOSTED):
        assert cls in CLASS_STYLES and cls in CLASS_CHARS
    assert len(set(CLASS_CHARS.values())) == len(CLASS_CHARS)


def test_a_snapshot_without_the_new_fields_still_loads() -> None:
    """Saved before this change: no logically_offline / nr_vmemmap_pages keys."""
    text = snapshot_to_json(snapshot(K61, [section(0, ONLINE_EARLY)], blocks=[block(0, "online")]))
    doc = text.replace(', "logically_offline": [], "page_types_read": []', "")
    doc = doc.replace(', "nr_vmemmap_pages": 0, "vmemmap_marker": ""', "")
    assert "logically_offline" not in doc and "nr_vmemmap_pages" not in doc
    assert snapshot_from_json(doc).memory_blocks[0].nr_vmemmap_pages == 0
    assert S == K61.pages_per_section

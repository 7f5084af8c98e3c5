"""RAM without a dev_pagemap: online, logically offline, self-hosted vmemmap, offline.

Step 4 of kernel-semantics.md §4.3 with its sub-states. Mirrors what the kernel records
for hot-added memory in mm/memory_hotplug.c (``online_pages()``,
``mhp_init_memmap_on_memory()``), drivers/virtio/virtio_mem.c (``PageOffline()`` on
unplugged sub-blocks, ``virtio_mem_set_fake_offline()``) and drivers/base/memory.c
(``memory_block_online()``). A pure function of the snapshot, like
:mod:`subsecinspect.classify.decide`, which calls :func:`decide_ram`.
"""

from __future__ import annotations

from subsecinspect.classify.classes import EvidenceValue, PageClass, evidence_items
from subsecinspect.snapshot.index import SnapshotIndex
from subsecinspect.snapshot.model import Section

__all__ = ("RamDecision", "decide_ram")

RamDecision = tuple[PageClass, tuple[tuple[str, EvidenceValue], ...], None]


def _online(ix: SnapshotIndex, pfn: int, state: str | None) -> RamDecision:
    """An online section: the memmap is initialised; what the page itself is.

    The vmemmap pages of memmap_on_memory come first: ``mhp_init_memmap_on_memory()``
    marks them ``PageVmemmapSelfHosted()`` and never frees them to the buddy. Then
    ``PageOffline()`` (the reader read it where :data:`Snapshot.page_types_read` says).
    """
    vb = ix.vmemmap_block(pfn)
    if vb is not None:
        return (PageClass.RAM_VMEMMAP_SELF_HOSTED,
                evidence_items(block_state=state, memory_block=vb.block_id,
                               nr_vmemmap_pages=vb.nr_vmemmap_pages,
                               marker=vb.vmemmap_marker or None), None)
    if ix.logically_offline(pfn):
        return (PageClass.RAM_LOGICALLY_OFFLINE,
                evidence_items(block_state=state, page_type="offline",
                               reason="PageOffline(): no memory behind the page"), None)
    return PageClass.ONLINE_RAM, evidence_items(block_state=state), None


def decide_ram(ix: SnapshotIndex, sec: Section, pfn: int) -> RamDecision:
    """§4.3 step 4: subsection valid, no dev_pagemap.

    ONLINE → :func:`_online`; otherwise C1 with the memory-block state. The vmemmap
    pages of an offline memmap_on_memory block stay C1 (their own struct pages are
    initialised only by ``mhp_init_memmap_on_memory()`` at online time, 6.1-7.2), with
    ``memmap_on_memory`` in the evidence.
    """
    block = ix.block(pfn)
    if sec.online:
        return _online(ix, pfn, block.state if block is not None and block.state != "online"
                       else None)
    if block is not None:
        state = block.state
    elif ix.snapshot.stat("pgmap_array_unreadable_nodes") > 0:
        # ZONE_DEVICE never gets a memory block: this may be a lost pgmap's range.
        return (PageClass.CORRUPT,
                evidence_items(reason="pgmap_array unreadable", block_state="none"), None)
    else:
        state = "none (add_memory in progress)" if ix.have_blocks else "unknown"
    mom = True if ix.vmemmap_block(pfn) is not None else None
    return PageClass.C1_OFFLINE_RAM, evidence_items(block_state=state, memmap_on_memory=mom), None

"""Memory hotplug blocks: the ``memory_blocks`` xarray and ``struct memory_block`` states.

Mirrors drivers/base/memory.c (``memory_blocks``, ``find_memory_block_by_id()``,
``sections_per_block``) and the ``MEM_*`` states of include/linux/memory.h.
"""

from __future__ import annotations

import drgn
from drgn import Object, Program

from subsecinspect.kernel.features import constant
from subsecinspect.kernel.hotplug_ram import memory_block_vmemmap_pages
from subsecinspect.kernel.pagemap import xa_spans
from subsecinspect.snapshot.model import KernelInfo, MemoryBlock

__all__ = (
    "memory_block_state_name",
    "read_memory_blocks",
)

#: include/linux/memory.h #defines (before the v6.19 enum, 1a4f70f6851a).
_OLD_STATES = {
    1 << 0: "online",
    1 << 1: "going-offline",
    1 << 2: "offline",
    1 << 3: "going-online",
    1 << 4: "cancel-online",
    1 << 5: "cancel-offline",
    1 << 6: "prepare-online",
    1 << 7: "finish-offline",
}


def memory_block_state_name(prog: Program, state: int) -> str:
    """``MEM_ONLINE`` -> "online", ... ; "unknown(N)" otherwise."""
    try:
        t = prog.type("enum memory_block_state")
    except LookupError:
        return _OLD_STATES.get(state, f"unknown({state})")
    for e in t.enumerators or ():
        if e.value == state:
            return e.name.removeprefix("MEM_").lower().replace("_", "-")
    return f"unknown({state})"


def _block(prog: Program, addr: int, per_block: int) -> MemoryBlock:
    mb = Object(prog, "struct memory_block *", addr)[0].read_()
    zone = ""
    if mb.type_.has_member("zone"):
        zp = mb.zone.read_()
        if zp.value_():
            try:
                zone = zp.name.string_().decode(errors="replace")
            except drgn.FaultError:
                zone = ""
    start = mb.start_section_nr.value_()
    return MemoryBlock(
        block_id=start // per_block if per_block else start,
        start_section_nr=start,
        nr_sections=per_block,
        state=memory_block_state_name(prog, mb.state.value_()),
        nid=mb.nid.value_() if mb.type_.has_member("nid") else -1,
        zone=zone,
        nr_vmemmap_pages=memory_block_vmemmap_pages(mb),
    )


def read_memory_blocks(prog: Program, ki: KernelInfo) -> tuple[list[MemoryBlock], list[str]]:
    """Every memory block and its state (empty without CONFIG_MEMORY_HOTPLUG)."""
    per_block = constant(prog, "sections_per_block", 1) or 1
    warnings: list[str] = []
    addrs: list[int] = []
    try:
        xa = prog["memory_blocks"].address_of_().value_()
    except (KeyError, LookupError):
        # Before "drivers/base/memory: use xarray" blocks were only on the
        # memory subsystem bus; drgn's helper walks that.
        try:
            from drgn.helpers.linux.mm import for_each_memory_block

            addrs = [m.value_() for m in for_each_memory_block(prog)]
        except (KeyError, LookupError, drgn.FaultError) as e:
            return [], [f"memory blocks unreadable: {e}"]
    else:
        spans, warnings = xa_spans(prog, xa)
        addrs = [v for _, _, v in spans]
    blocks: list[MemoryBlock] = []
    for a in addrs:
        try:
            blocks.append(_block(prog, a, per_block))
        except drgn.FaultError as e:
            warnings.append(f"struct memory_block at {a:#x} is unreadable: {e}")
    blocks.sort(key=lambda b: b.start_section_nr)
    return blocks, warnings

"""The C types of the kernel globals the readers use, which BTF does not carry.

Each entry cites the kernel file that defines the variable (x86_64, v5.10-v7.2).
"""

from __future__ import annotations

__all__ = ("GLOBAL_TYPES",)

#: Globals the readers read (``prog["name"]``), their C type, and the file declaring it.
#: ``mem_section`` is decided from VMCOREINFO by the gate (pointer or array).
#: An ``int`` is declared ``unsigned int`` where the kernel's type changed between
#: ``int`` and ``unsigned long`` (``sections_per_block``: int in 5.10, unsigned long
#: since v6.x): the low half of a little-endian word is the value either way.
GLOBAL_TYPES: dict[str, str] = {
    "mem_section": "struct mem_section **",  # mm/sparse.c, SPARSEMEM_EXTREME (v4.15+)
    "__highest_present_section_nr": "unsigned long",  # mm/sparse.c
    "vmemmap_base": "unsigned long",  # arch/x86/mm/kaslr.c
    "page_offset_base": "unsigned long",  # arch/x86/mm/kaslr.c
    "nr_node_ids": "unsigned int",  # mm/page_alloc.c (mm/mm_init.c since v6.4)
    "sections_per_block": "unsigned int",  # drivers/base/memory.c
    "node_data": "struct pglist_data *[]",  # arch/x86/mm/numa.c, length MAX_NUMNODES
    "contig_page_data": "struct pglist_data",  # mm/memblock.c, CONFIG_NUMA=n
    "init_mm": "struct mm_struct",  # mm/init-mm.c
    "pgmap_array": "struct xarray",  # mm/memremap.c
    "memory_blocks": "struct xarray",  # drivers/base/memory.c (v5.9+)
    "memory_subsys": "struct bus_type",  # drivers/base/memory.c
    "init_uts_ns": "struct uts_namespace",  # init/version.c
}

"""Raw ``struct page`` reads: the words the fingerprint needs, never an Object per page.

Reads ``pfn_to_page()`` for SPARSEMEM_VMEMMAP (``vmemmap + pfn``, from
:mod:`subsecinspect.snapshot.pageinit`) and follows ``compound_head()``
(include/linux/page-flags.h). Every struct page read goes through
:class:`PageReader`, which counts them (``Snapshot.stats["struct_pages_read"]``).
"""

from __future__ import annotations

import struct

import drgn
from drgn import Program

from subsecinspect.snapshot.model import KernelInfo, MemmapStatus, PageSample
from subsecinspect.snapshot.pageinit import page_address

__all__ = ("PageReader",)


class PageReader:
    """Reads struct pages of one target and counts them."""

    def __init__(self, prog: Program, ki: KernelInfo) -> None:
        self.prog = prog
        self.ki = ki
        self.pages_read = 0

    def raw(self, pfn: int) -> bytes:
        """The bytes of ``pfn_to_page(pfn)``.

        :raises drgn.FaultError: the vmemmap page is not readable.
        """
        self.pages_read += 1
        return self.prog.read(page_address(self.ki, pfn), self.ki.struct_page_size)

    def raw_span(self, pfn: int, count: int) -> bytes:
        """The bytes of *count* consecutive struct pages (one read)."""
        self.pages_read += count
        return self.prog.read(page_address(self.ki, pfn), count * self.ki.struct_page_size)

    def _words(self, data: bytes) -> tuple[int, int, int, int]:
        ki = self.ki
        flags = struct.unpack_from("<Q", data, ki.page_flags_offset)[0]
        slot = struct.unpack_from("<Q", data, ki.page_pgmap_offset)[0]
        refcount = struct.unpack_from("<i", data, ki.page_refcount_offset)[0]
        mapcount = (
            struct.unpack_from("<i", data, ki.page_mapcount_offset)[0]
            if ki.page_mapcount_offset >= 0
            else 0
        )
        return flags, slot, refcount, mapcount

    def head_address(self, pfn: int, slot: int) -> int:
        """The head page of a tail whose compound word is *slot* (bit 0 set).

        Since Linux kernel commit 8c846c879e22 ("mm: rework compound_head() for
        power-of-2 sizeof(struct page)") (in v7.1) the word may be a mask.
        """
        if self.ki.has("compound_info_mask"):
            return page_address(self.ki, pfn) & slot & ~1
        return slot - 1

    def sample(self, pfn: int) -> PageSample:
        """One struct page (and its head if it is a tail), as a :class:`PageSample`.

        A fault gives ``status=UNREADABLE`` with drgn's message in ``error``;
        the caller refines it to NOT_CAPTURED for dumps.
        """
        try:
            data = self.raw(pfn)
        except drgn.FaultError as e:
            return PageSample(pfn=pfn, status=MemmapStatus.UNREADABLE, error=str(e))
        flags, slot, refcount, mapcount = self._words(data)
        head_flags = head_slot = None
        if slot & 1:
            head = self.head_address(pfn, slot)
            try:
                self.pages_read += 1
                hdata = self.prog.read(head, self.ki.struct_page_size)
                head_flags, head_slot, _, _ = self._words(hdata)
            except drgn.FaultError:
                head_flags = head_slot = None
        return PageSample(
            pfn=pfn,
            status=MemmapStatus.READ,
            flags=flags,
            pgmap_slot=slot,
            refcount=refcount,
            mapcount=mapcount,
            head_flags=head_flags,
            head_pgmap_slot=head_slot,
        )

    def flags_of(self, data: bytes, index: int) -> int:
        """``page->flags`` of the *index*-th struct page in a :meth:`raw_span` buffer."""
        return struct.unpack_from(
            "<Q", data, index * self.ki.struct_page_size + self.ki.page_flags_offset
        )[0]

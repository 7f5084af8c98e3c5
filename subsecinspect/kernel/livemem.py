"""Live memmaps that ``/proc/kcore`` cannot read, served through BPF as drgn memory.

``/proc/kcore`` (fs/proc/kcore.c) has segments for System RAM and the vmemmap that
describes it. A ZONE_DEVICE range whose pgmap has a valid ``vmem_altmap`` (ndctl
``--map=dev``) gets its memmap from the device itself: ``memremap_pages()`` ->
``pagemap_range()`` -> ``arch_add_memory()`` -> ``vmemmap_populate()`` allocates the
vmemmap blocks from the altmap (mm/sparse-vmemmap.c ``altmap_alloc_block_buf()``), so
drgn's page-table walk lands on a device physical address that no kcore segment holds.
:func:`attach_device_memmaps` adds a drgn virtual memory segment over the vmemmap of
exactly those ranges (the ranges of pgmaps with ``PGMAP_ALTMAP_VALID``; such a pgmap has
one range, ``memremap_pages()`` refuses an altmap with more), read with
:class:`~subsecinspect.probes.memmap_read.MemmapReader`. The segment is added last, so
it wins over kcore's for those addresses; where part of such a memmap came from RAM (a
partial section's base pages) BPF reads that too.

Reads are cached in blocks for the duration of one snapshot read: drgn does not cache,
and the readers' samples touch the same 256 KiB blocks again and again. A chunk that
faults raises :class:`drgn.FaultError` naming the BPF error, which the readers record as
MEMMAP_UNREADABLE with that text, never as zeros.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import drgn
from drgn import Program

from subsecinspect.snapshot.model import DevPagemap, KernelInfo, TargetInfo

__all__ = ("DeviceMemmapSource", "attach_device_memmaps", "device_memmap_spans")

#: Blocks kept per snapshot read (:data:`~subsecinspect.probes.memmap_read.CHUNKS`
#: chunks each): 64 x 256 KiB bounds the cache at 16 MiB whatever the device size.
_CACHE_BLOCKS = 64


def device_memmap_spans(ki: KernelInfo, pgmaps: list[DevPagemap]) -> list[tuple[int, int]]:
    """Kernel virtual ``[start, end)`` of the struct pages of every altmap pgmap's ranges.

    Merged and sorted; page aligned (ranges start and end on a sub-section: 2 MiB of
    PFNs is 512 struct pages). Dying pgmaps are left out: their memmap may be freed
    under us, and the classifier never reads it (C4b).
    """
    spans: list[tuple[int, int]] = []
    for pg in pgmaps:
        if not pg.altmap.valid or pg.ref_dying:
            continue
        for r in pg.ranges:
            a = ki.vmemmap + r.start_pfn * ki.struct_page_size
            b = ki.vmemmap + r.end_pfn * ki.struct_page_size
            spans.append((a & ~0xFFF, (b + 0xFFF) & ~0xFFF))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


class DeviceMemmapSource:
    """The read callback of the segments: block cache over a BPF reader.

    *read_chunks(address, n)* returns ``(bytes, return codes)`` for *n* chunks of
    *chunk* bytes (:meth:`~subsecinspect.probes.memmap_read.MemmapReader.read`);
    requests never leave *spans*.
    """

    def __init__(
        self,
        read_chunks: Callable[[int, int], tuple[bytes, tuple[int, ...]]],
        spans: list[tuple[int, int]],
        chunk: int,
        chunks: int,
        errname: Callable[[int], str],
    ) -> None:
        self._read_chunks = read_chunks
        self._spans = spans
        self._chunk = chunk
        self._block = chunk * chunks
        self._errname = errname
        self._starts = [a for a, _ in spans]
        self._cache: OrderedDict[tuple[int, int], tuple[int, bytes, tuple[int, ...]]] = (
            OrderedDict()
        )
        self.closed = False

    def close(self) -> None:
        """Forget every block (they would go stale) and refuse further reads."""
        self.closed = True
        self._cache.clear()

    def _span_of(self, address: int) -> tuple[int, int]:
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and address < self._spans[i][1]:
            return self._spans[i]
        raise drgn.FaultError("address outside the BPF-read memmap segments", address)

    def _block_at(self, address: int) -> tuple[int, bytes, tuple[int, ...]]:
        """The cached block holding *address*: ``(start, bytes, codes)``.

        A block is the part of one span inside one aligned :data:`_block` window (two
        spans may share a window), so it always holds *address*.
        """
        lo, hi = self._span_of(address)
        base = address - address % self._block
        key = (lo, base)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        if self.closed:
            raise drgn.FaultError("the BPF memmap reader is closed (the snapshot was read)",
                                  address)
        start, end = max(base, lo), min(base + self._block, hi)
        try:
            data, codes = self._read_chunks(start, (end - start) // self._chunk)
        except Exception as e:  # bpf(2) itself failed: this block is not known
            raise drgn.FaultError(f"BPF read failed: {e}", address) from None
        entry = (start, data, codes)
        self._cache[key] = entry
        if len(self._cache) > _CACHE_BLOCKS:
            self._cache.popitem(last=False)
        return entry

    def read(self, address: int, count: int, offset: int, physical: bool) -> bytes:
        """drgn's segment callback: *count* bytes at the virtual *address*."""
        out = bytearray()
        a, end = address, address + count
        while a < end:
            start, data, codes = self._block_at(a)
            take = min(end, start + len(data)) - a
            first, last = (a - start) // self._chunk, (a + take - 1 - start) // self._chunk
            for i in range(first, last + 1):
                if codes[i]:
                    where = start + i * self._chunk
                    raise drgn.FaultError(
                        f"bpf_probe_read_kernel: {self._errname(codes[i])} ({codes[i]})",
                        max(where, a),
                    )
            out += data[a - start : a - start + take]
            a += take
        return bytes(out)


@contextmanager
def attach_device_memmaps(
    prog: Program, ki: KernelInfo, pgmaps: list[DevPagemap], target: TargetInfo, enabled: bool
) -> Iterator[tuple[dict[str, int], list[str]]]:
    """While the block runs, serve the device-resident memmaps of a live target via BPF.

    Yields ``(stats, warnings)``: stats ``memmap_bpf_calls`` / ``memmap_bpf_bytes`` are
    filled in when the block ends; a warning says why the memmaps stay unreadable when
    BPF is off (``--no-bpf``) or cannot run. Dumps and targets without such memmaps load
    nothing. The program is unloaded when the block ends, however it ends.
    """
    stats: dict[str, int] = {}
    warnings: list[str] = []
    spans = device_memmap_spans(ki, pgmaps) if target.kind == "live" else []
    if not spans:
        yield stats, warnings
        return
    size = sum(b - a for a, b in spans) // ki.struct_page_size
    if not enabled:
        warnings.append(f"--no-bpf: the on-device memmap of {size} pages is not read "
                        "(/proc/kcore maps System RAM only): MEMMAP_UNREADABLE")
        yield stats, warnings
        return
    from subsecinspect.probes import memmap_read

    try:
        reader = memmap_read.MemmapReader.load()
    except memmap_read.ReaderUnavailable as e:
        warnings.append(f"BPF memmap reader unavailable ({e}): the on-device memmap of "
                        f"{size} pages is MEMMAP_UNREADABLE (/proc/kcore maps System RAM only)")
        yield stats, warnings
        return
    source = DeviceMemmapSource(reader.read, spans, memmap_read.CHUNK, memmap_read.CHUNKS,
                                memmap_read.errno_text)
    try:
        for a, b in spans:
            prog.add_memory_segment(a, b - a, source.read)
        yield stats, warnings
    finally:
        source.close()
        reader.close()
        stats.update(memmap_bpf_calls=reader.calls, memmap_bpf_bytes=reader.bytes)

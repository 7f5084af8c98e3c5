"""The BPF memmap source without a kernel: the header contract, the spans, the block cache.

The reader itself (bcc, the verifier, real faults) is tested in the lab:
tests/vm/test_livemem.py.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import drgn
import pytest

from subsecinspect.kernel.livemem import DeviceMemmapSource, device_memmap_spans
from subsecinspect.probes import memmap_read as M
from tests.unit.builders import K61, VMEMMAP, altmap, pgmap

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "memmap_read.h"


def _define(name: str) -> int:
    m = re.search(rf"^#define {name}\s+(\d+)", HEADER.read_text(), re.M)
    assert m, f"{name} not in {HEADER}"
    return int(m[1])


def _struct_fields(name: str) -> list[tuple[str, str]]:
    body = re.search(rf"struct {name} \{{(.*?)\}};", HEADER.read_text(), re.S)
    assert body, f"struct {name} not in {HEADER}"
    out = []
    for line in body[1].splitlines():
        line = line.split("/*")[0].strip()
        if line:
            m = re.fullmatch(r"(\w+)\s+(\w+)(\[[\w *]+\])?;", line)
            assert m, f"cannot parse {line!r}"
            out.append((m[2], m[1] + (m[3] or "")))
    return out


_C = {"__u64": ctypes.c_uint64, "__u32": ctypes.c_uint32, "__s32": ctypes.c_int32,
      "__u8": ctypes.c_uint8}


def _ctype(decl: str) -> object:
    base, _, dim = decl.partition("[")
    t = _C[base]
    if dim:
        names = {"MEMMAP_READ_CHUNKS": M.CHUNKS, "MEMMAP_READ_CHUNK": M.CHUNK}
        n = 1
        for factor in dim.rstrip("]").split("*"):
            factor = factor.strip()
            n *= names[factor] if factor in names else int(factor)
        return t * n
    return t


def test_constants_match_the_header() -> None:
    assert (M.CHUNK, M.CHUNKS, M.NOT_ASKED) == (
        _define("MEMMAP_READ_CHUNK"), _define("MEMMAP_READ_CHUNKS"),
        _define("MEMMAP_READ_NOT_ASKED"),
    )  # fmt: skip


@pytest.mark.parametrize(("cname", "cls"), [("memmap_read_req", M.Request),
                                            ("memmap_read_block", M.Block)])
def test_structs_match_the_header(cname: str, cls: type[ctypes.Structure]) -> None:
    c = _struct_fields(cname)
    py = [(f[0], f[1]) for f in cls._fields_]
    assert [n for n, _ in c] == [n for n, _ in py]
    for (name, decl), (_, t) in zip(c, py, strict=True):
        want = _ctype(decl)
        assert ctypes.sizeof(t) == ctypes.sizeof(want), name  # type: ignore[arg-type]


def test_spans_cover_altmap_pgmaps_only_merged_and_page_aligned() -> None:
    dev = pgmap(0xA000, [(0x100000, 0x108000)], alt=altmap(0x100000, 0x108000, 2, 512))
    dev2 = pgmap(0xB000, [(0x108000, 0x110000)], alt=altmap(0x108000, 0x110000, 2, 512))
    mem = pgmap(0xC000, [(0x110000, 0x118000)])  # --map=mem: its memmap is in RAM
    dying = pgmap(0xD000, [(0x118000, 0x120000)], alt=altmap(0x118000, 0x120000, 2, 512),
                  ref_dying=True)
    spans = device_memmap_spans(K61, [mem, dev2, dying, dev])
    assert spans == [(VMEMMAP + 0x100000 * 64, VMEMMAP + 0x110000 * 64)]
    assert all(a % 4096 == 0 and b % 4096 == 0 for a, b in spans)


class FakeKernel:
    """Kernel memory for the source: byte i of the span is ``i & 0xff``; some chunks fault."""

    def __init__(self, base: int, size: int, faults: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.base, self.size, self.faults = base, size, faults
        self.requests: list[tuple[int, int]] = []

    def read_chunks(self, address: int, n: int) -> tuple[bytes, tuple[int, ...]]:
        self.requests.append((address, n))
        assert self.base <= address and address + n * M.CHUNK <= self.base + self.size
        data = bytearray()
        codes = []
        for i in range(n):
            a = address + i * M.CHUNK
            if a in self.faults:
                data += bytes(M.CHUNK)  # what bpf_probe_read_kernel() leaves: zeros
                codes.append(-14)
            else:
                data += bytes((a - self.base + j) & 0xFF for j in range(M.CHUNK))
                codes.append(0)
        return bytes(data), tuple(codes)


BASE = VMEMMAP + 0x100000 * 64
SIZE = 3 * M.CHUNK * M.CHUNKS + 5 * M.CHUNK  # not a whole number of blocks


def _source(k: FakeKernel) -> DeviceMemmapSource:
    return DeviceMemmapSource(k.read_chunks, [(k.base, k.base + k.size)], M.CHUNK, M.CHUNKS,
                              M.errno_text)


def _want(off: int, n: int) -> bytes:
    return bytes((off + j) & 0xFF for j in range(n))


def test_reads_cross_chunks_and_blocks_and_are_cached() -> None:
    k = FakeKernel(BASE, SIZE)
    src = _source(k)
    off = M.CHUNK * M.CHUNKS - 100  # straddles the first block boundary
    assert src.read(BASE + off, 300, off, False) == _want(off, 300)
    assert len(k.requests) == 2
    assert src.read(BASE + off + 10, 64, off + 10, False) == _want(off + 10, 64)
    assert len(k.requests) == 2  # served from the cache


def test_requests_never_leave_the_span() -> None:
    k = FakeKernel(BASE, SIZE)
    src = _source(k)
    last = SIZE - 64
    assert src.read(BASE + last, 64, last, False) == _want(last, 64)
    (a, n), = k.requests
    assert a + n * M.CHUNK == BASE + SIZE
    with pytest.raises(drgn.FaultError, match="outside"):
        src.read(BASE + SIZE, 8, SIZE, False)


def test_a_faulting_chunk_is_a_fault_never_zeros() -> None:
    bad = BASE + 5 * M.CHUNK
    k = FakeKernel(BASE, SIZE, {bad})
    src = _source(k)
    assert src.read(BASE + 4 * M.CHUNK, 64, 4 * M.CHUNK, False) == _want(4 * M.CHUNK, 64)
    with pytest.raises(drgn.FaultError, match=r"EFAULT \(-14\)") as e:
        src.read(BASE + 5 * M.CHUNK - 32, 64, 5 * M.CHUNK - 32, False)
    assert e.value.address == bad


def test_two_spans_in_one_window_are_kept_apart() -> None:
    """pgmaps whose memmaps end and start inside one 256 KiB window, with a gap between."""
    k1 = FakeKernel(BASE, 3 * M.CHUNK)
    k2 = FakeKernel(BASE + 10 * M.CHUNK, 4 * M.CHUNK)

    def read_chunks(address: int, n: int) -> tuple[bytes, tuple[int, ...]]:
        return (k1 if address < k2.base else k2).read_chunks(address, n)

    src = DeviceMemmapSource(read_chunks, [(k1.base, k1.base + k1.size),
                                           (k2.base, k2.base + k2.size)],
                             M.CHUNK, M.CHUNKS, M.errno_text)  # fmt: skip
    assert src.read(BASE + 8, 8, 8, False) == _want(8, 8)
    assert src.read(k2.base + 8, 8, 0, False) == _want(8, 8)
    with pytest.raises(drgn.FaultError, match="outside"):
        src.read(BASE + 5 * M.CHUNK, 8, 0, False)  # the gap
    assert k1.requests == [(BASE, 3)] and k2.requests == [(k2.base, 4)]


def test_closed_source_refuses_and_forgets() -> None:
    k = FakeKernel(BASE, SIZE)
    src = _source(k)
    src.read(BASE, 64, 0, False)
    src.close()
    with pytest.raises(drgn.FaultError, match="closed"):
        src.read(BASE, 64, 0, False)


def test_the_cache_is_bounded() -> None:
    big = 80 * M.CHUNK * M.CHUNKS
    k = FakeKernel(BASE, big)
    src = _source(k)
    for i in range(80):
        src.read(BASE + i * M.CHUNK * M.CHUNKS, 8, i * M.CHUNK * M.CHUNKS, False)
    src.read(BASE, 8, 0, False)  # evicted long ago: read again
    assert len(k.requests) == 81

"""SPARSEMEM sections: ``mem_section`` roots, section flags and subsection maps.

Mirrors ``__nr_to_section()``, ``valid_section()``, ``early_section()``,
``pfn_section_valid()`` (include/linux/mmzone.h) and ``sparse_init_one_section()``
(mm/sparse.c). Reads in bulk: one ``prog.read`` per root (``SECTIONS_PER_ROOT``
sections, 4 KiB on x86_64) decoded with :mod:`struct`, and the
``mem_section_usage`` objects grouped into as few reads as their addresses
allow (boot sections' usages are one memblock array per node).
"""

from __future__ import annotations

import dataclasses
import operator
import struct
from collections.abc import Iterable
from functools import reduce
from itertools import compress

import drgn
from drgn import Program, TypeKind, offsetof, sizeof

from subsecinspect.errors import ReadError
from subsecinspect.kernel.features import constant, section_flag_masks
from subsecinspect.snapshot.model import KernelInfo, Section

__all__ = (
    "RawSection",
    "SectionWords",
    "changed_sections",
    "decode_section_flags",
    "read_raw_sections",
    "read_sections",
    "read_subsection_maps",
)

#: A run of usage objects closer than this is read with one prog.read.
_USAGE_GAP = 16 * 1024

RawSection = tuple[int, int, int]
"""``(section_nr, section_mem_map, usage)``."""


@dataclasses.dataclass(frozen=True, slots=True)
class SectionWords:
    """What :func:`read_sections` read, undecoded: the live guard compares it whole."""

    raw: list[RawSection]
    #: Section numbers of unreadable roots.
    damaged: set[int]
    #: usage address -> subsection map, for the usages of valid sections.
    maps: dict[int, int]


def decode_section_flags(prog: Program, section_mem_map: int) -> tuple[str, ...]:
    """Names of the flags set in *section_mem_map* (without ``SECTION_``)."""
    masks = section_flag_masks(prog)
    return tuple(
        name for name, mask in masks.items() if name != "MAP_MASK" and section_mem_map & mask
    )


def _layout(prog: Program) -> tuple[int, int, int, int]:
    ms = prog.type("struct mem_section")
    return (
        sizeof(ms),
        offsetof(ms, "section_mem_map"),
        offsetof(ms, "usage") if ms.has_member("usage") else -1,
        constant(prog, "SECTIONS_PER_ROOT", 1) or 1,
    )


def _decode_root(
    data: bytes, first_nr: int, count: int, size: int, off_map: int, off_usage: int
) -> list[RawSection]:
    # struct mem_section is a whole number of u64 words: take the two columns with strided
    # slices of one u64 view instead of unpacking section by section.
    words = memoryview(data).cast("Q")
    stride = size // 8
    smms = words[off_map // 8 :: stride][:count]
    usages = words[off_usage // 8 :: stride][:count] if off_usage >= 0 else (0,) * count
    # Keep the sections whose word or usage is non-zero; iterated in C (thousands per root).
    keep = map(operator.or_, smms, usages)
    rows = zip(range(first_nr, first_nr + count), smms, usages, strict=True)
    return list(compress(rows, keep))


def read_raw_sections(
    prog: Program, ki: KernelInfo
) -> tuple[list[RawSection], list[str], set[int]]:
    """Every non-empty section up to ``__highest_present_section_nr``.

    Mirrors ``for_each_present_section()`` but also keeps non-present sections
    whose word or usage is non-zero (teardown leftovers).

    :return: (sections, warnings, section numbers whose root was unreadable)
    :raises ReadError: the ``mem_section`` root table itself is unreadable or NULL.
    """
    size, off_map, off_usage, per_root = _layout(prog)
    highest = ki.highest_present_section_nr
    nr_roots_total = constant(prog, "NR_SECTION_ROOTS", highest // per_root + 1) or 1
    nr_roots = min(highest // per_root + 1, nr_roots_total)
    ms_obj = prog["mem_section"]
    kind = ms_obj.type_.unaliased_kind()
    warnings: list[str] = []
    damaged: set[int] = set()
    out: list[RawSection] = []
    try:
        if kind == TypeKind.POINTER:
            # SPARSEMEM_EXTREME: struct mem_section **mem_section; roots are
            # allocated lazily by sparse_index_init() and may be NULL.
            table = ms_obj.value_()
            if not table:
                raise ReadError("mem_section is NULL (dump taken before sparse_init?)")
            raw = prog.read(table, 8 * nr_roots)
            roots = struct.unpack(f"<{nr_roots}Q", raw)
        else:
            # !EXTREME: a static 2-D array, no NULL roots.
            base = ms_obj.address_
            roots = tuple(base + r * per_root * size for r in range(nr_roots))
    except drgn.FaultError as e:
        raise ReadError(f"cannot read the mem_section root table: {e}") from None
    for r, root in enumerate(roots):
        if not root:
            continue
        first = r * per_root
        count = min(per_root, highest + 1 - first)
        try:
            data = prog.read(root, count * size)
        except drgn.FaultError as e:
            warnings.append(
                f"mem_section root {r} (sections {first}-{first + count - 1}) at "
                f"{root:#x} is unreadable: {e}"
            )
            damaged.update(range(first, first + count))
            continue
        out.extend(_decode_root(data, first, count, size, off_map, off_usage))
    return out, warnings, damaged


def _subsection_map_layout(prog: Program) -> tuple[int, int] | None:
    usage_t = prog.type("struct mem_section_usage")
    if not usage_t.has_member("subsection_map"):
        return None
    member_t = usage_t.member("subsection_map").type
    return offsetof(usage_t, "subsection_map"), sizeof(member_t)


def _decode_map(data: bytes, off: int, nbytes: int) -> int:
    return int.from_bytes(data[off : off + nbytes], "little")


def read_subsection_maps(
    prog: Program, usages: Iterable[int]
) -> tuple[dict[int, int], dict[int, str]]:
    """``usage->subsection_map`` for each usage address, in grouped reads.

    :return: (usage address -> map, usage address -> read error text)
    """
    layout = _subsection_map_layout(prog)
    maps: dict[int, int] = {}
    errors: dict[int, str] = {}
    if layout is None:
        return maps, errors
    off, nbytes = layout
    unique = set(usages)
    unique.discard(0)
    addrs = sorted(unique)
    # Usages are kmalloc'd (8-byte aligned): then a run's maps are words of one u64 view.
    words_ok = nbytes == 8 and not reduce(operator.or_, addrs, 0) & 7
    runs: list[list[int]] = []
    for a in addrs:
        if runs and a - runs[-1][0] + off + nbytes <= _USAGE_GAP:
            runs[-1].append(a)
        else:
            runs.append([a])
    for run in runs:
        start = run[0] + off
        length = run[-1] - run[0] + nbytes
        try:
            data = prog.read(start, length)
        except drgn.FaultError:
            data = None
        r0 = run[0]
        if data is not None and words_ok:
            words = memoryview(data).cast("Q")
            maps.update(zip(run, [words[(a - r0) >> 3] for a in run], strict=True))
            continue
        for a in run:
            if data is not None:
                maps[a] = _decode_map(data, a - r0, nbytes)
                continue
            try:
                maps[a] = _decode_map(prog.read(a + off, nbytes), 0, nbytes)
            except drgn.FaultError as e:
                errors[a] = str(e)
    return maps, errors


def _valid_usages(prog: Program, raw: list[RawSection]) -> list[int]:
    """The usage addresses of valid sections: usage is only trusted with SECTION_HAS_MEM_MAP
    (kernel-semantics §1.4)."""
    has_mem_map = section_flag_masks(prog)["HAS_MEM_MAP"]
    return [u for _, smm, u in raw if smm & has_mem_map]


def read_sections(
    prog: Program, ki: KernelInfo
) -> tuple[list[Section], list[str], SectionWords]:
    """All non-empty sections as :class:`Section` records, warnings, and the words read.

    A section whose usage cannot be read keeps ``subsection_map=None`` and
    gets a warning; a section in an unreadable root is reported with
    ``map_consistent=False`` (the classifier labels it CORRUPT).
    """
    raw, warnings, damaged = read_raw_sections(prog, ki)
    masks = section_flag_masks(prog)
    map_mask = masks["MAP_MASK"]
    has_mem_map = masks["HAS_MEM_MAP"]
    maps, errors = read_subsection_maps(prog, _valid_usages(prog, raw))
    sections: list[Section] = []
    flag_names: dict[int, tuple[str, ...]] = {}  # a handful of distinct flag words per kernel
    for nr, smm, usage in raw:
        fbits = smm & ~map_mask
        flags = flag_names.get(fbits)
        if flags is None:
            flags = flag_names[fbits] = decode_section_flags(prog, fbits)
        valid = bool(smm & has_mem_map)
        sub = maps.get(usage) if valid and usage else None
        if valid and usage and usage in errors:
            warnings.append(
                f"section {nr}: mem_section_usage at {usage:#x} is unreadable "
                f"({errors[usage]}); its subsection map is unknown"
            )
        consistent = (not valid) or (smm & map_mask) == ki.vmemmap
        # positional: section_nr, section_mem_map, flags, usage, subsection_map, map_consistent
        sections.append(Section(nr, smm, flags, usage, sub, consistent))
    for nr in sorted(damaged):
        sections.append(
            Section(
                section_nr=nr, section_mem_map=0, flags=(), usage=0, subsection_map=None,
                map_consistent=False,
            )
        )
    sections.sort(key=lambda s: s.section_nr)
    return sections, warnings, SectionWords(raw, damaged, maps)


def changed_sections(
    prog: Program, ki: KernelInfo, sections: Iterable[Section], first: SectionWords
) -> set[int]:
    """Live guard: section numbers whose word, usage or subsection map changed.

    Re-reads the roots and the usage maps (kernel-semantics §4.3 step 6), up to the
    ``__highest_present_section_nr`` of now: sections that section_mark_present() added
    above the first read's highest (a namespace created meanwhile) count as changed.
    When the words and maps equal ``first`` (the words :func:`read_sections` decoded into
    ``sections``) nothing is compared section by section.
    """
    highest = constant(prog, "__highest_present_section_nr")
    if highest is not None and highest > ki.highest_present_section_nr:
        ki = dataclasses.replace(ki, highest_present_section_nr=highest)
    try:
        raw, _, damaged = read_raw_sections(prog, ki)
    except ReadError:
        return {s.section_nr for s in sections}
    if raw == first.raw and damaged == first.damaged:
        # Same words: the same valid sections, whose maps are all the comparison below reads.
        maps, _ = read_subsection_maps(prog, _valid_usages(prog, raw))
        if maps == first.maps:
            return set()
    else:
        maps, _ = read_subsection_maps(prog, (u for _, _, u in raw))
    before = {s.section_nr: s for s in sections}
    now = {nr: (smm, usage) for nr, smm, usage in raw}
    changed: set[int] = set(damaged)
    for nr in set(before) | set(now):
        old = before.get(nr)
        smm, usage = now.get(nr, (0, 0))
        if old is None:
            changed.add(nr)
            continue
        if nr in damaged:
            continue
        if old.section_mem_map != smm or old.usage != usage:
            changed.add(nr)
        elif old.subsection_map is not None and maps.get(usage) != old.subsection_map:
            changed.add(nr)
    return changed

"""Probe points of ``subsec_trace``: which the running kernel has, from /proc/kallsyms.

Feature detection only, never the release string (kernel-semantics.md §6):

* ``pfn_to_online_page`` is a function since v5.12 (9f605f260594 "mm: move
  pfn_to_online_page() out of line"); before it is a macro and has no symbol, so the
  walkers' own entry points (kpageflags_read, stable_page_flags, ...) carry the detection;
* gcc clones (``.constprop.N``, ``.part.N``, ``.isra.N``) are attached under their clone
  name and reported as such (``.cold`` parts are never entry points);
* ``hwpoison_inject`` lives in a module and exists only while it is loaded;
* functions on the kprobe blacklist are refused by the kernel: reported, not attached.

Pure: the caller passes the texts of /proc/kallsyms and /sys/kernel/debug/kprobes/blacklist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from subsecinspect.probes.procfs import TEXT_TYPES, parse_kallsyms

__all__ = ("HOT_OFF", "PROBES", "Planned", "ProbeSpec", "Skipped", "plan", "symbols")


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """A kernel function and the BPF handlers attached to it."""

    function: str
    entry: str | None
    ret: str | None
    role: str  # "lifecycle" | "walker"
    #: Why it matters (shown when it cannot be attached).
    why: str
    #: A missing lifecycle probe with ``required`` makes the tracer refuse to start.
    required: bool = False
    #: Called once per PFN by the kernel's own walkers (/proc/kpageflags, compaction): a
    #: kprobe+kretprobe there costs several times the walk itself under TCG, so these are
    #: attached only on request (``--hot-walkers``); fentry/fexit (:attr:`fentry`) halve
    #: the cost but it stays far above the 2 % budget (scripts/bench_trace.py).
    hot: bool = False
    #: bcc ``kfunc__<function>`` / ``kretfunc__<function>`` programs exist for it (built
    #: with -DSUBSEC_FENTRY=1); the kprobe handlers remain the fallback.
    fentry: bool = False
    fexit: bool = False


#: Every probe point of bpf/subsec_trace.bpf.c, in attach order (lifecycle first).
PROBES: tuple[ProbeSpec, ...] = (
    ProbeSpec("memremap_pages", "on_memremap_pages", "on_memremap_pages_ret", "lifecycle",
              "opens the C4 window of every pgmap range", required=True),
    ProbeSpec("memmap_init_zone_device", "on_mizd", "on_mizd_ret", "lifecycle",
              "its return closes the C4 window of a range", required=True),
    ProbeSpec("memunmap_pages", "on_memunmap_pages", "on_memunmap_pages_ret", "lifecycle",
              "teardown (C4b) and removal of the pgmap's windows", required=True),
    ProbeSpec("move_pfn_range_to_zone", "on_move_pfn_range", "on_move_pfn_range_ret",
              "lifecycle", "memmap of onlined memory initialised (C1 closes)"),
    ProbeSpec("add_memory_resource", "on_add_memory_resource", "on_add_memory_resource_ret",
              "lifecycle", "hot-added memory: C1 opens"),
    ProbeSpec("add_memory", "on_add_memory", None, "lifecycle", "hot-add front door"),
    ProbeSpec("__add_memory", "on___add_memory", None, "lifecycle", "hot-add front door"),
    ProbeSpec("add_memory_driver_managed", "on_add_memory_driver_managed", None, "lifecycle",
              "hot-add front door (kmem)"),
    ProbeSpec("online_pages", "on_online_pages", "on_online_pages_ret", "lifecycle",
              "onlining a memory block"),
    ProbeSpec("offline_pages", "on_offline_pages", "on_offline_pages_ret", "lifecycle",
              "offlining a memory block: C1 reopens"),
    ProbeSpec("online_mem_sections", "on_online_mem_sections", None, "lifecycle",
              "sections turn ONLINE"),
    ProbeSpec("offline_mem_sections", "on_offline_mem_sections", None, "lifecycle",
              "sections lose ONLINE"),
    ProbeSpec("sparse_add_section", "on_sparse_add_section", None, "lifecycle",
              "pfn_valid() turns true"),
    ProbeSpec("sparse_remove_section", "on_sparse_remove_section", None, "lifecycle",
              "the section's memmap goes away"),
    ProbeSpec("remove_pfn_range_from_zone", "on_remove_pfn_range", None, "lifecycle",
              "memmap poisoned (DEBUG_VM) / stale"),
    ProbeSpec("pfn_to_online_page", "on_pfn_to_online_page", "on_pfn_to_online_page_ret",
              "walker", "returns a page for an unsafe PFN (a function since v5.12)", hot=True,
              fentry=True, fexit=True),
    ProbeSpec("get_dev_pagemap", "on_get_dev_pagemap", "on_get_dev_pagemap_ret", "walker",
              "returns the live pgmap of C4/C5 PFNs"),
    ProbeSpec("pgmap_pfn_valid", "on_pgmap_pfn_valid", "on_pgmap_pfn_valid_ret", "walker",
              "says true for C4 PFNs"),
    ProbeSpec("memory_failure", "on_memory_failure", None, "walker",
              "touches the folio of C4 PFNs"),
    ProbeSpec("soft_offline_page", "on_soft_offline_page", None, "walker",
              "checks pfn_to_online_page (note only)"),
    ProbeSpec("unpoison_memory", "on_unpoison_memory", None, "walker",
              "checks pfn_to_online_page (note only)"),
    ProbeSpec("hwpoison_inject", "on_hwpoison_inject", None, "walker",
              "pfn_valid + pfn_to_page, no online check (module hwpoison_inject)"),
    ProbeSpec("stable_page_flags", "on_stable_page_flags", None, "walker",
              "reads the struct page it is given", hot=True, fentry=True),
    ProbeSpec("dump_page", "on_dump_page", None, "walker", "reads the struct page it is given"),
    ProbeSpec("kpageflags_read", "on_kpageflags_read", None, "walker",
              "/proc/kpageflags range (note only)"),
    ProbeSpec("kpagecount_read", "on_kpagecount_read", None, "walker",
              "/proc/kpagecount range (note only)"),
    ProbeSpec("kpagecgroup_read", "on_kpagecgroup_read", None, "walker",
              "/proc/kpagecgroup range (note only)"),
)

_CLONE = re.compile(r"^(?P<base>[A-Za-z0-9_]+)\.(?P<kind>constprop|part|isra|llvm)\.\d+$")


@dataclass(frozen=True, slots=True)
class Planned:
    """A probe that will be attached to ``symbol`` (the function or its clone)."""

    spec: ProbeSpec
    symbol: str
    module: str = ""

    @property
    def clone(self) -> bool:
        return self.symbol != self.spec.function


@dataclass(frozen=True, slots=True)
class Skipped:
    """A probe that will not be attached, and why."""

    spec: ProbeSpec
    reason: str


def symbols(kallsyms: str) -> dict[str, list[tuple[str, str]]]:
    """Text symbols by base name: ``{base: [(symbol, module), ...]}`` (exact name first)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for _, kind, name, module in parse_kallsyms(kallsyms):
        if kind not in TEXT_TYPES:
            continue
        if name.endswith(".cold") or ".cold." in name:
            continue
        m = _CLONE.match(name)
        base = m["base"] if m else name
        lst = out.setdefault(base, [])
        if (name, module) not in lst:
            if name == base:
                lst.insert(0, (name, module))
            else:
                lst.append((name, module))
    return out


def _blacklisted(blacklist: str) -> set[str]:
    names = set()
    for line in blacklist.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            names.add(parts[1])
    return names


HOT_OFF = "per-PFN hot path, off by default (--hot-walkers)"


def plan(
    kallsyms: str, blacklist: str = "", specs: tuple[ProbeSpec, ...] = PROBES, hot: bool = False,
    hot_off: str = HOT_OFF,
) -> tuple[list[Planned], list[Skipped]]:
    """Decide, per probe, the symbol to attach to or why it is skipped.

    :param hot: also attach the per-PFN walkers (:attr:`ProbeSpec.hot`).
    :param hot_off: the reason given for a hot walker left out.
    """
    syms = symbols(kallsyms)
    black = _blacklisted(blacklist)
    planned: list[Planned] = []
    skipped: list[Skipped] = []
    for spec in specs:
        cands = syms.get(spec.function, [])
        if not cands:
            why = "no symbol (inlined, a macro, not built, or its module is not loaded)"
            if spec.function == "pfn_to_online_page":
                why = "no symbol: a macro before v5.12; kpage*_read/stable_page_flags carry it"
            skipped.append(Skipped(spec, why))
            continue
        if spec.hot and not hot:
            skipped.append(Skipped(spec, hot_off))
            continue
        usable = [(n, m) for n, m in cands if n not in black]
        if not usable:
            skipped.append(Skipped(spec, f"{cands[0][0]} is on the kprobe blacklist"))
            continue
        name, module = usable[0]
        planned.append(Planned(spec, name, module))
    return planned, skipped

"""Probe-point feature detection from /proc/kallsyms (subsecinspect.probes.probe_points)."""

from __future__ import annotations

import re

from subsecinspect.probes.loading import program_text
from subsecinspect.probes.probe_points import PROBES, plan, symbols

# Excerpts shaped like the lab kernels' /proc/kallsyms.
K_6_12 = """\
ffffffff81234000 T memremap_pages
ffffffff81235000 T memunmap_pages
ffffffff81236000 T memmap_init_zone_device
ffffffff81237000 T pfn_to_online_page
ffffffff81238000 t __init_zone_device_page.constprop.0
ffffffff81239000 T get_dev_pagemap
ffffffff8123a000 t kpageflags_read
ffffffff8123b000 t mark_free_pages.part.0
ffffffff8123c000 t mark_free_pages.cold
ffffffff8123d000 T online_pages
ffffffff8123e000 d vmemmap_base
ffffffffc0100000 t hwpoison_inject\t[hwpoison_inject]
"""
# 5.10: pfn_to_online_page is a macro (no symbol).
K_5_10 = "\n".join(ln for ln in K_6_12.splitlines() if "pfn_to_online_page" not in ln)


def test_symbols_handles_clones_modules_and_data() -> None:
    s = symbols(K_6_12)
    assert s["__init_zone_device_page"] == [("__init_zone_device_page.constprop.0", "")]
    assert s["mark_free_pages"] == [("mark_free_pages.part.0", "")]  # .cold is no entry
    assert s["hwpoison_inject"] == [("hwpoison_inject", "hwpoison_inject")]
    assert "vmemmap_base" not in s  # data, not text


def test_hot_walkers_only_on_request() -> None:
    _, skipped = plan(K_6_12)
    why = {s.spec.function: s.reason for s in skipped}
    assert "--hot-walkers" in why["pfn_to_online_page"]
    planned, _ = plan(K_6_12, hot=True)
    assert "pfn_to_online_page" in {p.spec.function for p in planned}


def test_plan_6_12() -> None:
    planned, skipped = plan(K_6_12, hot=True)
    got = {p.spec.function: p.symbol for p in planned}
    assert got["pfn_to_online_page"] == "pfn_to_online_page"
    assert got["hwpoison_inject"] == "hwpoison_inject"
    assert "stable_page_flags" in {s.spec.function for s in skipped}
    assert len(planned) + len(skipped) == len(PROBES)


def test_plan_5_10_reports_the_macro() -> None:
    _, skipped = plan(K_5_10, hot=True)
    why = {s.spec.function: s.reason for s in skipped}
    assert "macro before v5.12" in why["pfn_to_online_page"]


def test_plan_clone_and_blacklist() -> None:
    k = K_6_12 + "ffffffff8123f000 t dump_page.isra.0\n"
    planned, skipped = plan(k, "0xffffffff81239000-0xffffffff81239100\tget_dev_pagemap\n", hot=True)
    p = {x.spec.function: x for x in planned}
    assert p["dump_page"].symbol == "dump_page.isra.0" and p["dump_page"].clone
    assert not p["memremap_pages"].clone
    why = {s.spec.function: s.reason for s in skipped}
    assert "blacklist" in why["get_dev_pagemap"]


def _handlers(src: str) -> set[str]:
    """The kprobe handler names the BPF source defines, SUBSEC_RET_WALKER expansions included."""
    names = set(re.findall(r"^int (on_\w+)\(struct pt_regs \*ctx\)", src, re.M))
    macro = re.search(r"#define SUBSEC_RET_WALKER\(fn,.*?\n\n", src, re.S)
    assert macro and "int on_##fn(struct pt_regs *ctx)" in macro[0]
    assert "int on_##fn##_ret(struct pt_regs *ctx)" in macro[0]
    for fn in re.findall(r"^SUBSEC_RET_WALKER\((\w+),", src, re.M):
        names |= {f"on_{fn}", f"on_{fn}_ret"}
    return names


def test_every_handler_exists_in_the_bpf_source() -> None:
    src = program_text()  # every part bcc compiles, in order
    names = _handlers(src)
    for spec in PROBES:
        for fn in (spec.entry, spec.ret):
            if fn:
                assert fn in names, fn
    assert "on_pgmap_pfn_valid_ret" in names and "on_memremap_pages_ret" in names


def test_fentry_programs_exist_for_the_walkers_that_claim_them() -> None:
    src = program_text()  # every part bcc compiles, in order
    fentry_part = src[src.index("#if SUBSEC_FENTRY\n"):]
    entry = set(re.findall(r"^KFUNC_PROBE\((\w+)", fentry_part, re.M))
    exit_ = set(re.findall(r"^KRETFUNC_PROBE\((\w+)", fentry_part, re.M))
    assert entry == {s.function for s in PROBES if s.fentry}
    assert exit_ == {s.function for s in PROBES if s.fexit}
    assert all(s.hot for s in PROBES if s.fentry)  # only the per-PFN walkers need them


def test_hot_walkers_left_out_carry_the_given_reason() -> None:
    _, skipped = plan(K_6_12, hot=False, hot_off="off; no fentry/fexit: no kernel BTF")
    why = {s.spec.function: s.reason for s in skipped}
    assert why["pfn_to_online_page"] == "off; no fentry/fexit: no kernel BTF"

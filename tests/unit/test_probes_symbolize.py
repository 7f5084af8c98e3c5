"""Kernel stack symbolisation from /proc/kallsyms (subsecinspect.probes.symbolize).

The texts are shaped like the lab guests' /proc/kallsyms and /proc/modules; the CI failure
this guards against: bad_walker.ko loaded after the first read, its addresses came out as
``ftrace_trampoline+0x10ef`` (the [__builtin__ftrace] symbol below it in module space).
"""

from __future__ import annotations

from subsecinspect.probes.symbolize import KernelSymbols, SymbolTable

CORE = """\
ffffffff81000000 T _stext
ffffffff81000000 T startup_64
ffffffff810c5f40 T kthread
ffffffff81300000 T get_dev_pagemap
ffffffff81300400 t pgmap_pfn_valid
ffffffff81e00000 T _etext
ffffffff82000000 D vmemmap_base
ffffffffc0100000 t dax_pmem_probe\t[dax_pmem]
ffffffffc0100200 t dax_pmem_remove\t[dax_pmem]
ffffffffc0200000 t ftrace_trampoline\t[__builtin__ftrace]
ffffffffc0300000 t bpf_prog_6deef7357e7b4530_on_gdp\t[bpf]
"""
BAD_WALKER = """\
ffffffffc0a3b000 t bw_get_dev_pagemap\t[bad_walker]
ffffffffc0a3b020 t bw_read_page\t[bad_walker]
ffffffffc0a3b100 t bw_thread\t[bad_walker]
ffffffffc0a3d000 d reads\t[bad_walker]
"""
MODULES = "dax_pmem 16384 0 - Live 0xffffffffc0100000\n"
MODULES_BW = MODULES + "bad_walker 12288 0 - Live 0xffffffffc0a3b000 (O)\n"
BW_READ_PAGE = 0xFFFFFFFFC0A3B03C  # bw_read_page+0x1c


class FakeProc:
    """/proc/kallsyms and /proc/modules that change when a module is loaded, plus a clock."""

    def __init__(self, kallsyms: str, modules: str) -> None:
        self.kallsyms, self.modules, self.now, self.reads = kallsyms, modules, 100.0, 0

    def read(self) -> tuple[str, str]:
        self.reads += 1
        return self.kallsyms, self.modules

    def load_bad_walker(self) -> None:
        self.kallsyms += BAD_WALKER
        self.modules = MODULES_BW

    def clock(self) -> float:
        return self.now


def test_table_bisects_core_and_module_symbols() -> None:
    t = SymbolTable(CORE + BAD_WALKER, MODULES_BW)
    assert t.frame(0xFFFFFFFF810C6023) == "kthread+0xe3"
    assert t.frame(0xFFFFFFFF81300005) == "get_dev_pagemap+0x5"
    assert t.frame(0xFFFFFFFF81300400) == "pgmap_pfn_valid+0x0"
    assert t.frame(BW_READ_PAGE) == "bw_read_page+0x1c [bad_walker]"
    assert t.frame(0xFFFFFFFFC0100210) == "dax_pmem_remove+0x10 [dax_pmem]"
    assert t.frame(0x1000) == "0x1000"  # below every symbol
    assert "reads" not in {s.name for s in t.symbols}  # data symbols are no frames


def test_covered_excludes_pseudo_modules_and_the_tail_of_a_module() -> None:
    t = SymbolTable(CORE, MODULES)
    assert t.covered(0xFFFFFFFF810C6023)  # core text
    assert t.covered(0xFFFFFFFFC0100010)  # between two dax_pmem symbols
    assert not t.covered(0xFFFFFFFFC0200010)  # ftrace trampoline: a pseudo-module
    assert not t.covered(0xFFFFFFFFC0300010)  # a BPF program
    # past dax_pmem's last symbol, even inside its /proc/modules [base, base + size): on
    # 7.2 a module loaded later sat there (size counts data regions allocated elsewhere)
    assert not t.covered(0xFFFFFFFFC0100210)
    # outside a module's /proc/modules extent although between two of its symbols
    odd = SymbolTable(CORE, "dax_pmem 16 0 - Live 0xffffffffc0100000\n")
    assert not odd.covered(0xFFFFFFFFC0100010)
    # without /proc/modules addresses (not root) the symbols alone decide
    assert SymbolTable(CORE, "dax_pmem 16384 0 - Live 0x0000000000000000\n").covered(
        0xFFFFFFFFC0100010)


def test_module_loaded_right_after_another_one_is_found() -> None:
    """Seen on 7.2 in the lab: bw_read_page came out as cleanup_module+0x21ff [qemu_fw_cfg]."""
    fw_cfg = ("ffffffffc0a30000 t fw_cfg_sysfs_probe\t[qemu_fw_cfg]\n"
              "ffffffffc0a32e3d t cleanup_module\t[qemu_fw_cfg]\n")
    proc = FakeProc(CORE + fw_cfg, MODULES + "qemu_fw_cfg 65536 0 - Live 0xffffffffc0a30000\n")
    ks = KernelSymbols(proc.read, min_interval=2.0, clock=proc.clock, kallsyms=proc.kallsyms,
                       modules=proc.modules)
    proc.load_bad_walker()
    proc.now += 60
    assert ks.frame(BW_READ_PAGE) == "bw_read_page+0x1c [bad_walker]"
    assert proc.reads == 1


def test_stale_table_is_reread_for_a_module_loaded_later() -> None:
    proc = FakeProc(CORE, MODULES)
    ks = KernelSymbols(proc.read, min_interval=2.0, clock=proc.clock)
    assert ks.frame(0xFFFFFFFF81300005) == "get_dev_pagemap+0x5"
    assert proc.reads == 1
    proc.load_bad_walker()
    proc.now += 5
    frames = ks.stack([0xFFFFFFFF81300005, BW_READ_PAGE, 0xFFFFFFFF810C6023])
    assert frames == ["get_dev_pagemap+0x5", "bw_read_page+0x1c [bad_walker]", "kthread+0xe3"]
    assert proc.reads == 2
    assert frames[1].startswith("bw_read_page")  # what tests/vm/test_trace.py checks


def test_initial_text_is_used_and_rereads_are_rate_limited() -> None:
    proc = FakeProc(CORE, MODULES)
    ks = KernelSymbols(proc.read, min_interval=2.0, clock=proc.clock, kallsyms=CORE,
                       modules=MODULES)
    proc.load_bad_walker()
    proc.now += 0.5  # read 0.5 s ago: too recent to read again
    assert ks.frame(BW_READ_PAGE) == "bpf_prog_6deef7357e7b4530_on_gdp+0x73b03c [bpf]"  # stale
    assert proc.reads == 0
    proc.now += 2
    assert ks.frame(BW_READ_PAGE) == "bw_read_page+0x1c [bad_walker]"
    assert proc.reads == 1


def test_unresolvable_address_is_final_after_one_reread() -> None:
    proc = FakeProc(CORE, MODULES)
    ks = KernelSymbols(proc.read, min_interval=2.0, clock=proc.clock)
    bpf = 0xFFFFFFFFC0300010
    proc.now += 10
    assert ks.frame(bpf) == "bpf_prog_6deef7357e7b4530_on_gdp+0x10 [bpf]"
    reads = proc.reads
    for _ in range(3):
        proc.now += 10
        assert ks.frame(bpf) == "bpf_prog_6deef7357e7b4530_on_gdp+0x10 [bpf]"
    assert proc.reads == reads  # a read newer than the address cannot improve it

"""BTF mode: find the kernel's BTF and symbols, register drgn finders, run the gate.

The BTF blob is ``/sys/kernel/btf/vmlinux`` on a live kernel (kernel/bpf/sysfs_btf.c)
and, in a dump, the kernel's own ``.BTF`` section between ``__start_BTF`` and
``__stop_BTF`` (include/asm-generic/vmlinux.lds.h), read through the dump's memory.
The scan of the type section is cached per build ID under
``$XDG_CACHE_HOME/subsecinspect/btf/`` (:mod:`subsecinspect.debuginfo.btfcache`).
"""

from __future__ import annotations

import atexit

import drgn
from drgn import Program

from subsecinspect.debuginfo import btfcache
from subsecinspect.debuginfo.btf import Btf, BtfError
from subsecinspect.debuginfo.btf_types import register_btf_types
from subsecinspect.debuginfo.gate import check_gate, check_symbols
from subsecinspect.debuginfo.objects import BtfObjectFinder
from subsecinspect.debuginfo.symbols import SymbolSource, load_symbols, vmcoreinfo
from subsecinspect.errors import DebugInfoError

__all__ = ("SYSFS_BTF", "load_btf_debuginfo")

SYSFS_BTF = "/sys/kernel/btf/vmlinux"
#: The 6.1 blob is 4.1 MB; a span past this is not a .BTF section.
_MAX_BTF = 256 << 20


def _blob(prog: Program, finder_symbols: object) -> tuple[bytes, str]:
    if prog.flags & drgn.ProgramFlags.IS_LIVE:
        try:
            with open(SYSFS_BTF, "rb") as f:
                return f.read(), SYSFS_BTF
        except FileNotFoundError:
            raise DebugInfoError(
                f"no {SYSFS_BTF}: the kernel is built without CONFIG_DEBUG_INFO_BTF; "
                "pass -s/--vmlinux (the -dbg vmlinux)"
            ) from None
        except OSError as e:
            raise DebugInfoError(f"cannot read {SYSFS_BTF}: {e.strerror or e}") from None
    start = finder_symbols.address(prog, "__start_BTF")  # type: ignore[attr-defined]
    stop = finder_symbols.address(prog, "__stop_BTF")  # type: ignore[attr-defined]
    if start is None or stop is None or not 0 < stop - start <= _MAX_BTF:
        raise DebugInfoError(
            "the kernel has no .BTF section (__start_BTF/__stop_BTF not in its symbols: "
            "built without CONFIG_DEBUG_INFO_BTF); pass -s/--vmlinux"
        )
    try:
        return prog.read(start, stop - start), f"vmcore:.BTF@{start:#x}"
    except drgn.FaultError as e:
        raise DebugInfoError(
            f"the .BTF section at {start:#x} is not in the dump ({e}); take the dump with "
            "makedumpfile -d 31 or less (kernel text/rodata are kept), or pass -s/--vmlinux"
        ) from None


def _store_memo(build_id: str, btf: Btf, symbols: SymbolSource,
                before: tuple[int, int, bool]) -> None:
    """At exit: keep this run's lookups for the next one, if it made new ones."""
    if (len(btf.memo_names), len(btf.memo_enums), True) == before:
        return
    btfcache.store_memo(build_id, {
        "names": btf.memo_names,
        "enums": btf.memo_enums,
        "kallsyms": symbols.memo,
    })


def load_btf_debuginfo(prog: Program, *, system_map: str | None = None) -> str:
    """Make *prog* usable by the readers from BTF + kallsyms (or *system_map*).

    :return: the provenance, e.g. ``"btf:/sys/kernel/btf/vmlinux kallsyms:/proc/kallsyms"``.
    :raises DebugInfoError: no BTF, hidden or missing symbols, damaged BTF, or a
        disagreement with VMCOREINFO.
    """
    info = vmcoreinfo(prog)
    build_id = info.get("BUILD-ID", "")
    memo = btfcache.load_memo(build_id)
    symbols = load_symbols(prog, system_map=system_map, memo=memo.get("kallsyms"))
    check_symbols(prog, symbols, info)
    data, where = _blob(prog, symbols)
    offsets = btfcache.load(build_id, data)
    try:
        btf = Btf(data, offsets=offsets)
    except BtfError as e:
        raise BtfError(f"the kernel's BTF ({where}) is damaged: {e}") from None
    if offsets is None:
        btfcache.store(build_id, data, btf)
        memo.pop("names", None)  # a memo without its blob's scan is not trusted
        memo.pop("enums", None)
    btf.memo_names.update(memo.get("names", {}))
    btf.memo_enums.update(
        {k: tuple(v) if v is not None else None for k, v in memo.get("enums", {}).items()})
    before = (len(btf.memo_names), len(btf.memo_enums), symbols.memo == memo.get("kallsyms"))
    atexit.register(_store_memo, build_id, btf, symbols, before)
    types = register_btf_types(prog, btf)
    objects = BtfObjectFinder(prog, types, symbols)
    prog.register_object_finder("subsecinspect-btf", objects, enable_index=-1)
    check_gate(prog, objects)
    return f"btf:{where} {symbols.origin}"

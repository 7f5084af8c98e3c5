"""Open a dump with plain drgn (no subsecinspect) and read the kernel release from it.

Shared by tests/vm/test_dumps.py and test_classify_kdump.py: whether drgn itself opens a kind
of dump is a finding of the lab, independent of subsecinspect's target code.
"""

from __future__ import annotations

from pathlib import Path

import drgn

__all__ = ("drgn_release",)


def drgn_release(core: Path, vmlinux: Path) -> str:
    """``init_uts_ns.name.release`` of ``core`` read with drgn and ``vmlinux``; raises what
    drgn raises when it cannot open the dump."""
    prog = drgn.Program()
    prog.set_core_dump(str(core))
    try:
        prog.load_debug_info([str(vmlinux)])
    except drgn.MissingDebugInfoError:
        pass  # module debug info is not in the cache; init_uts_ns is in vmlinux
    return prog["init_uts_ns"].name.release.string_().decode()

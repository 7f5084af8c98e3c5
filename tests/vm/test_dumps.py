"""Lab tests: drgn on the host opens the vmcores QEMU writes, with the kernel's vmlinux.

One guest per kernel: the nvdimm-mixed scenario (1 GiB RAM + 1 GiB NVDIMM, namespaces
created). Taken from it:

* QMP ``dump-guest-memory`` ELF (RAM + NVDIMM): drgn opens it and
  ``init_uts_ns.name.release`` equals the guest's ``uname -r``;
* QMP ``dump-guest-memory`` kdump-zlib: QEMU 7.2 writes the *flattened* format, which
  drgn 0.3.0 (libkdumpfile) rejects (lab-notes §7); the test pins that so a change shows up.

Real kdumps (kexec + makedumpfile in the capture kernel) are made and checked, the same
release check included, in tests/vm/test_classify_kdump.py (one kdump per kernel serves both).
Every dump is deleted at the end. Marker ``lab``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dumpopen import drgn_release

from lab import images, kdump
from lab.scenarios import NVDIMM_MIXED, apply

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def dumps(
    kernel_id: str, tmp_path_factory: pytest.TempPathFactory, boot_scenario: Any
) -> Iterator[tuple[dict[str, Path], str]]:
    out = tmp_path_factory.mktemp(f"dumps-{kernel_id}")
    files: dict[str, Path] = {}
    try:
        with boot_scenario(NVDIMM_MIXED, kernel_id) as vm:
            apply(vm, NVDIMM_MIXED)
            release = vm.run("uname -r", check=True).stdout.strip()
            for fmt in ("elf", "kdump-zlib"):
                t0 = time.monotonic()
                files[f"qemu-{fmt}"] = kdump.dump_qemu(vm, out / f"qemu-{fmt}.vmcore", fmt)
                print(f"{kernel_id}: QMP {fmt} dump {time.monotonic() - t0:.1f}s, "
                      f"{files[f'qemu-{fmt}'].stat().st_size} B")  # fmt: skip
        yield files, release
    finally:
        kdump.remove_dumps(*files.values())


def test_drgn_opens_qemu_elf_dump_and_reads_release(dumps: Any, kernel_id: str) -> None:
    files, release = dumps
    t0 = time.monotonic()
    assert drgn_release(files["qemu-elf"], images.paths(kernel_id).vmlinux) == release
    print(f"{kernel_id}: drgn qemu-elf {time.monotonic() - t0:.1f}s")


def test_qemu_flattened_kdump_zlib_is_rejected_by_drgn_0_3_0(dumps: Any, kernel_id: str) -> None:
    # QEMU 7.2 has no "reassembled" kdump option; drgn 0.3.0's libkdumpfile cannot read the
    # flattened stream (lab-notes §7, §13 #1). If this starts to pass, update vm-images/README.md.
    files, _ = dumps
    with pytest.raises(Exception, match="KDUMP_ATTR_ARCH_NAME"):
        drgn_release(files["qemu-kdump-zlib"], images.paths(kernel_id).vmlinux)

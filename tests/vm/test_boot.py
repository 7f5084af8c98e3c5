"""Lab boot tests: every kernel of the matrix boots with an NVDIMM and runs the guest tools.

Marker ``lab``. The cache is built on demand (``images.ensure_built``: a no-op when the
stamps match), so a missing prerequisite fails loudly instead of skipping.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import images
from lab.matrix import load_matrix
from lab.vm import LabVM, Nvdimm

pytestmark = pytest.mark.lab

KERNELS = load_matrix().ids

_DRGN_RELEASE = """
import drgn, sys
prog = drgn.Program()
prog.set_kernel()                                  # /proc/kcore
prog.load_debug_info([sys.argv[1]])                # the vmlinux from the kernel disk
print(prog["init_uts_ns"].name.release.string_().decode())
"""


@pytest.fixture(scope="module", params=KERNELS)
def vm(request: pytest.FixtureRequest) -> Iterator[LabVM]:
    kid = request.param
    images.ensure_built(kid)
    t0 = time.monotonic()
    with LabVM(kid, name=f"test-boot-{kid}", mem="1G", nvdimms=[Nvdimm("1G", "128K")]) as v:
        print(f"{kid}: booted in {time.monotonic() - t0:.1f}s")
        yield v


def test_uname_is_matrix_kver(vm: LabVM) -> None:
    r = vm.run("uname -r", check=True)
    assert r.stdout.strip() == images.paths(vm.kernel).kver


def test_nvdimm_region_visible(vm: LabVM) -> None:
    r = vm.run("ndctl list -R", check=True)
    regions = json.loads(r.stdout)
    regions = regions if isinstance(regions, list) else [regions]
    assert [x["type"] for x in regions] == ["pmem"]
    # 1 GiB NVDIMM minus the 128 KiB label area.
    assert regions[0]["size"] == (1 << 30) - (128 << 10)


def test_stdout_stderr_rc_are_separate(vm: LabVM) -> None:
    r = vm.run("echo out; echo err >&2; exit 7")
    assert (r.stdout, r.stderr, r.rc) == ("out\n", "err\n", 7)


def test_guest_python_imports_drgn_and_bcc(vm: LabVM) -> None:
    r = vm.run("python3 -c 'import drgn, bcc; print(drgn.__version__)'", timeout=120, check=True)
    assert r.stdout.strip() == "0.3.0"


def test_guest_drgn_cli(vm: LabVM) -> None:
    r = vm.run("drgn --version", timeout=120, check=True)
    assert r.stdout.startswith("drgn 0.3.0"), r.stdout


def test_bcc_finds_headers(vm: LabVM) -> None:
    kver = images.paths(vm.kernel).kver
    r = vm.run(
        f"test -e /lib/modules/{kver}/build/include/generated/autoconf.h && "
        f"test -e /lib/modules/{kver}/source/include/linux/kconfig.h && echo ok",
        check=True,
    )
    assert r.stdout == "ok\n"


_BCC_ATTACH = """
from bcc import BPF
b = BPF(text="int hit(void *ctx) { return 0; }")
b.attach_kprobe(event=b.get_syscall_fnname("getpid"), fn_name="hit")
print(b.num_open_kprobes())
"""


def test_bcc_compiles_against_guest_headers_and_attaches(vm: LabVM) -> None:
    # Compiling needs /lib/modules/<kver>/{build,source} from the kernel disk.
    r = vm.run(f"python3 - <<'EOF'\n{_BCC_ATTACH}\nEOF", timeout=240)
    assert r.rc == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "1"


def test_guest_drgn_reads_init_uts_ns_from_kcore(vm: LabVM) -> None:
    kver = images.paths(vm.kernel).kver
    r = vm.run(
        f"cat > /root/release.py <<'EOF'\n{_DRGN_RELEASE}\nEOF\n"
        f"python3 /root/release.py /usr/lib/debug/boot/vmlinux-{kver}",
        timeout=180,
    )
    assert r.rc == 0, r.stderr
    assert r.stdout.strip() == kver


def test_put_get_roundtrip(vm: LabVM, tmp_path: Path) -> None:
    data = bytes(range(256)) * 300
    src = tmp_path / "blob"
    src.write_bytes(data)
    vm.put(src, "/tmp/blob")
    assert vm.get("/tmp/blob") == data

"""Lab tests of BTF mode (issue 13): ``--debuginfo btf`` must give the DWARF answer, live and
on a dump, or a one-line error with exit 4 where BTF mode cannot serve.

One guest per kernel (scenario nvdimm-mixed, every stage applied; ``LAB_KERNELS`` narrows):

* live: ``classify /proc/kcore --json`` with ``--debuginfo dwarf`` and ``btf`` in the guest:
  the documents are equal but for ``target.debuginfo`` and the timing in ``stats``;
* with ``kernel.kptr_restrict=2``: 5.10 (kallsyms from /proc/kallsyms) must stop with exit 4,
  6.x (the built-in tables through /proc/kcore) must still give the same document;
* the guest's vmlinux (/usr/lib/debug/boot on the kernel disk) is then hidden under a tmpfs:
  ``--debuginfo auto`` must fall back to BTF and give the same document;
* a QMP ELF dump, classified on the host with ``-s vmlinux`` and with ``--debuginfo btf``:
  equal again. 5.10's VMCOREINFO has no kallsyms (v6.0, f09bddbd8661): there BTF mode must
  stop with exit 4 and name ``-m/--system-map``, and succeed with the System.map (``nm -n``
  of the vmlinux, which is what Debian's System.map is); a System.map of another kernel build
  must stop with exit 4, as must a map without ``__start_BTF`` (a kernel without
  ``CONFIG_DEBUG_INFO_BTF``) and one whose ``__stop_BTF`` truncates the blob. The dump is
  deleted at once.

Marker ``lab``; CI=true turns a missing prerequisite into a failure (tests/vm/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import images
from lab.kdump import dump_elf
from lab.scenarios import SCENARIOS, apply_stage

pytestmark = pytest.mark.lab
#: CI runs this module on the oldest and newest kernel (tests/vm/conftest.py tier_kernels);
#: LAB_MATRIX=full runs all four (vm-images/README.md, "Tiers").
LAB_TIER = "edges"

_HIDE = "mount -t tmpfs none /usr/lib/debug/boot"


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without what may differ: the provenance and the read time."""
    out = dict(doc)
    out["target"] = {k: v for k, v in doc["target"].items() if k != "debuginfo"}
    if isinstance(doc.get("stats"), dict):
        out["stats"] = {k: v for k, v in doc["stats"].items() if not k.endswith("_ms")}
    return out


def _host(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "subsecinspect", *args],
                          capture_output=True, text=True, timeout=600)


def _system_map(vmlinux: Path, out: Path) -> Path:
    nm = subprocess.run(["nm", "-n", str(vmlinux)], capture_output=True, text=True, check=True)
    out.write_text(nm.stdout)
    return out


@pytest.fixture(scope="module")
def runs(kernel_id: str, boot_scenario: Any, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[dict[str, Any]]:
    sc = SCENARIOS["nvdimm-mixed"]
    tmp = tmp_path_factory.mktemp(f"btf-{kernel_id}")
    kp = images.paths(kernel_id)
    out: dict[str, Any] = {}
    with boot_scenario(sc, kernel_id, name=f"test-btf-{kernel_id}") as vm:
        for stage in sc.stages:
            apply_stage(vm, stage)
        base = "python3 -m subsecinspect classify /proc/kcore --json"
        for mode in ("dwarf", "btf"):
            r = vm.run(f"{base} --debuginfo {mode}", timeout=600)
            out[f"live_{mode}"] = (r.rc, r.stdout, r.stderr)
        # kallsyms hidden from root too (kptr_restrict 2: /proc/kallsyms reads all zeros).
        r = vm.run(f"sysctl -qw kernel.kptr_restrict=2 && {base} --debuginfo btf; "
                   "rc=$?; sysctl -qw kernel.kptr_restrict=0; exit $rc", timeout=600)
        out["live_kptr_restrict"] = (r.rc, r.stdout, r.stderr)
        vm.run(_HIDE, timeout=60)
        r = vm.run(base, timeout=600)
        out["live_auto_hidden"] = (r.rc, r.stdout, r.stderr)
        dump = tmp / "nvdimm-mixed.vmcore"
        try:
            dump_elf(vm, dump)
            out["dump_dwarf"] = _host("classify", str(dump), "-s", str(kp.vmlinux), "--json")
            out["dump_btf"] = _host("classify", str(dump), "--debuginfo", "btf", "--json")
            smap = _system_map(kp.vmlinux, tmp / "System.map")
            out["dump_btf_map"] = _host("classify", str(dump), "--debuginfo", "btf", "-m",
                                        str(smap), "--json")
            text = smap.read_text()
            # A kernel without CONFIG_DEBUG_INFO_BTF: no __start_BTF/__stop_BTF symbols.
            nobtf = tmp / "System.map.nobtf"
            nobtf.write_text("".join(ln for ln in text.splitlines(keepends=True)
                                     if not ln.endswith("_BTF\n")))
            out["dump_no_btf"] = _host("classify", str(dump), "--debuginfo", "btf", "-m",
                                       str(nobtf), "--json")
            # A truncated .BTF: __stop_BTF 4 KiB after __start_BTF.
            start = next(ln.split()[0] for ln in text.splitlines() if ln.endswith(" __start_BTF"))
            cut = tmp / "System.map.cut"
            cut.write_text("".join(
                f"{int(start, 16) + 4096:016x} D __stop_BTF\n" if ln.endswith(" __stop_BTF\n")
                else ln for ln in text.splitlines(keepends=True)))
            out["dump_cut_btf"] = _host("classify", str(dump), "--debuginfo", "btf", "-m",
                                        str(cut), "--json")
            other = "6.1" if kernel_id != "6.1" else "6.12"
            other_vmlinux = images.paths(other).vmlinux
            if other_vmlinux.exists():
                omap = _system_map(other_vmlinux, tmp / "System.map.other")
                out["dump_btf_other_map"] = _host("classify", str(dump), "--debuginfo", "btf",
                                                  "-m", str(omap), "--json")
        finally:
            dump.unlink(missing_ok=True)
    yield out


def test_live_btf_equals_dwarf(runs: dict[str, Any]) -> None:
    rc_d, out_d, err_d = runs["live_dwarf"]
    rc_b, out_b, err_b = runs["live_btf"]
    assert rc_d == 0, err_d
    assert rc_b == 0, err_b
    assert "Traceback" not in err_b
    dwarf, btf = json.loads(out_d), json.loads(out_b)
    assert dwarf["target"]["debuginfo"].startswith("dwarf:")
    assert btf["target"]["debuginfo"].startswith("btf:/sys/kernel/btf/vmlinux ")
    assert _comparable(btf) == _comparable(dwarf)
    assert btf["ranges"], "no ranges: nothing was compared"


def test_live_auto_without_vmlinux_uses_btf(runs: dict[str, Any]) -> None:
    rc, out, err = runs["live_auto_hidden"]
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["target"]["debuginfo"].startswith("btf:")
    assert _comparable(doc) == _comparable(json.loads(runs["live_dwarf"][1]))


def test_dump_btf_equals_dwarf(runs: dict[str, Any], kernel_id: str) -> None:
    d = runs["dump_dwarf"]
    assert d.returncode == 0, d.stderr
    dwarf = json.loads(d.stdout)
    b = runs["dump_btf"]
    if kernel_id == "5.10":
        # No kallsyms in 5.10's VMCOREINFO: the clear error, naming what to pass.
        assert b.returncode == 4, b.stderr
        assert "Traceback" not in b.stderr and len(b.stderr.strip().splitlines()) == 1
        assert "-m/--system-map" in b.stderr
    else:
        assert b.returncode == 0, b.stderr
        btf = json.loads(b.stdout)
        assert btf["target"]["debuginfo"] == (
            btf["target"]["debuginfo"].split(" ")[0] + " kallsyms:vmcoreinfo")
        assert btf["target"]["debuginfo"].startswith("btf:vmcore:.BTF@")
        assert _comparable(btf) == _comparable(dwarf)
    m = runs["dump_btf_map"]
    assert m.returncode == 0, m.stderr
    with_map = json.loads(m.stdout)
    assert " system.map:" in with_map["target"]["debuginfo"]
    assert _comparable(with_map) == _comparable(dwarf)


def test_dump_other_builds_system_map_is_refused(runs: dict[str, Any]) -> None:
    r = runs.get("dump_btf_other_map")
    if r is None:
        pytest.skip("the other kernel's vmlinux is not in the lab cache")
    assert r.returncode == 4, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "does not match the target" in r.stderr


@pytest.mark.parametrize(("key", "message"), [
    ("dump_no_btf", "has no .BTF section"),
    ("dump_cut_btf", "BTF (vmcore:.BTF@"),
])
def test_dump_bad_btf_is_one_line_exit_4(runs: dict[str, Any], key: str, message: str) -> None:
    r = runs[key]
    assert r.returncode == 4, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert message in r.stderr


def test_live_hidden_kallsyms(runs: dict[str, Any], kernel_id: str) -> None:
    """5.10 has no kallsyms in VMCOREINFO, so BTF mode reads /proc/kallsyms: hidden, it must
    stop with exit 4; 6.x reads the kernel's own tables through /proc/kcore and must not care."""
    rc, out, err = runs["live_kptr_restrict"]
    assert "Traceback" not in err
    if kernel_id == "5.10":
        assert rc == 4, err
        assert len(err.strip().splitlines()) == 1 and "hidden" in err
    else:
        assert rc == 0, err
        assert _comparable(json.loads(out)) == _comparable(json.loads(runs["live_dwarf"][1]))

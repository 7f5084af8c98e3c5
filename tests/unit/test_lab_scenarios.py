"""Unit tests of the lab's pure parts: scenario layouts, layout checking, module answers, kdump
and freeze helpers. No QEMU: these run anywhere in well under a second."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lab import freeze, groundtruth, kdump
from lab.scenarios import (
    KMEM,
    NVDIMM_MIXED,
    SCENARIOS,
    IomemEntry,
    Observed,
    Scenario,
    check_layout,
    data_offset,
    parse_iomem,
)

MiB = 1 << 20


def _observed_from(sc: Scenario, stage: int = -1) -> Observed:
    """An Observed that is exactly the declaration of ``sc``'s stage."""
    lay = sc.stages[stage].layout
    blocks = {b: st for a, z, st in lay.memory_blocks for b in range(a, z + 1)}
    outside = IomemEntry(0x1000, 0x9FBFF, "System RAM")  # outside every window: ignored
    return Observed(
        sc.stages[stage].name, lay.namespaces, (outside, *lay.iomem), blocks, lay.block_size
    )


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_declared_layout_checks_equal_to_itself(name: str) -> None:
    sc = SCENARIOS[name]
    for i in range(len(sc.stages)):
        assert check_layout(_observed_from(sc, i), sc) == []


def test_check_layout_reports_each_kind_of_difference() -> None:
    obs = _observed_from(NVDIMM_MIXED)
    ns = replace(obs.namespaces[0], size=obs.namespaces[0].size - 2 * MiB)
    bad_ns = replace(obs, namespaces=(ns, *obs.namespaces[1:]))
    assert any("namespace0.0" in d for d in check_layout(bad_ns, NVDIMM_MIXED))
    extra = IomemEntry(0x12D000000, 0x12DFFFFFF, "namespace0.4", 1)
    bad_io = replace(obs, iomem=(*obs.iomem, extra))
    assert any("iomem" in d for d in check_layout(bad_io, NVDIMM_MIXED))
    bad_blocks = replace(obs, memory_blocks={**obs.memory_blocks, 7: "offline"})
    assert any("memory7" in d for d in check_layout(bad_blocks, NVDIMM_MIXED))
    assert check_layout(replace(obs, block_size=256 * MiB), NVDIMM_MIXED)


def test_kmem_stage_is_picked_by_name() -> None:
    offline = _observed_from(KMEM, 0)
    assert check_layout(offline, KMEM) == []
    # the offline observation does not match the online stage
    assert check_layout(replace(offline, stage="kmem-online"), KMEM)


def test_data_offset_matches_what_the_guests_showed() -> None:
    # /proc/iomem in the guests: D (devdax map=dev 272M) dax0.3 starts 6 MiB in, B (map=mem) 2 MiB;
    # ndctl size of A (fsdax map=dev 192M) is 188 MiB.
    assert data_offset(272 * MiB, "dev") == 6 * MiB
    assert data_offset(96 * MiB, "mem") == 2 * MiB
    assert data_offset(192 * MiB, "dev") == 4 * MiB


def test_parse_iomem_depths() -> None:
    text = "100000000-13ffdffff : Persistent Memory\n  100000000-1001fffff : namespace0.0\n" \
           "    108000000-117ffffff : System RAM (kmem)\nnot a line\n"  # fmt: skip
    got = parse_iomem(text)
    assert [(e.depth, e.name) for e in got] == [
        (0, "Persistent Memory"), (1, "namespace0.0"), (2, "System RAM (kmem)")]  # fmt: skip
    assert got[0].start == 0x100000000 and got[0].end == 0x13FFDFFFF


def test_only_auto_onlining_kernels_get_memhp_default_state() -> None:
    for sc in (SCENARIOS["dimm-offline"], KMEM):
        assert "memhp_default_state=offline" in sc.kernel_append("6.12")
        assert "memhp_default_state=offline" in sc.kernel_append("7.2")
        assert "memhp_default_state=offline" not in sc.kernel_append("6.1")


def test_groundtruth_parse() -> None:
    text = (
        "subsec_gt v1 release=6.1.0-56-cloud-amd64 pgmap_pfn_valid=kernel\n"
        "pfn=0x100000 valid=1 online=0 pgmap=0xff11000004556000 pgmap_pfn_valid=0 "
        "zone=- zone_idx=- nid=- page_pgmap=-\n"
        "pfn=0x100400 valid=1 online=0 pgmap=0xff11000004556000 pgmap_pfn_valid=1 "
        "zone=Device zone_idx=4 nid=0 page_pgmap=0xff11000004556000\n"
    )
    a, b = groundtruth.parse(text)
    assert (a.pfn, a.pfn_valid, a.online, a.pgmap_pfn_valid, a.zone) == (
        0x100000,
        True,
        False,
        False,
        None,
    )
    assert (b.zone, b.zone_idx, b.nid, b.page_pgmap) == ("Device", 4, 0, 0xFF11000004556000)


def test_capture_script_and_command_line() -> None:
    script = kdump.capture_script(kdump.DEFAULT_LEVELS)
    assert "makedumpfile -c -d 31 /proc/vmcore" in script
    assert "makedumpfile -c -d 0 /proc/vmcore" in script
    line = kdump._capture_append("console=ttyS0 crashkernel=256M memmap=208M!1104M")
    assert "crashkernel" not in line and "memmap=208M!1104M" in line
    assert "lab.capture=" in line and "nr_cpus=1" in line


def test_pick_symbol_prefers_the_first_candidate() -> None:
    syms = {"__init_single_page.constprop.0": 1, "__init_zone_device_page.constprop.0": 2}
    assert (
        freeze.pick_symbol(syms, freeze.PER_PAGE_CANDIDATES)[0]
        == "__init_zone_device_page.constprop.0"
    )
    assert (
        freeze.pick_symbol({"__init_single_page.constprop.0": 1}, freeze.PER_PAGE_CANDIDATES)[1]
        == 1
    )
    with pytest.raises(freeze.FreezeError):
        freeze.pick_symbol({}, freeze.TEARDOWN_CANDIDATES)


def test_icount_command_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lab.vm import LabVM

    monkeypatch.setenv("SUBSECINSPECT_LAB_CACHE", str(tmp_path))
    plain = LabVM("6.1").command_line()
    assert "tcg,thread=multi" in plain and "-icount" not in plain
    line = LabVM("6.1", smp=1, icount=0).command_line()
    assert "tcg,thread=single" in line and "tcg,thread=multi" not in line
    assert line[line.index("-icount") + 1] == "shift=0,sleep=off"
    with pytest.raises(ValueError, match="smp=1"):
        LabVM("6.1", icount=0)  # two vCPUs livelock under round-robin icount


def test_qmp_passes_path_as_a_qmp_argument(monkeypatch: Any) -> None:
    """``qom-set`` needs ``path``: the socket and command are positional-only, so it is free."""
    from lab import qmp

    sent: list[tuple[str, dict[str, Any]]] = []

    class FakeConn:
        def __init__(self, sock: Any, timeout: float) -> None:
            self.sock = sock

        def call(self, cmd: str, args: dict[str, Any]) -> Any:
            sent.append((cmd, args))
            return {}

        def close(self) -> None:
            pass

    monkeypatch.setattr(qmp, "_Conn", FakeConn)
    qmp.qmp_execute("/nonexistent.sock", "qom-set", path="vm0", property="requested-size",
                    value=200 << 20)
    assert sent == [("qom-set", {"path": "vm0", "property": "requested-size",
                                 "value": 200 << 20})]


def test_ram_hotplug_scenarios_are_registered_with_reasons() -> None:
    from lab.scenarios import SCENARIOS

    mom, vmem = SCENARIOS["memmap-on-memory"], SCENARIOS["virtio-mem"]
    assert not mom.support("5.10").supported and "v5.13" in mom.support("5.10").reason
    assert all(mom.support(k).supported for k in ("6.1", "6.12", "7.2"))
    assert "memory_hotplug.memmap_on_memory=1" in mom.kernel_append("6.1")
    assert "memhp_default_state=offline" in mom.kernel_append("6.12")
    assert any("virtio-mem-pci" in a for a in vmem.qemu_args)

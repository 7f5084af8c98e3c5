"""Lab scenarios: the persistent-memory layouts of the lab, as data.

Each :class:`~lab.layout.Scenario` below declares its guest, its setup stages
and the layout the guest must report after each stage; :mod:`lab.layout` holds
the model and the code that applies and checks them (re-exported here, so
``from lab.scenarios import SCENARIOS, apply, check_layout`` works).

The declared addresses follow from QEMU's ``pc`` machine: RAM below 4 GiB, the device-memory
(NVDIMM / pc-dimm) window at 0x100000000; 128 MiB sections and memory blocks.
"""

from __future__ import annotations

from lab import ndctl
from lab.layout import (
    GiB,
    GuestStep,
    IomemEntry,
    KernelSupport,
    Layout,
    MiB,
    Namespace,
    Nvdimm,
    Observed,
    QmpStep,
    Scenario,
    ScenarioError,
    Stage,
    apply,
    apply_stage,
    check_layout,
    labvm,
    observe,
    parse_iomem,
)
from lab.scenarios_ram import MEMMAP_ON_MEMORY, VIRTIO_MEM

__all__ = (
    "ALL_KERNELS",
    "DEVICE_MEMORY_BASE",
    "DIMM_OFFLINE",
    "FREEZE_CREATE",
    "FREEZE_DESTROY",
    "KMEM",
    "LEGACY_PMEM",
    "MEMMAP_ON_MEMORY",
    "MID_INIT",
    "MID_TEARDOWN",
    "NVDIMM_MIXED",
    "SCENARIOS",
    "VIRTIO_MEM",
    "GuestStep",
    "IomemEntry",
    "KernelSupport",
    "Layout",
    "Namespace",
    "Nvdimm",
    "Observed",
    "QmpStep",
    "Scenario",
    "ScenarioError",
    "Stage",
    "apply",
    "apply_stage",
    "check_layout",
    "data_offset",
    "labvm",
    "observe",
    "parse_iomem",
)


# --- Definitions --------------------------------------------------------------------------------
# The device-memory window of QEMU's pc machine starts at 4 GiB when all RAM is below 4 GiB:
# NVDIMMs and pc-dimms are placed there in order.
DEVICE_MEMORY_BASE = 0x1_0000_0000
ALL_KERNELS = ("5.10", "6.1", "6.12", "7.2")
_PFN_INFO = 8 * 1024  # the pfn/dax info block at the start of a namespace (SZ_8K)
_ALIGN = 2 * MiB  # default pfn/dax alignment on x86 (PMD size)

_LABELS = GuestStep(ndctl.reset_labels())


def data_offset(raw: int, map_: str) -> int:
    """Start of the data in a pfn/dax namespace: nd_pfn_init() (drivers/nvdimm/pfn_devs.c).

    ``map=dev`` reserves the info block plus 64 bytes (MAX_STRUCT_PAGE_SIZE) of memmap per page
    of ``raw - 8K``; ``map=mem`` only the info block; both rounded up to the alignment.
    """
    npfns = (raw - _PFN_INFO) // 4096
    need = _PFN_INFO + (64 * npfns if map_ == "dev" else 0)
    return -(-need // _ALIGN) * _ALIGN


def _ns(dev: str, mode: str, map_: str, raw: int, name: str | None = None) -> Namespace:
    return Namespace(dev, mode, map_, raw - data_offset(raw, map_), name)


def _create(mode: str, map_: str, size: int, name: str) -> GuestStep:
    return GuestStep(ndctl.create_namespace(mode, map_, size, name))


def _ram_blocks(mem: int) -> tuple[tuple[int, int, str], ...]:
    return ((0, mem // (128 * MiB) - 1, "online"),)


# nvdimm-mixed: sizes are multiples of 16 MiB but not of 128 MiB, created back to back from
# 0x100000000: A ends in section 33, B and C share sections with their neighbours, D's tail
# section 37 is only partly present (lab-notes §5.1, on a 1 GiB NVDIMM).
_MIXED = (
    ("A_fsdax_dev", "fsdax", "dev", 192 * MiB),
    ("B_devdax_mem", "devdax", "mem", 96 * MiB),
    ("C_fsdax_mem", "fsdax", "mem", 160 * MiB),
    ("D_devdax_dev", "devdax", "dev", 272 * MiB),
)


def _mixed_layout() -> Layout:
    nss, io = (
        [],
        [
            IomemEntry(
                DEVICE_MEMORY_BASE, DEVICE_MEMORY_BASE + GiB - 128 * 1024 - 1, "Persistent Memory"
            )
        ],
    )
    start = DEVICE_MEMORY_BASE
    for i, (name, mode, map_, raw) in enumerate(_MIXED):
        nss.append(_ns(f"namespace0.{i}", mode, map_, raw, name))
        end = start + raw - 1
        if mode == "devdax":  # device-dax claims the data part, the namespace keeps the head
            off = data_offset(raw, map_)
            io += [
                IomemEntry(start, start + off - 1, f"namespace0.{i}", 1),
                IomemEntry(start + off, end, f"dax0.{i}", 1),
            ]
        else:
            io.append(IomemEntry(start, end, f"namespace0.{i}", 1))
        start = end + 1
    return Layout(
        tuple(nss), (DEVICE_MEMORY_BASE, DEVICE_MEMORY_BASE + GiB - 1), tuple(io), _ram_blocks(GiB)
    )


NVDIMM_MIXED = Scenario(
    name="nvdimm-mixed",
    description="Labelled 1 GiB NVDIMM with fsdax/devdax x map=dev/map=mem namespaces of "
    "192M/96M/160M/272M: shared sections (33-35), a partial tail section (37, 40/64), "
    "altmap reserve on map=dev",
    mem=GiB,
    nvdimms=(Nvdimm(GiB),),
    stages=(
        Stage(
            "namespaces",
            (_LABELS, *(_create(m, mp, sz, n) for n, m, mp, sz in _MIXED)),
            _mixed_layout(),
        ),
    ),
    kernels=tuple(KernelSupport(k) for k in ALL_KERNELS),
)

# legacy-pmem: memmap=208M!1104M marks 0x45000000-0x51ffffff as e820 type 12 inside the 2 GiB
# of RAM: it shares the early sections 8 and 10 with System RAM; section 9 is pmem only, so
# memory block 9 does not exist (lab-notes §5.3).
_LEGACY = (0x4500_0000, 0x51FF_FFFF)
LEGACY_PMEM = Scenario(
    name="legacy-pmem",
    description="Legacy e820 pmem (memmap=208M!1104M) reconfigured to fsdax --map=dev: pmem in "
    "early System RAM sections 8 and 10 (IS_EARLY|TAINT_ZONE_DEVICE)",
    mem=2 * GiB,
    append=("memmap=208M!1104M",),
    stages=(
        Stage(
            "fsdax-dev",
            (GuestStep(ndctl.reconfigure("namespace0.0", "fsdax", "dev")),),
            Layout(
                (_ns("namespace0.0", "fsdax", "dev", 208 * MiB),),
                _LEGACY,
                (
                    IomemEntry(*_LEGACY, "Persistent Memory (legacy)"),
                    IomemEntry(*_LEGACY, "namespace0.0", 1),
                ),
                ((0, 8, "online"), (10, 15, "online")),
            ),
        ),
    ),
    kernels=tuple(KernelSupport(k) for k in ALL_KERNELS),
)

# Kernels whose Debian config auto-onlines hot-added memory (CONFIG_MHP_DEFAULT_ONLINE_TYPE_
# ONLINE_AUTO=y in 6.12 and 7.2; 5.10 and 6.1 leave MEMORY_HOTPLUG_DEFAULT_ONLINE unset):
# memhp_default_state=offline keeps the new blocks offline.
_NO_AUTO_ONLINE = ("memhp_default_state=offline",)
_AUTO_ONLINE_KERNELS = ("6.12", "7.2")


def _hotplug_support() -> tuple[KernelSupport, ...]:
    return tuple(
        KernelSupport(
            k,
            extra_append=_NO_AUTO_ONLINE,
            reason="auto-onlines hot-added memory by default: memhp_default_state=offline",
        )
        if k in _AUTO_ONLINE_KERNELS
        else KernelSupport(k)
        for k in ALL_KERNELS
    )


_DIMM = (DEVICE_MEMORY_BASE, DEVICE_MEMORY_BASE + 256 * MiB - 1)
DIMM_OFFLINE = Scenario(
    name="dimm-offline",
    description="A 256 MiB pc-dimm hot-added over QMP (object-add + device_add) and left offline: "
    "sections 32-33 present with a memmap that online_pages() never initialised",
    mem=GiB,
    dimm_slots=2,
    stages=(
        Stage(
            "hot-added",
            (
                QmpStep(
                    "object-add",
                    (("qom-type", "memory-backend-ram"), ("id", "labmem1"), ("size", 256 * MiB)),
                ),
                QmpStep(
                    "device_add", (("driver", "pc-dimm"), ("id", "labdimm1"), ("memdev", "labmem1"))
                ),
                GuestStep(
                    "for i in $(seq 100); do [ -e /sys/devices/system/memory/memory33 ] && exit 0; "
                    "sleep 0.2; done; exit 1"
                ),
            ),
            Layout(
                (),
                (DEVICE_MEMORY_BASE, 2 * DEVICE_MEMORY_BASE - 1),
                (IomemEntry(*_DIMM, "System RAM"),),
                (*_ram_blocks(GiB), (32, 33, "offline")),
            ),
        ),
    ),
    kernels=_hotplug_support(),
)

# kmem: a 400M devdax namespace (data 0x100200000-0x118ffffff) given to the kmem driver, which
# trims it to whole 128 MiB memory blocks: 0x108000000-0x117ffffff = blocks 33-34. device-dax
# gives up its own dax0.0 resource; kmem requests "dax0.0" over the trimmed range only.
_KMEM_NS = _ns("namespace0.0", "devdax", "mem", 400 * MiB, "K_kmem")
_KMEM_DAX = (DEVICE_MEMORY_BASE + 2 * MiB, DEVICE_MEMORY_BASE + 400 * MiB - 1)
_KMEM_RAM = (0x1_0800_0000, 0x1_17FF_FFFF)


def _kmem_layout(state: str) -> Layout:
    io = (
        IomemEntry(
            DEVICE_MEMORY_BASE, DEVICE_MEMORY_BASE + GiB - 128 * 1024 - 1, "Persistent Memory"
        ),
        IomemEntry(DEVICE_MEMORY_BASE, _KMEM_DAX[0] - 1, "namespace0.0", 1),
        IomemEntry(*_KMEM_RAM, "dax0.0", 1),
        IomemEntry(*_KMEM_RAM, "System RAM (kmem)", 2),
    )
    return Layout(
        (_KMEM_NS,),
        (DEVICE_MEMORY_BASE, DEVICE_MEMORY_BASE + GiB - 1),
        io,
        (*_ram_blocks(GiB), (33, 34, state)),
    )


# 5.10 also builds dax_pmem_compat (DEV_DAX_PMEM_COMPAT=m), which binds devdax namespaces in the
# old "dax-class" model that daxctl cannot reconfigure ("device model is dax-class"): switch to
# the dax-bus model first (daxctl-migrate-device-model(1)). Harmless where the module is absent.
_BUS_MODEL = GuestStep(
    "daxctl migrate-device-model && { modprobe -r dax_pmem_compat 2>/dev/null; modprobe dax_pmem; }"
)

KMEM = Scenario(
    name="kmem",
    description="A devdax namespace reconfigured to system-ram (kmem): memory blocks 33-34 first "
    "offline (memmap not initialised), then online",
    mem=GiB,
    nvdimms=(Nvdimm(GiB),),
    stages=(
        Stage(
            "kmem-offline",
            (
                _BUS_MODEL,
                _LABELS,
                _create("devdax", "mem", 400 * MiB, "K_kmem"),
                GuestStep("daxctl reconfigure-device --mode=system-ram --no-online dax0.0"),
            ),
            _kmem_layout("offline"),
        ),
        Stage("kmem-online", (GuestStep("daxctl online-memory dax0.0"),), _kmem_layout("online")),
    ),
    kernels=_hotplug_support(),
)

# mid-init / mid-teardown: the guest is frozen by lab.freeze (gdbstub, nokaslr)
# while one 192M fsdax --map=dev namespace is created / destroyed; the stages here are the
# layout before the freeze and after the guest was let go.
_FREEZE_NS = (("F_fsdax_dev", "fsdax", "dev", 192 * MiB),)
_FREEZE_IO = (
    IomemEntry(DEVICE_MEMORY_BASE, DEVICE_MEMORY_BASE + GiB - 128 * 1024 - 1, "Persistent Memory"),
)
_FREEZE_EMPTY = Layout(
    (), (DEVICE_MEMORY_BASE, DEVICE_MEMORY_BASE + GiB - 1), _FREEZE_IO, _ram_blocks(GiB)
)
_FREEZE_ONE = Layout(
    (_ns("namespace0.0", "fsdax", "dev", 192 * MiB, "F_fsdax_dev"),),
    _FREEZE_EMPTY.iomem_window,
    (
        *_FREEZE_IO,
        IomemEntry(DEVICE_MEMORY_BASE, DEVICE_MEMORY_BASE + 192 * MiB - 1, "namespace0.0", 1),
    ),
    _ram_blocks(GiB),
)
FREEZE_CREATE = _create("fsdax", "dev", 192 * MiB, "F_fsdax_dev")
FREEZE_DESTROY = GuestStep(ndctl.destroy_namespace("namespace0.0"))
_FREEZE_KERNELS = (
    KernelSupport(
        "5.10",
        reason="per-page init is __init_single_page.constprop.0 (no "
        "__init_zone_device_page); detected from the symbol table",
    ),
    *(KernelSupport(k) for k in ("6.1", "6.12", "7.2")),
)
MID_INIT = Scenario(
    name="mid-init",
    description="Frozen inside memmap_init_zone_device() (gdbstub): at entry and after N struct "
    "pages; pgmap already in pgmap_array, nr_range still 0",
    mem=GiB,
    nvdimms=(Nvdimm(GiB),),
    append=("nokaslr",),
    stages=(
        Stage("labels", (_LABELS,), _FREEZE_EMPTY),
        Stage("created", (FREEZE_CREATE,), _FREEZE_ONE),
    ),
    kernels=_FREEZE_KERNELS,
)
MID_TEARDOWN = Scenario(
    name="mid-teardown",
    description="Frozen inside memunmap_pages() after percpu_ref_kill() (gdbstub) while the "
    "namespace is destroyed: get_dev_pagemap() fails, pgmap_array still holds it",
    mem=GiB,
    nvdimms=(Nvdimm(GiB),),
    append=("nokaslr",),
    stages=(
        Stage("created", (_LABELS, FREEZE_CREATE), _FREEZE_ONE),
        Stage("destroyed", (FREEZE_DESTROY,), _FREEZE_EMPTY),
    ),
    kernels=_FREEZE_KERNELS,
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (NVDIMM_MIXED, LEGACY_PMEM, DIMM_OFFLINE, KMEM, MID_INIT, MID_TEARDOWN,
              VIRTIO_MEM, MEMMAP_ON_MEMORY)
}

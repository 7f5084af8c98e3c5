"""Lab scenarios of today's hot-plugged RAM: virtio-mem and memmap_on_memory, as data.

Registered in :data:`lab.scenarios.SCENARIOS` beside the persistent-memory layouts. The
addresses follow from QEMU's ``pc`` machine with 1 GiB of RAM: the device-memory window
(virtio-mem's region, pc-dimms) starts at 0x100000000, section / memory block 32; 128 MiB
blocks, virtio-mem sub-blocks of 2 MiB (measured on 6.1 and 6.12, today-memory-notes.md).
"""

from __future__ import annotations

from lab.layout import (
    GuestStep,
    IomemEntry,
    KernelSupport,
    Layout,
    MiB,
    QmpStep,
    Scenario,
    Stage,
)

__all__ = ("MEMMAP_ON_MEMORY", "VIRTIO_MEM", "VIRTIO_MEM_OFFLINE", "kpageflags_offline_script")

_BASE = 0x1_0000_0000
_BOOT_BLOCKS = (0, 7, "online")  # 1 GiB of boot RAM


def kpageflags_offline_script(lo: int, hi: int) -> str:
    """A guest shell command printing the ``KPF_OFFLINE`` (bit 23) runs of ``[lo, hi)``.

    One line per run, ``0x<start> 0x<end>`` (end exclusive), read from /proc/kpageflags.
    """
    return (
        "python3 -c \"import struct\n"
        f"lo,hi={lo},{hi}\n"
        "f=open('/proc/kpageflags','rb'); f.seek(lo*8)\n"
        "w=struct.unpack('%dQ'%(hi-lo), f.read((hi-lo)*8)); s=None\n"
        "for i,x in enumerate(w+(0,)):\n"
        "  o=x>>23&1 if i<len(w) else 0\n"
        "  if o and s is None: s=i\n"
        "  if not o and s is not None: print(hex(lo+s),hex(lo+i)); s=None\n\""
    )


def _wait(cond: str, what: str, tries: int = 300) -> GuestStep:
    """Poll *cond* (a shell test) every 0.2 s; fail after *tries* polls."""
    return GuestStep(
        f"for i in $(seq {tries}); do {cond} && exit 0; sleep 0.2; done; "
        f"echo 'timed out waiting for {what}' >&2; exit 1",
        timeout=tries * 0.2 + 30,
    )


def _block_state(n: int) -> str:
    return f"$(cat /sys/devices/system/memory/memory{n}/state 2>/dev/null)"


# --- virtio-mem ---------------------------------------------------------------------------------
# A 512 MiB virtio-mem region (RAM-backed: only plugged memory is touched) asked for 300 MiB at
# boot: virtio_mem (=m on every lab kernel, not autoloaded) plugs blocks 32 and 33 and 44 MiB
# of block 34 and onlines them (memhp_default_state=online_movable, so that unplug can
# migrate); the 42 unplugged sub-blocks of block 34, PFNs 0x112c00-0x117fff, stay
# PageOffline(). Shrinking to 200 MiB unplugs block 34 whole (offlined and removed: its
# sections vanish) and 56 MiB of block 33: 0x10c800-0x10ffff. Sizes are not multiples of
# 128 MiB so that a block stays partly plugged (today-memory-notes.md, 6.1 and 6.12).
VMEM_OFFLINE_300M = (0x112C00, 0x118000)
VMEM_OFFLINE_200M = (0x10C800, 0x110000)
_VMEM_WINDOW = (_BASE, _BASE + 512 * MiB - 1)


def _vmem_layout(plugged_end: int, blocks: tuple[tuple[int, int, str], ...]) -> Layout:
    return Layout(
        (),
        _VMEM_WINDOW,
        (
            IomemEntry(*_VMEM_WINDOW, "virtio0"),
            IomemEntry(_BASE, plugged_end - 1, "System RAM (virtio_mem)", 1),
        ),
        (_BOOT_BLOCKS, *blocks),
    )


_VMEM_KERNELS = tuple(KernelSupport(k) for k in ("5.10", "6.1", "6.12", "7.2"))

VIRTIO_MEM = Scenario(
    name="virtio-mem",
    description="virtio-mem (512 MiB region, sub-blocks of 2 MiB) plugged to 300 MiB: blocks "
    "32-34 online, the unplugged sub-blocks of block 34 PageOffline; then resized to 200 MiB "
    "over QMP qom-set: block 34 unplugged and removed, 56 MiB of block 33 PageOffline",
    mem=1024 * MiB,
    dimm_slots=1,
    append=("memhp_default_state=online_movable",),
    qemu_args=(
        "-object", "memory-backend-ram,id=vmem0,size=512M",
        "-device", "virtio-mem-pci,id=vm0,memdev=vmem0,node=0,requested-size=300M",
    ),
    stages=(
        Stage(
            "plugged-300M",
            (
                GuestStep("modprobe virtio_mem"),
                _wait(f'[ "{_block_state(34)}" = online ]', "memory34 online"),
            ),
            _vmem_layout(_BASE + 384 * MiB, ((32, 34, "online"),)),
        ),
        Stage(
            "resized-200M",
            (
                QmpStep(
                    "qom-set",
                    (("path", "vm0"), ("property", "requested-size"), ("value", 200 * MiB)),
                ),
                _wait(
                    "[ ! -e /sys/devices/system/memory/memory34 ] && "
                    + kpageflags_offline_script(0x10C800, 0x10C801)
                    + " | grep -q .",
                    "block 34 removed and 0x10c800 offline",
                ),
            ),
            _vmem_layout(_BASE + 256 * MiB, ((32, 33, "online"),)),
        ),
    ),
    kernels=_VMEM_KERNELS,
)
VIRTIO_MEM_OFFLINE = {"plugged-300M": VMEM_OFFLINE_300M, "resized-200M": VMEM_OFFLINE_200M}

# --- memmap_on_memory ---------------------------------------------------------------------------
# A 128 MiB pc-dimm (exactly one memory block: 6.1 applies memmap_on_memory only to a hot-add
# of one block, mhp_supports_memmap_on_memory()) hot-added with
# memory_hotplug.memmap_on_memory=1: its memmap, 2 MiB = 512 PFNs 0x100000-0x1001ff, lives in
# the block itself. Left offline (memhp_default_state=offline where the config auto-onlines),
# then onlined movable: 6.1 shows those PFNs RESERVED|OWNER_PRIVATE, 6.12 OWNER_PRIVATE only
# (today-memory-notes.md).
MOM_VMEMMAP = (0x100000, 0x100200)
_MOM_DIMM = (_BASE, _BASE + 128 * MiB - 1)


def _mom_layout(state: str) -> Layout:
    return Layout(
        (),
        (_BASE, 2 * _BASE - 1),
        (IomemEntry(*_MOM_DIMM, "System RAM"),),
        (_BOOT_BLOCKS, (32, 32, state)),
    )


_MOM_NOT_510 = KernelSupport(
    "5.10",
    supported=False,
    reason="no memmap_on_memory: it came with a08a2ae34613 (\"mm,memory_hotplug: allocate "
    "memmap from the added memory range\") in v5.13; 5.10 has no "
    "memory_hotplug.memmap_on_memory parameter and no struct memory_block nr_vmemmap_pages",
)
MEMMAP_ON_MEMORY = Scenario(
    name="memmap-on-memory",
    description="A 128 MiB pc-dimm hot-added over QMP with memory_hotplug.memmap_on_memory=1: "
    "block 32's first 512 PFNs hold its own memmap; left offline, then onlined movable",
    mem=1024 * MiB,
    dimm_slots=1,
    append=("memory_hotplug.memmap_on_memory=1",),
    stages=(
        Stage(
            "hot-added",
            (
                GuestStep("grep -qx Y /sys/module/memory_hotplug/parameters/memmap_on_memory"),
                QmpStep(
                    "object-add",
                    (("qom-type", "memory-backend-ram"), ("id", "mommem"), ("size", 128 * MiB)),
                ),
                QmpStep("device_add", (("driver", "pc-dimm"), ("id", "momdimm"),
                                       ("memdev", "mommem"))),
                _wait("[ -e /sys/devices/system/memory/memory32 ]", "memory32"),
            ),
            _mom_layout("offline"),
        ),
        Stage(
            "onlined",
            (GuestStep("echo online_movable > /sys/devices/system/memory/memory32/state"),),
            _mom_layout("online"),
        ),
    ),
    kernels=(
        _MOM_NOT_510,
        KernelSupport("6.1"),
        *(
            KernelSupport(
                k,
                extra_append=("memhp_default_state=offline",),
                reason="auto-onlines hot-added memory by default: memhp_default_state=offline",
            )
            for k in ("6.12", "7.2")
        ),
    ),
)

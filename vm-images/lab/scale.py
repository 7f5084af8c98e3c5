"""Scale scenarios: TiB-sized sparse NVDIMMs with many pgmaps, as data (issue 4).

Built on the dataclasses of :mod:`lab.scenarios` and checked with its
:func:`~lab.scenarios.check_layout`. Three layouts:

* :data:`SCALE_TIB` (``scale-tib``): one 1 TiB labelled NVDIMM (sparse backing file) carved into
  five namespaces of 966 GiB in all: fsdax/devdax x ``map=dev``/``map=mem``, sizes multiples of
  16 MiB but not of 128 MiB, so neighbours share sections. Live only: an ELF dump would be the
  whole 1 TiB plus RAM (lab-notes §7, §10).
* :data:`SCALE_CI` (``scale-ci``): the same 1 TiB NVDIMM with three small namespaces (about
  17 GiB, a few seconds of ``memmap_init_zone_device`` under TCG): the cheap lab test.
* :data:`SCALE_DUMP` (``scale-dump``): 1 GiB RAM + one 128 GiB NVDIMM with two namespaces
  created before and a 120 GiB ``map=dev`` devdax namespace created under
  :func:`lab.freeze.mid_init` (:data:`FREEZE_LARGE`). The ELF dump is 138.5 GB
  long but sparse (:func:`lab.qmp.sparse_sink`; its disk size is in README § Performance).
  What bounds its size is time, not disk: QEMU writes every byte of the guest's physical
  range into the FIFO, and mid_init takes two dumps (entry, mid), so a dump of the 1 TiB
  layout would take about eight times as long as this one (vm-images/README.md times both).

QEMU's TCG CPU has 40 physical-address bits by default, which ends below 1 TiB + 4 GiB;
:func:`scale_labvm` adds :data:`QEMU_ARGS` (``-cpu max,phys-bits=44``, the last ``-cpu`` wins).
``maxmem`` is LabVM's default, RAM + NVDIMMs. ``map=mem`` namespaces take 64 B of guest RAM per
4 KiB page (1/64): the 6 GiB of ``map=mem`` in :data:`SCALE_TIB` cost 97 MiB of its 2 GiB.
With a 1 TiB window QEMU skips the AMD HyperTransport hole and puts the NVDIMM at 1 TiB
(:func:`device_base`).

``python -m lab.scale dump OUTDIR [IGNORE]`` makes the frozen dump;
``python -m lab.scale live-bench [--icount N] OUT.json [SCENARIO] [BENCH ARGS]``
runs scripts/bench_classify.py in a guest of the scenario (default ``scale-tib``), with
``--icount N`` under QEMU's instruction counting (guest times count instructions, not host
wall time: see :class:`~lab.vm.LabVM`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from lab import ndctl
from lab.scenarios import (
    DEVICE_MEMORY_BASE,
    GiB,
    GuestStep,
    IomemEntry,
    KernelSupport,
    Layout,
    MiB,
    Namespace,
    Nvdimm,
    Scenario,
    Stage,
    data_offset,
    labvm,
)

__all__ = (
    "FREEZE_LARGE",
    "LABELS",
    "QEMU_ARGS",
    "SCALE_CI",
    "SCALE_DUMP",
    "SCALE_SCENARIOS",
    "SCALE_TIB",
    "NsSpec",
    "TiB",
    "create_step",
    "device_base",
    "live_bench",
    "make_frozen_dump",
    "ns_layout",
    "scale_labvm",
)

TiB = 1 << 40
AMD_HT_START = 0xFD_0000_0000
LABEL_SIZE = 128 * 1024
QEMU_ARGS = ("-cpu", "max,phys-bits=44")
LABELS = GuestStep(ndctl.reset_labels())
#: (name, mode, map, raw size) of one namespace, created back to back in region0.
NsSpec = tuple[str, str, str, int]


def create_step(spec: NsSpec, timeout: float = 600.0) -> GuestStep:
    """``ndctl create-namespace`` for ``spec`` (memmap init time under TCG: vm-images/README)."""
    name, mode, map_, raw = spec
    return GuestStep(ndctl.create_namespace(mode, map_, raw, name), timeout)


def device_base(nvdimm: int) -> int:
    """Where QEMU 7.2's pc machine puts the device-memory window holding ``nvdimm`` bytes.

    At 4 GiB, unless the window would reach the AMD HyperTransport hole at 0xfd00000000 (the
    TCG ``max`` CPU is AMD): then at 1 TiB (x86_update_above_4g_mem_start(), hw/i386/x86.c;
    the guest shows ``fd00000000-ffffffffff : Reserved``). One GiB of alignment per slot.
    """
    return TiB if DEVICE_MEMORY_BASE + nvdimm + GiB > AMD_HT_START else DEVICE_MEMORY_BASE


def ns_layout(nvdimm: int, mem: int, specs: tuple[NsSpec, ...]) -> Layout:
    """The layout after creating ``specs`` back to back on one NVDIMM of ``nvdimm`` bytes.

    devdax namespaces keep their head (info block, padding, map=dev memmap) and ``dax0.N``
    claims the data; fsdax namespaces are one iomem entry. Only RAM has memory blocks.
    """
    base = device_base(nvdimm)
    window = (base, base + nvdimm - 1)
    io = [IomemEntry(base, base + nvdimm - LABEL_SIZE - 1, "Persistent Memory")]
    nss = []
    start = base
    for i, (name, mode, map_, raw) in enumerate(specs):
        off = data_offset(raw, map_)
        nss.append(Namespace(f"namespace0.{i}", mode, map_, raw - off, name))
        end = start + raw - 1
        if mode == "devdax":
            io += [
                IomemEntry(start, start + off - 1, f"namespace0.{i}", 1),
                IomemEntry(start + off, end, f"dax0.{i}", 1),
            ]
        else:
            io.append(IomemEntry(start, end, f"namespace0.{i}", 1))
        start = end + 1
    return Layout(tuple(nss), window, tuple(io), ((0, mem // (128 * MiB) - 1, "online"),))


def _stages(nvdimm: int, mem: int, specs: tuple[NsSpec, ...]) -> tuple[Stage, ...]:
    return (
        Stage("labels", (LABELS,), ns_layout(nvdimm, mem, ())),
        Stage("namespaces", tuple(create_step(s) for s in specs), ns_layout(nvdimm, mem, specs)),
    )


_K61 = (
    KernelSupport("6.1"),
    *(
        KernelSupport(
            k,
            False,
            "scale runs on 6.1 only: one kernel suffices for size (CI budget), crash 8.0.2 "
            "opens only 6.1 dumps; per-kernel semantics are tests/vm/test_classify_static.py's",
        )
        for k in ("5.10", "6.12", "7.2")
    ),
)
_TIB_NS: tuple[NsSpec, ...] = (
    ("S1_devdax_dev", "devdax", "dev", 384 * GiB + 16 * MiB),
    ("S2_fsdax_mem", "fsdax", "mem", 4 * GiB + 48 * MiB),
    ("S3_fsdax_dev", "fsdax", "dev", 256 * GiB + 80 * MiB),
    ("S4_devdax_mem", "devdax", "mem", 2 * GiB + 16 * MiB),
    ("S5_fsdax_dev", "fsdax", "dev", 320 * GiB + 32 * MiB),
)
SCALE_TIB = Scenario(
    name="scale-tib",
    description="1 TiB sparse NVDIMM, five namespaces (966 GiB; map=dev and map=mem; sizes "
    "16 MiB but not 128 MiB multiples): live only",
    mem=2 * GiB,
    nvdimms=(Nvdimm(TiB),),
    stages=_stages(TiB, 2 * GiB, _TIB_NS),
    kernels=_K61,
)

_CI_NS: tuple[NsSpec, ...] = (
    ("C1_devdax_dev", "devdax", "dev", 16 * GiB + 16 * MiB),
    ("C2_fsdax_mem", "fsdax", "mem", 1 * GiB + 48 * MiB),
    ("C3_fsdax_dev", "fsdax", "dev", 400 * MiB),
)
SCALE_CI = Scenario(
    name="scale-ci",
    description="1 TiB sparse NVDIMM with three small namespaces (17.4 GiB): cheap live check",
    mem=GiB,
    nvdimms=(Nvdimm(TiB),),
    stages=_stages(TiB, GiB, _CI_NS),
    kernels=_K61,
)

_DUMP_NVDIMM = 128 * GiB
_DUMP_BEFORE: tuple[NsSpec, ...] = (
    ("D1_fsdax_dev", "fsdax", "dev", 400 * MiB),
    ("D2_fsdax_mem", "fsdax", "mem", 1 * GiB + 48 * MiB),
)
_DUMP_FROZEN: NsSpec = ("D3_devdax_dev", "devdax", "dev", 120 * GiB + 16 * MiB)
#: The namespace created while :func:`~lab.freeze.mid_init` holds the guest.
FREEZE_LARGE = create_step(_DUMP_FROZEN)
SCALE_DUMP = Scenario(
    name="scale-dump",
    description="1 GiB RAM + 128 GiB NVDIMM (sparse ELF dump: 138.5 GB long, ~195 MB on "
    "disk): two namespaces, then a 120 GiB devdax map=dev one frozen mid-init",
    mem=GiB,
    nvdimms=(Nvdimm(_DUMP_NVDIMM),),
    append=("nokaslr",),
    stages=(
        *_stages(_DUMP_NVDIMM, GiB, _DUMP_BEFORE),
        Stage(
            "frozen", (FREEZE_LARGE,), ns_layout(_DUMP_NVDIMM, GiB, (*_DUMP_BEFORE, _DUMP_FROZEN))
        ),
    ),
    kernels=_K61,
)

SCALE_SCENARIOS: dict[str, Scenario] = {s.name: s for s in (SCALE_TIB, SCALE_CI, SCALE_DUMP)}


def scale_labvm(scenario: Scenario, kernel: str = "6.1", **extra: Any) -> Any:
    """:func:`~lab.scenarios.labvm` plus :data:`QEMU_ARGS` (44 physical bits)."""
    qargs = [*QEMU_ARGS, *extra.pop("qemu_args", ())]
    return labvm(scenario, kernel, qemu_args=qargs, **extra)


def make_frozen_dump(outdir: Path, kernel: str = "6.1", ignore: int = 3000) -> dict[str, Any]:
    """Boot :data:`SCALE_DUMP`, freeze in the 120 GiB namespace's memmap init, dump, let go.

    Keeps ``outdir/mid-<ignore>.vmcore`` (138.5 GB long, ~195 MB allocated: delete it after
    use, copy it with ``cp --sparse=always``), deletes the
    entry dump, writes and returns ``outdir/freeze.json``: the gdb facts of both stops, the
    namespace layout check after the guest resumed, and timings.
    """
    from lab import freeze, images
    from lab.scenarios import apply_stage, check_layout

    kp = images.ensure_built(kernel)
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with scale_labvm(SCALE_DUMP, kernel, gdbstub=True, boot_timeout=300) as vm:
        boot = time.monotonic() - t0
        for st in SCALE_DUMP.stages[:2]:
            diffs = check_layout(apply_stage(vm, st), st.layout)
            if diffs:
                raise RuntimeError(f"stage {st.name}: {diffs}")
        try:
            # Two 138.5 GB (sparse) ELF dumps: the timeout leaves room for a loaded host
            # (the measured time is in vm-images/README.md, scale-dump).
            run = freeze.mid_init(vm, kp.vmlinux, FREEZE_LARGE.command, outdir, ignore,
                                  dump_timeout=900)  # fmt: skip
        except BaseException:
            for f in outdir.glob("mid-*.vmcore"):  # never leave them behind
                f.unlink(missing_ok=True)
            raise
        after = check_layout(
            apply_stage(vm, Stage("frozen", (), SCALE_DUMP.stages[2].layout)),
            SCALE_DUMP.stages[2].layout,
        )
    entry, mid = run.freezes
    entry.dump.unlink(missing_ok=True)
    doc = {
        "kernel": kernel,
        "vmlinux": str(kp.vmlinux),
        "dump": str(mid.dump),
        "dump_bytes": mid.dump.stat().st_size,
        "ignore": ignore,
        "entry": {"function": entry.function, **entry.facts},
        "stop": {"function": mid.function, **mid.facts},
        "command_rc": run.command_rc,
        "layout_diffs_after": after,
        "boot_s": round(boot, 1),
        "freeze_wall_s": round(run.wall_seconds, 1),
        "dump_s": [round(entry.dump_seconds, 1), round(mid.dump_seconds, 1)],
    }
    (outdir / "freeze.json").write_text(json.dumps(doc, indent=1))
    return doc


def live_bench(
    out: Path,
    scenario: Scenario = SCALE_TIB,
    kernel: str = "6.1",
    bench_args: str = "",
    icount: int | None = None,
) -> dict[str, Any]:
    """Boot ``scenario``, create its namespaces, run scripts/bench_classify.py in the guest.

    The bench's JSON goes to ``out``; returns it with the boot and setup timings added.
    ``icount``: boot with QEMU's instruction counting (:class:`~lab.vm.LabVM`),
    so that the times the bench measures in the guest count instructions and do not depend
    on what else runs on the host.
    """
    from lab.scenarios import apply_stage, check_layout

    scripts = Path(__file__).resolve().parents[2] / "scripts"
    t0 = time.monotonic()
    extra: dict[str, Any] = {}
    if icount is not None:
        extra = {"icount": icount, "smp": 1, "boot_timeout": 900}
    with scale_labvm(scenario, kernel, **{"boot_timeout": 300, **extra}) as vm:
        timings = {"boot_s": time.monotonic() - t0}
        for st in scenario.stages:
            t1 = time.monotonic()
            diffs = check_layout(apply_stage(vm, st), st.layout)
            timings[f"stage_{st.name}_s"] = time.monotonic() - t1
            if diffs:
                raise RuntimeError(f"stage {st.name}: {diffs}")
        for name in ("bench_classify.py", "bench_stages.py", "bench_semantics.py"):
            vm.put(scripts / name, f"/root/{name}")
        r = vm.run(f"python3 /root/bench_classify.py --json {bench_args}", timeout=7200)
        free = vm.run("free -m; uname -r", timeout=60).stdout
    if not r.stdout.strip().startswith("{"):
        raise RuntimeError(f"bench failed in the guest (rc={r.rc}): {r.stdout[-2000:]}{r.stderr}")
    doc = json.loads(r.stdout)
    doc["lab"] = {
        **{k: round(v, 1) for k, v in timings.items()},
        "scenario": scenario.name,
        "icount": icount,
        "guest": free,
        "bench_rc": r.rc,
    }
    out.write_text(json.dumps(doc, indent=1))
    return doc


if __name__ == "__main__":
    # python -m lab.scale dump OUTDIR [IGNORE]
    # python -m lab.scale live-bench [--icount N] OUT.json [SCENARIO] [BENCH ARGS...]
    icount_arg = None
    if sys.argv[2:3] == ["--icount"] and len(sys.argv) > 3:
        icount_arg = int(sys.argv[3])
        del sys.argv[2:4]
    if len(sys.argv) >= 3 and sys.argv[1] == "dump":
        ign = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
        print(json.dumps(make_frozen_dump(Path(sys.argv[2]), ignore=ign), indent=1))
    elif len(sys.argv) >= 3 and sys.argv[1] == "live-bench":
        scn = SCALE_SCENARIOS[sys.argv[3]] if len(sys.argv) > 3 else SCALE_TIB
        res = live_bench(
            Path(sys.argv[2]), scn, bench_args=" ".join(sys.argv[4:]), icount=icount_arg
        )
        print(json.dumps(res["lab"], indent=1))
    else:
        sys.exit(
            "usage: python -m lab.scale dump OUTDIR [IGNORE]\n"
            "       python -m lab.scale live-bench [--icount N] OUT.json [SCENARIO]"
            " [ARGS]"
        )

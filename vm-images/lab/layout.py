"""Lab layouts: the model of a scenario, applying it to a guest, checking what the guest reports.

A :class:`Scenario` says how to boot a guest (memory, NVDIMMs, DIMM slots, kernel arguments),
which setup :class:`Stage` s to run (guest commands such as ``ndctl create-namespace``, or QMP
commands such as ``device_add``) and, per stage, the declared :class:`Layout`: the namespaces
(``ndctl list``), the ``/proc/iomem`` entries inside the pmem window and the memory-block states
(``/sys/devices/system/memory``). :func:`apply` runs the stages on a started
:class:`~lab.vm.LabVM` and returns what the guest reports (:class:`Observed`);
:func:`check_layout` compares it with the declaration. The scenarios themselves are data in
:mod:`lab.scenarios`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = (
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
    "Step",
    "apply",
    "apply_stage",
    "check_layout",
    "labvm",
    "observe",
    "parse_iomem",
)

MiB = 1 << 20
GiB = 1 << 30


class ScenarioError(RuntimeError):
    """A setup step failed in the guest (its command, rc and output are in the message)."""


class _VM(Protocol):
    """What the scenarios need from :class:`lab.vm.LabVM`."""

    def run(self, cmd: str, timeout: float = ...) -> Any: ...

    def qmp(self, cmd: str, /, **args: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Nvdimm:
    """One emulated NVDIMM (``-device nvdimm``) with a fresh sparse backing file."""

    size: int
    label_size: int = 128 * 1024


@dataclass(frozen=True, slots=True)
class GuestStep:
    """A shell command run in the guest; a non-zero exit status fails the scenario."""

    command: str
    timeout: float = 120.0


@dataclass(frozen=True, slots=True)
class QmpStep:
    """A QMP command sent to QEMU (``arguments`` as (name, value) pairs to stay hashable)."""

    execute: str
    arguments: tuple[tuple[str, Any], ...] = ()


Step = GuestStep | QmpStep


@dataclass(frozen=True, slots=True)
class Namespace:
    """An expected namespace as ``ndctl list -N`` reports it.

    ``size`` is ndctl's ``size``: the usable data size (raw size minus the pfn/dax info block
    and, for ``map=dev``, the memmap stored on the device).
    """

    dev: str
    mode: str
    map: str | None
    size: int
    name: str | None = None


@dataclass(frozen=True, slots=True, order=True)
class IomemEntry:
    """One ``/proc/iomem`` line: inclusive range, name and nesting depth (0 = top level)."""

    start: int
    end: int
    name: str
    depth: int = 0

    def __str__(self) -> str:
        return f"{'  ' * self.depth}{self.start:x}-{self.end:x} : {self.name}"


@dataclass(frozen=True, slots=True)
class Layout:
    """The declared layout after a stage.

    ``iomem`` lists *every* entry that intersects ``iomem_window`` (inclusive bounds);
    ``memory_blocks`` maps *every* memory block of the guest to its state, as
    ``(first_block, last_block, state)`` runs.
    """

    namespaces: tuple[Namespace, ...]
    iomem_window: tuple[int, int]
    iomem: tuple[IomemEntry, ...]
    memory_blocks: tuple[tuple[int, int, str], ...]
    block_size: int = 128 * MiB


@dataclass(frozen=True, slots=True)
class Stage:
    """A named step list and the layout the guest must show once it has run."""

    name: str
    steps: tuple[Step, ...]
    layout: Layout


@dataclass(frozen=True, slots=True)
class KernelSupport:
    """Whether a kernel of the matrix runs a scenario, and what it needs for it."""

    kernel: str
    supported: bool = True
    reason: str = ""
    extra_append: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Scenario:
    """A persistent-memory situation the lab can build in a guest."""

    name: str
    description: str
    mem: int
    stages: tuple[Stage, ...]
    kernels: tuple[KernelSupport, ...]
    nvdimms: tuple[Nvdimm, ...] = ()
    dimm_slots: int = 0
    append: tuple[str, ...] = ()
    maxmem: int = 8 * GiB
    #: Extra QEMU arguments (e.g. a virtio-mem device), appended to the command line.
    qemu_args: tuple[str, ...] = ()

    def support(self, kernel: str) -> KernelSupport:
        """The :class:`KernelSupport` entry of ``kernel`` (unsupported when not listed)."""
        for k in self.kernels:
            if k.kernel == kernel:
                return k
        return KernelSupport(kernel, False, f"scenario {self.name} does not list kernel {kernel}")

    def kernel_append(self, kernel: str) -> tuple[str, ...]:
        """Kernel command-line arguments for ``kernel``: the scenario's plus the kernel's own."""
        return (*self.append, *self.support(kernel).extra_append)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"scenario {self.name} has no stage {name!r}")


@dataclass(frozen=True, slots=True)
class Observed:
    """What the guest reports after a stage (the raw material is kept for diagnostics)."""

    stage: str
    namespaces: tuple[Namespace, ...]
    iomem: tuple[IomemEntry, ...]
    memory_blocks: dict[int, str] = field(hash=False)
    block_size: int
    ndctl_json: str = ""


_IOMEM_RE = re.compile(r"^(?P<indent> *)(?P<start>[0-9a-f]+)-(?P<end>[0-9a-f]+) : (?P<name>.*)$")


def parse_iomem(text: str) -> tuple[IomemEntry, ...]:
    """Parse ``/proc/iomem`` (read as root, so the addresses are real)."""
    out = []
    for line in text.splitlines():
        m = _IOMEM_RE.match(line)
        if m:
            out.append(
                IomemEntry(int(m["start"], 16), int(m["end"], 16), m["name"], len(m["indent"]) // 2)
            )
    return tuple(out)


def _namespaces(ndctl_json: str) -> tuple[Namespace, ...]:
    text = ndctl_json.strip()
    if not text:
        return ()
    doc = json.loads(text)
    items = doc if isinstance(doc, list) else [doc]
    return tuple(
        Namespace(
            dev=n["dev"], mode=n["mode"], map=n.get("map"), size=int(n["size"]), name=n.get("name")
        )
        for n in items
    )


def _run(vm: _VM, cmd: str, timeout: float = 60.0) -> str:
    res = vm.run(cmd, timeout=timeout)
    if res.rc != 0:
        raise ScenarioError(f"guest command failed (rc={res.rc}): {cmd}\n{res.stdout}{res.stderr}")
    return str(res.stdout)


_OBSERVE = (
    "ndctl list -N; echo @@IOMEM@@; cat /proc/iomem; echo @@BLOCKS@@; "
    "cat /sys/devices/system/memory/block_size_bytes; "
    "for b in /sys/devices/system/memory/memory*; do echo ${b##*memory} $(cat $b/state); done"
)


def observe(vm: _VM, stage: str = "") -> Observed:
    """Read the layout the guest reports: ``ndctl list -N``, ``/proc/iomem``, memory blocks."""
    out = _run(vm, _OBSERVE)
    if "@@IOMEM@@\n" not in out or "@@BLOCKS@@\n" not in out:
        raise ScenarioError(f"unexpected observe output: {out[:2000]!r}")
    ndctl, rest = out.split("@@IOMEM@@\n", 1)
    iomem, blocks = rest.split("@@BLOCKS@@\n", 1)
    lines = blocks.split()
    block_size = int(lines[0], 16)
    states = {int(lines[i]): lines[i + 1] for i in range(1, len(lines) - 1, 2)}
    return Observed(
        stage=stage,
        namespaces=_namespaces(ndctl),
        iomem=parse_iomem(iomem),
        memory_blocks=states,
        block_size=block_size,
        ndctl_json=ndctl,
    )


def apply_stage(vm: _VM, stage: Stage) -> Observed:
    """Run one stage's steps in order, then :func:`observe`."""
    for step in stage.steps:
        if isinstance(step, GuestStep):
            _run(vm, step.command, timeout=step.timeout)
        else:
            vm.qmp(step.execute, **dict(step.arguments))
    return observe(vm, stage.name)


def apply(vm: _VM, scenario: Scenario) -> tuple[Observed, ...]:
    """Run every stage of ``scenario`` on a started guest; one :class:`Observed` per stage."""
    return tuple(apply_stage(vm, s) for s in scenario.stages)


def labvm(scenario: Scenario, kernel: str, **extra: Any) -> Any:
    """An unstarted :class:`~lab.vm.LabVM` configured for ``scenario`` on ``kernel``.

    ``extra`` goes to LabVM (e.g. ``gdbstub=True``, ``disks=[...]``, ``append=[...]`` which is
    added to the scenario's).
    """
    from lab.vm import LabVM
    from lab.vm import Nvdimm as VMNvdimm

    append = [*scenario.kernel_append(kernel), *extra.pop("append", ())]
    kw: dict[str, Any] = {
        "mem": f"{scenario.mem // MiB}M",
        "append": append,
        # unique per process: several sessions share the lab cache and its run/ directory
        "name": extra.pop("name", None) or f"{scenario.name}-{kernel}-{os.getpid()}",
    }
    if scenario.nvdimms:
        kw["nvdimms"] = [
            VMNvdimm(f"{n.size // MiB}M", f"{n.label_size // 1024}K") for n in scenario.nvdimms
        ]
    if scenario.qemu_args:
        kw["qemu_args"] = [*scenario.qemu_args, *extra.pop("qemu_args", ())]
    if scenario.dimm_slots:
        kw["slots"] = scenario.dimm_slots
        kw["maxmem"] = f"{scenario.maxmem // MiB}M"
    return LabVM(kernel, **kw, **extra)


def _expand_blocks(runs: tuple[tuple[int, int, str], ...]) -> dict[int, str]:
    return {b: state for first, last, state in runs for b in range(first, last + 1)}


def check_layout(observed: Observed, expected: Scenario | Layout) -> list[str]:
    """Differences between an observed and the declared layout (empty list = equal).

    ``expected`` may be a :class:`Scenario`, in which case the stage named in
    ``observed.stage`` (or the last stage) is used.
    """
    if isinstance(expected, Scenario):
        names = [s.name for s in expected.stages]
        layout = (
            expected.stage(observed.stage).layout
            if observed.stage in names
            else expected.stages[-1].layout
        )
    else:
        layout = expected
    diffs: list[str] = []
    want_ns = {n.dev: n for n in layout.namespaces}
    got_ns = {n.dev: n for n in observed.namespaces}
    for dev in sorted(set(want_ns) | set(got_ns)):
        if want_ns.get(dev) != got_ns.get(dev):
            diffs.append(
                f"namespace {dev}: declared {want_ns.get(dev)}, observed {got_ns.get(dev)}"
            )
    lo, hi = layout.iomem_window
    got_io = tuple(e for e in observed.iomem if e.start <= hi and e.end >= lo)
    if got_io != layout.iomem:
        diffs.append(
            "iomem in window {:#x}-{:#x}:\n declared:\n  {}\n observed:\n  {}".format(
                lo, hi, "\n  ".join(map(str, layout.iomem)), "\n  ".join(map(str, got_io))
            )
        )
    if observed.block_size != layout.block_size:
        diffs.append(
            f"block_size: declared {layout.block_size:#x}, observed {observed.block_size:#x}"
        )
    want_b = _expand_blocks(layout.memory_blocks)
    if want_b != observed.memory_blocks:
        bad = sorted(
            b
            for b in set(want_b) | set(observed.memory_blocks)
            if want_b.get(b) != observed.memory_blocks.get(b)
        )
        diffs.append(
            "memory blocks: "
            + ", ".join(
                f"memory{b} declared {want_b.get(b)} observed {observed.memory_blocks.get(b)}"
                for b in bad
            )
        )
    return diffs

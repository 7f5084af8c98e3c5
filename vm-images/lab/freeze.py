"""Freeze a lab guest inside the kernel with QEMU's gdbstub and dump it (mid-init, mid-teardown).

A BPF probe cannot stop the kernel half-way through a function; the gdbstub can
(lab-notes §9). The guest runs with ``gdbstub=True`` (LabVM boots it ``nokaslr``), so the
addresses come from ``nm`` of the host's vmlinux (the image's System.map is a placeholder).
gdb runs without a symbol file and is driven line by line through a pipe; while it holds
the guest, the QMP ``dump-guest-memory`` is issued from here.

* :func:`mid_init`: ``ndctl create-namespace`` is started (not waited for); gdb stops at the
  entry of ``memmap_init_zone_device(zone, start_pfn, nr_pages, pgmap)`` (rdi, rsi, rdx, rcx)
  and dumps, then stops at the per-page initialiser after ``ignore N`` and dumps again.
  The per-page function is the first of ``__init_zone_device_page``,
  ``__init_zone_device_page.constprop.0``, ``__init_single_page.constprop.0`` (5.10),
  ``__init_single_page`` that the symbol table has.
* :func:`mid_teardown`: ``ndctl destroy-namespace`` is started; gdb records the pgmap at
  ``memunmap_pages(pgmap)`` (rdi), then stops at the first of ``remove_pfn_range_from_zone``
  (zone, start_pfn, nr_pages), ``arch_remove_memory``, ``__remove_pages``, reached only after
  ``percpu_ref_kill()`` and the wait for the last reference, and dumps.

``ignore N`` is not exact to the page (it stopped 4-8 pages short in lab-notes §14): read the
struct pages of the dump to know where the initialised part ends.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lab import kdump

__all__ = (
    "PER_PAGE_CANDIDATES",
    "TEARDOWN_CANDIDATES",
    "Freeze",
    "FreezeError",
    "FreezeRun",
    "Gdb",
    "kernel_symbols",
    "mid_init",
    "mid_teardown",
    "pick_symbol",
)

PER_PAGE_CANDIDATES = (
    "__init_zone_device_page",
    "__init_zone_device_page.constprop.0",
    "__init_single_page.constprop.0",
    "__init_single_page",
)
TEARDOWN_CANDIDATES = ("remove_pfn_range_from_zone", "arch_remove_memory", "__remove_pages")
_REGS = ("rdi", "rsi", "rdx", "rcx", "rip")


class FreezeError(RuntimeError):
    """gdb could not stop the guest where asked (message has gdb's last output)."""


@dataclass(frozen=True, slots=True)
class Freeze:
    """One frozen dump and the facts to check it against.

    ``regs`` are the argument registers at the stop; ``facts`` names them for the function
    (e.g. ``start_pfn``, ``nr_pages``, ``pgmap``); ``hits`` counts the breakpoint hits asked for.
    """

    dump: Path
    function: str
    address: int
    regs: dict[str, int]
    facts: dict[str, int]
    hits: int = 1
    dump_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class FreezeRun:
    """All freezes of one run, the guest command's result and the wall time."""

    freezes: tuple[Freeze, ...]
    command_rc: int
    command_output: str
    wall_seconds: float
    gdb_log: str = field(repr=False, default="")


@cache
def kernel_symbols(vmlinux: Path) -> dict[str, int]:
    """Text symbols of ``vmlinux`` (``nm``), name -> address (first one wins)."""
    out = subprocess.run(["nm", str(vmlinux)], capture_output=True, text=True, check=True).stdout
    syms: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            syms.setdefault(parts[2], int(parts[0], 16))
    return syms


def pick_symbol(syms: dict[str, int], candidates: Sequence[str]) -> tuple[str, int]:
    """The first candidate present in the symbol table."""
    for name in candidates:
        if name in syms:
            return name, syms[name]
    raise FreezeError(f"none of {', '.join(candidates)} is in the symbol table")


class Gdb:
    """gdb in a pipe: each :meth:`cmd` is followed by a unique echo marker and read up to it."""

    def __init__(self, target: str, log: Path) -> None:
        self.log_path = log
        self.proc = subprocess.Popen(
            ["gdb", "-nx", "-q"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._n = 0
        self.transcript: list[str] = []
        self.cmd("set pagination off\nset confirm off\nset width 0\nset architecture i386:x86-64")
        out = self.cmd(f"target remote {target}", timeout=60)
        if "Remote debugging using" not in out:
            raise FreezeError(f"gdb could not attach: {out}")

    def send(self, text: str) -> str:
        """Queue ``text`` and its echo marker; returns the marker for :meth:`read`."""
        assert self.proc.stdin is not None
        self._n += 1
        marker = f"@@GDB-{self._n}@@"
        self.proc.stdin.write(f"{text}\necho {marker}\\n\n")
        self.proc.stdin.flush()
        self.transcript.append(f"(gdb) {text}\n")
        return marker

    def read(self, marker: str, timeout: float = 120.0) -> str:
        """gdb's output up to ``marker``."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while True:
            # readline blocks; a guest that never stops shows as the overall test timeout
            if time.monotonic() > deadline:
                raise FreezeError(f"gdb: no {marker} after {timeout:.0f}s: {lines[-20:]}")
            line = self.proc.stdout.readline()
            if not line:
                raise FreezeError(f"gdb exited before {marker}: {lines[-20:]}")
            if marker in line:
                break
            lines.append(line)
        out = "".join(lines)
        self.transcript.append(out)
        return out

    def cmd(self, text: str, timeout: float = 120.0) -> str:
        """Send ``text`` (one or more lines) and return gdb's output."""
        return self.read(self.send(text), timeout)

    def regs(self) -> dict[str, int]:
        out = self.cmd("info registers " + " ".join(_REGS))
        regs = {}
        for m in re.finditer(r"^(?:\(gdb\) )*(\w+)\s+(0x[0-9a-f]+)", out, re.M):
            regs[m.group(1)] = int(m.group(2), 16)
        if set(_REGS) - set(regs):
            raise FreezeError(f"gdb: cannot read registers: {out}")
        return regs

    def stop_at(self, addr: int, ignore: int = 0, timeout: float = 300.0) -> None:
        """Break at ``addr`` (TCG gdbstub software breakpoint), skip ``ignore`` hits, continue."""
        self.cmd(f"delete\nbreak *{addr:#x}")
        if ignore:
            self.cmd(f"ignore $bpnum {ignore}")
        out = self.cmd("continue", timeout=timeout)
        if "Breakpoint" not in out:
            raise FreezeError(f"gdb did not stop at {addr:#x}: {out}")

    def close(self) -> str:
        """Detach (the guest resumes) and quit; returns the transcript."""
        try:
            self.cmd("delete\ndetach", timeout=30)
            self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            self.proc.wait(timeout=10)
        except (OSError, FreezeError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        text = "".join(self.transcript)
        self.log_path.write_text(text)
        return text


def _freeze(
    vm: Any, gdb: Gdb, name: str, addr: int, out: Path, facts: Sequence[str], hits: int = 1,
    dump_timeout: float = 60.0,
) -> Freeze:
    regs = gdb.regs()
    t0 = time.monotonic()
    kdump.dump_elf(vm, out, dump_timeout)
    named = dict(zip(facts, (regs[r] for r in ("rdi", "rsi", "rdx", "rcx")), strict=False))
    return Freeze(out, name, addr, regs, named, hits, time.monotonic() - t0)


def _session(vm: Any, command: str, body: Any, timeout: float) -> FreezeRun:
    """Attach gdb, run ``body(gdb, start)`` (``start()`` launches ``command`` in the guest
    without waiting), detach, then collect the command's result."""
    if not getattr(vm, "gdbstub", False):
        raise FreezeError("the VM was not started with gdbstub=True")
    sock = getattr(vm, "gdb_socket", None)
    target = str(sock) if sock else f"127.0.0.1:{vm.gdb_port}"
    t0 = time.monotonic()
    started: list[int] = []
    gdb = Gdb(target, vm.run_dir / "gdb.out")
    try:
        freezes = body(gdb, lambda: started.append(vm.send(command)))
    finally:
        log = gdb.close()
    res = vm.wait(started[0], timeout=timeout) if started else None
    return FreezeRun(
        tuple(freezes),
        res.rc if res else -1,
        (res.stdout + res.stderr) if res else "",
        time.monotonic() - t0,
        log,
    )


def _first_stop(gdb: Gdb, addr: int, start: Any, what: str, timeout: float) -> None:
    """Break at ``addr``, let the guest run, start the guest command, wait for the stop."""
    gdb.cmd(f"delete\nbreak *{addr:#x}")
    marker = gdb.send("continue")
    start()
    out = gdb.read(marker, timeout=timeout)
    if "Breakpoint" not in out:
        raise FreezeError(f"no stop at {what}: {out}")


def mid_init(
    vm: Any, vmlinux: Path, command: str, outdir: Path, ignore: int = 3000, timeout: float = 600,
    dump_timeout: float = 60.0,
) -> FreezeRun:
    """Freeze at ``memmap_init_zone_device`` entry and after ``ignore`` per-page calls; dump both.

    ``command`` creates the namespace (e.g. :data:`lab.scenarios.FREEZE_CREATE`).
    Dumps: ``outdir/mid-entry.vmcore`` and ``outdir/mid-<ignore>.vmcore`` (ELF), each given
    ``dump_timeout`` seconds.
    """
    syms = kernel_symbols(vmlinux)
    entry = pick_symbol(syms, ("memmap_init_zone_device",))
    per_page = pick_symbol(syms, PER_PAGE_CANDIDATES)

    def body(gdb: Gdb, start: Any) -> list[Freeze]:
        _first_stop(gdb, entry[1], start, entry[0], timeout)
        facts = ("zone", "start_pfn", "nr_pages", "pgmap")
        f1 = _freeze(vm, gdb, entry[0], entry[1], outdir / "mid-entry.vmcore", facts,
                     dump_timeout=dump_timeout)  # fmt: skip
        gdb.stop_at(per_page[1], ignore=ignore, timeout=timeout)
        f2 = _freeze(
            vm, gdb, per_page[0], per_page[1], outdir / f"mid-{ignore}.vmcore",
            ("page", "pfn"), ignore + 1, dump_timeout,
        )  # fmt: skip
        return [f1, f2]

    return _session(vm, command, body, timeout)


def mid_teardown(
    vm: Any, vmlinux: Path, command: str, outdir: Path, timeout: float = 600,
    dump_timeout: float = 60.0,
) -> FreezeRun:
    """Freeze inside ``memunmap_pages`` after the pgmap's ref was killed; dump.

    ``command`` destroys the namespace (e.g. :data:`lab.scenarios.FREEZE_DESTROY`).
    The Freeze's facts: ``pgmap`` (rdi at memunmap_pages) and, at the teardown callee,
    ``zone``/``start_pfn``/``nr_pages`` (remove_pfn_range_from_zone's arguments).
    """
    syms = kernel_symbols(vmlinux)
    unmap = pick_symbol(syms, ("memunmap_pages",))
    callee = pick_symbol(syms, TEARDOWN_CANDIDATES)

    def body(gdb: Gdb, start: Any) -> list[Freeze]:
        _first_stop(gdb, unmap[1], start, unmap[0], timeout)
        pgmap = gdb.regs()["rdi"]
        gdb.stop_at(callee[1], timeout=timeout)
        facts = ("zone", "start_pfn", "nr_pages") if callee[0] == TEARDOWN_CANDIDATES[0] else ()
        f = _freeze(vm, gdb, callee[0], callee[1], outdir / "mid-teardown.vmcore", facts,
                    dump_timeout=dump_timeout)  # fmt: skip
        return [Freeze(f.dump, f.function, f.address, f.regs, {**f.facts, "pgmap": pgmap},
                       1, f.dump_seconds)]  # fmt: skip

    return _session(vm, command, body, timeout)

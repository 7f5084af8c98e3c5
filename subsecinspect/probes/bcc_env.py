"""What the running system offers bcc: headers, kprobes, BPF trampolines; bcc's stderr.

Feature detection for :mod:`.subsec_trace`, each answer a reason (``""``/``[]`` = fine)
that the tracer turns into a one-line error or an attach-report note:

* the running kernel's headers, which bcc compiles against (else clang fails with pages
  of "file not found");
* kprobes switched off globally (``/sys/kernel/debug/kprobes/enabled``, kernel/kprobes.c
  ``kprobes_all_disarmed``): registering still works, but nothing ever fires;
* fentry/fexit: kernel BTF, BPF trampolines, and a bcc that can attach them one by one.

:func:`captured_stderr` keeps what bcc, clang and libbpf print on file descriptor 2 (the
6.12 headers alone give pages of warnings) so that a failure is reported in one line.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

from subsecinspect.probes.procfs import read_or_empty

__all__ = (
    "CompileAbandoned",
    "Log",
    "attach",
    "captured_stderr",
    "compile_abandonable",
    "detach",
    "detect_cflags",
    "fentry_blockers",
    "first_error",
    "headers_missing",
    "kprobes_disabled",
)

KPROBES_ENABLED = "/sys/kernel/debug/kprobes/enabled"


class CompileAbandoned(Exception):
    """A signal arrived while bcc compiled: the compile thread is left behind."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Log:
    """What a :func:`captured_stderr` block wrote (filled in when the block ends)."""

    text = ""


@contextlib.contextmanager
def captured_stderr() -> Iterator[Log]:
    """File descriptor 2 into a log while bcc/clang/libbpf write their diagnostics there."""
    log = Log()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield log
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            log.text = tmp.read().decode(errors="replace")


def first_error(log: str) -> str:
    """``": <first error line>"`` of a compiler/verifier log, or ``""``."""
    for line in log.splitlines():
        if "error" in line.lower() or "failed" in line.lower():
            return f": {line.strip()[:200]}"
    return ""


def headers_missing() -> str:
    """Why bcc will find no headers of the running kernel (``""`` when it will).

    bcc uses /lib/modules/<release>/build (and source), else the kernel's own
    /sys/kernel/kheaders.tar.xz (CONFIG_IKHEADERS, possibly as the module kheaders).
    """
    rel = os.uname().release
    if os.path.exists(f"/lib/modules/{rel}/build/include/linux/kconfig.h") or os.path.exists(
        f"/lib/modules/{rel}/source/include/linux/kconfig.h"
    ):
        return ""
    if os.path.exists("/sys/kernel/kheaders.tar.xz") or glob.glob(
        f"/lib/modules/{rel}/kernel/kernel/kheaders.ko*"
    ):
        return ""
    return (f"the headers of the running kernel are missing (/lib/modules/{rel}/build): "
            f"install linux-headers-{rel}")


def _kernel_header(name: str) -> str:
    """A header of the running kernel as bcc sees it (build/ first, then source/)."""
    rel = os.uname().release
    for d in ("build", "source"):
        text = read_or_empty(f"/lib/modules/{rel}/{d}/include/linux/{name}")
        if text:
            return text
    return ""


def detect_cflags(kallsyms_text: str, max_windows: int = 64) -> list[str]:
    """The -D settings for this kernel, each detected, never taken from the release.

    * ``SUBSEC_VMEMMAP_SYM``: the address of ``vmemmap_base`` (KASLR'd memory layout);
      the BPF side reads the variable to turn a ``struct page *`` into a PFN.
    * ``SUBSEC_SPARSE_REMOVE_MS``: ``sparse_remove_section()`` still takes the
      ``struct mem_section *`` first (6.1 and older), from the headers bcc compiles with.
    """
    flags = [f"-DSUBSEC_MAX_WINDOWS={max_windows}"]
    m = re.search(r"^([0-9a-f]+) [dDbB] vmemmap_base$", kallsyms_text, re.M)
    if m and int(m[1], 16):
        flags.append(f"-DSUBSEC_VMEMMAP_SYM=0x{m[1]}ULL")
    hotplug = _kernel_header("memory_hotplug.h")
    if re.search(r"sparse_remove_section\(struct mem_section \*", hotplug):
        flags.append("-DSUBSEC_SPARSE_REMOVE_MS=1")
    memremap = _kernel_header("memremap.h")
    if re.search(r"get_dev_pagemap\(unsigned long pfn\);", memremap):
        flags.append("-DSUBSEC_GDP_ONE_ARG=1")
    return flags


def compile_abandonable(
    build: Callable[[], Any], stop: Callable[[], int | None]
) -> Any:
    """Run the (minutes long, uninterruptible) bcc/clang compile in a daemon thread so that
    the main thread keeps running its signal handlers and can give up on it."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["bpf"] = build()
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=run, name="bcc-compile", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.2)
        sig = stop()
        if sig and t.is_alive():
            raise CompileAbandoned(sig)
    if "error" in box:
        raise box["error"]
    return box["bpf"]


def attach(bpf: Any, kind: str, event: str, fn: str) -> None:
    """Attach program ``fn`` of a bcc ``BPF`` as a ``kprobe``, ``kretprobe`` (on ``event``),
    ``kfunc`` or ``kretfunc`` (fentry/fexit of ``kfunc__<fn>`` / ``kretfunc__<fn>``)."""
    if kind == "kprobe":
        bpf.attach_kprobe(event=event, fn_name=fn)
    elif kind == "kretprobe":
        bpf.attach_kretprobe(event=event, fn_name=fn, maxactive=64)
    elif kind == "kfunc":
        bpf.attach_kfunc(fn_name=fn.encode())
    else:
        bpf.attach_kretfunc(fn_name=fn.encode())


def detach(bpf: Any, kind: str, event: str, fn: str) -> None:
    """Undo :func:`attach` (the program stays loaded: it can be attached again)."""
    if kind == "kprobe":
        bpf.detach_kprobe(event=event, fn_name=fn)
    elif kind == "kretprobe":
        bpf.detach_kretprobe(event=event, fn_name=fn)
    elif kind == "kfunc":
        bpf.detach_kfunc(fn_name=fn.encode())
    else:
        bpf.detach_kretfunc(fn_name=fn.encode())


def kprobes_disabled(path: str = KPROBES_ENABLED) -> str:
    """Why no kprobe would fire: ``kprobes_all_disarmed`` (kernel/kprobes.c) is set."""
    try:
        with open(path) as f:
            value = f.read().strip()
    except OSError:
        return ""  # no debugfs: nothing to tell
    if value == "0":
        return (f"kprobes are disabled ({path} is 0; echo 1 > {path} enables them)")
    return ""


def fentry_blockers(kallsyms_text: str, has_btf: bool, bcc_bpf: Any) -> list[str]:
    """Why fentry/fexit (BPF trampolines) cannot be used here; ``[]`` when they can.

    Kernel: BTF (/sys/kernel/btf/vmlinux) and ``bpf_trampoline_link_prog``
    (kernel/bpf/trampoline.c, v5.5); bcc: ``support_kfunc()`` and the
    ``_trace_autoload`` hook that :class:`SubsecTrace` turns off to attach kfunc programs
    one by one (bcc would attach every ``kfunc__*`` at load, and fail as a whole).
    """
    out = []
    if not has_btf:
        out.append("no kernel BTF (/sys/kernel/btf/vmlinux)")
    if not re.search(r" bpf_trampoline_link_prog$", kallsyms_text, re.M):
        out.append("no BPF trampolines (bpf_trampoline_link_prog)")
    if not callable(getattr(bcc_bpf, "support_kfunc", None)):
        out.append("this bcc has no kfunc support")
    elif not out and not bcc_bpf.support_kfunc():
        out.append("bcc: support_kfunc() is false")
    if not callable(getattr(bcc_bpf, "_trace_autoload", None)):
        out.append("this bcc has no _trace_autoload hook")
    return out



"""``subsecinspect trace`` under hostile conditions (marker ``lab``), one guest per kernel.

Each case runs the real tool in the guest and checks: the documented exit code, exactly one
``subsecinspect: error:`` line and no traceback on stderr, and afterwards no kprobe and no
BPF program more than before the case (tests/vm/bpfstate.py: /sys/kernel/debug/kprobes/list,
kprobe_events, and the loaded programs through bpf(2)). Every outcome is recorded for the
README's bad-input table (fixture ``bad_input_record``).

Cheap cases fail before the BPF program is compiled (not root, bcc missing, kprobes
disabled, kernel headers missing, SIGINT while seeding, SIGTERM while compiling); two
compile it (a required probe point the kernel refuses to register, SIGINT while attaching).
SIGTERM while tracing is tests/vm/test_trace.py's session (its summary and these checks).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from bpfstate import BpfState, guest_state

from lab.scenarios import KMEM

pytestmark = pytest.mark.lab

TRACE = "python3 -m subsecinspect trace --json"
PID = "/tmp/f.pid"


@dataclass
class Guest:
    vm: Any
    kernel: str
    baseline: BpfState


@dataclass
class Outcome:
    rc: int
    stderr: str
    secs: float
    added: dict[str, Any]

    @property
    def errors(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("subsecinspect: error:")]


@pytest.fixture(scope="module")
def guest(kernel_id: str, boot_scenario: Any) -> Iterator[Guest]:
    t0 = time.monotonic()
    with boot_scenario(KMEM, kernel_id, name=f"trace-failures-{kernel_id}") as vm:
        yield Guest(vm, kernel_id, guest_state(vm))
    print(f"trace failures on {kernel_id}: {time.monotonic() - t0:.1f}s with boot")


def _trace(g: Guest, args: str, setup: str = "", teardown: str = "", pre: str = "",
           interrupt: tuple[str, str] | None = None, timeout: float = 600,
           prefix: str = "") -> Outcome:
    """Run ``[prefix] trace args`` in the guest after ``setup``; ``pre`` runs in the same
    shell just before python is exec'd (its pid is ``$$``); ``interrupt = (marker, signal)``
    sends the signal as soon as the marker shows on stderr (a guest-side loop, no host
    round trip). ``teardown`` always runs; then the guest's kprobes and BPF programs are
    compared with the baseline."""
    vm = g.vm
    if setup:
        r = vm.run(setup, timeout=60)
        assert r.rc == 0, f"setup failed: {setup}: {r.stdout}{r.stderr}"
    t0 = time.monotonic()
    try:
        inner = f"echo $$ > {PID}; {pre + '; ' if pre else ''}exec {prefix}{TRACE} {args}"
        # synchronously: the previous case's files must not be taken for this one's
        vm.run(f"rm -f {PID} /tmp/f.out /tmp/f.err", timeout=30)
        h = vm.send(f"cd /tmp; sh -c '{inner}' > /tmp/f.out 2> /tmp/f.err")
        if interrupt:
            marker, sig = interrupt
            r = vm.run(f"for i in $(seq 6000); do grep -q '{marker}' /tmp/f.err 2>/dev/null && "
                       f"break; sleep 0.05; done; kill -{sig} $(cat {PID})", timeout=timeout)
            assert r.rc == 0, f"could not signal the tracer: {r.stdout}{r.stderr}"
        rc = vm.wait(h, timeout=timeout).rc
        secs = time.monotonic() - t0
        stderr = vm.run("cat /tmp/f.err", timeout=30).stdout
    finally:
        if teardown:
            vm.run(teardown, timeout=60)
    return Outcome(rc, stderr, secs, guest_state(vm).added_since(g.baseline))


def _check(o: Outcome, rc: int, says: str) -> None:
    assert "Traceback" not in o.stderr, o.stderr
    assert len(o.errors) == 1, o.stderr
    assert says in o.errors[0], o.errors
    assert o.rc == rc, (o.rc, o.stderr)
    assert o.added == {}, o.added  # nothing of ours left attached or loaded


def test_not_root(guest: Guest, bad_input_record: Any) -> None:
    drop = ("import os, sys; os.setgroups([]); os.setgid(65534); os.setuid(65534); "
            "os.execvp(sys.argv[1], sys.argv[1:])")
    o = _trace(guest, "--no-seed -d 5", setup=f"echo '{drop}' > /tmp/drop.py",
               prefix="python3 /tmp/drop.py ")
    bad_input_record("trace as a non-root user", "trace --no-seed (uid 65534)", o.stderr, o.rc,
                     kernel=guest.kernel, group="trace")
    _check(o, 7, "needs root")


def test_bcc_missing(guest: Guest, bad_input_record: Any) -> None:
    bcc = "/usr/lib/python3/dist-packages/bcc"
    o = _trace(guest, "--no-seed -d 5", setup=f"mv {bcc} /root/bcc.hidden",
               teardown=f"mv /root/bcc.hidden {bcc}")
    bad_input_record("bcc not installed", "trace --no-seed (python3-bpfcc removed)", o.stderr,
                     o.rc, kernel=guest.kernel, group="trace")
    _check(o, 7, "bcc is not installed")


def test_kprobes_disabled(guest: Guest, bad_input_record: Any) -> None:
    f = "/sys/kernel/debug/kprobes/enabled"
    o = _trace(guest, "--no-seed -d 5", setup=f"echo 0 > {f}", teardown=f"echo 1 > {f}")
    bad_input_record("kprobes disabled", f"trace --no-seed (0 in {f})", o.stderr, o.rc,
                     kernel=guest.kernel, group="trace")
    _check(o, 7, "kprobes are disabled")


def test_kernel_headers_missing(guest: Guest, bad_input_record: Any) -> None:
    # /lib/modules/<release> is on the read-only kernel disk: an empty tmpfs over it hides
    # build/, source/ and kheaders.ko (bcc's fallback) alike
    m = "/lib/modules/$(uname -r)"
    hide, show = f"mount -t tmpfs none {m}", f"umount {m}"
    o = _trace(guest, "--no-seed -d 5", setup=hide, teardown=show)
    bad_input_record("kernel headers missing", "trace --no-seed (/lib/modules/*/build hidden)",
                     o.stderr, o.rc, kernel=guest.kernel, group="trace")
    _check(o, 7, "headers of the running kernel are missing")


def test_sigint_while_seeding(guest: Guest, bad_input_record: Any) -> None:
    o = _trace(guest, "-d 600", interrupt=("trace: seeding", "INT"))
    bad_input_record("SIGINT while seeding", "trace (Ctrl-C during the drgn classification)",
                     o.stderr, o.rc, kernel=guest.kernel, group="trace")
    _check(o, 130, "SIGINT while seeding")


def test_sigterm_while_compiling(guest: Guest, bad_input_record: Any) -> None:
    o = _trace(guest, "--no-seed -d 600", interrupt=("trace: compiling", "TERM"))
    bad_input_record("SIGTERM while compiling", "trace --no-seed (SIGTERM during the bcc "
                     "compile)", o.stderr, o.rc, kernel=guest.kernel, group="trace")
    _check(o, 143, "SIGTERM while compiling")
    # the compile is abandoned, not waited for (it takes 40-100 s here)
    print(f"SIGTERM while compiling: exited {o.secs:.1f}s after start")


def test_required_probe_refused(guest: Guest, bad_input_record: Any) -> None:
    """The kernel refuses memunmap_pages' kretprobe (an event of that name exists: bcc names
    its kprobe_events ``r_<fn>_bcc_<pid>``); the two probe points attached before it must
    be detached again."""
    ev = "/sys/kernel/debug/tracing/kprobe_events"
    plant = f'echo "r:kprobes/r_memunmap_pages_bcc_$$ memunmap_pages" >> {ev}'
    o = _trace(guest, "--no-seed -d 600", pre=plant,
               teardown=f"grep -o 'r_memunmap_pages_bcc_[0-9]*' {ev} | while read n; do "
                        f'echo "-:kprobes/$n" >> {ev}; done')
    bad_input_record("a required probe point refused by the kernel",
                     "trace --no-seed (kprobe event name of memunmap_pages' kretprobe taken)",
                     o.stderr, o.rc, kernel=guest.kernel, group="trace")
    _check(o, 7, "cannot attach memunmap_pages")


def test_sigint_while_attaching(guest: Guest, bad_input_record: Any) -> None:
    o = _trace(guest, "--no-seed -d 600", interrupt=("trace: attaching", "INT"))
    bad_input_record("SIGINT while attaching", "trace --no-seed (Ctrl-C between compile and "
                     "tracing)", o.stderr, o.rc, kernel=guest.kernel, group="trace")
    _check(o, 130, "SIGINT while attaching")

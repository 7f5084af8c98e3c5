"""What a lab guest holds of kprobes and BPF programs, for the tracer's leak checks.

Imported by the tracer's lab tests as ``bpfstate`` (pytest puts tests/vm on sys.path).

The guest's root has no bpftool, so :data:`GUEST_SCRIPT` walks the loaded BPF programs
with the bpf(2) commands bpftool itself uses (BPF_PROG_GET_NEXT_ID, BPF_PROG_GET_FD_BY_ID,
BPF_OBJ_GET_INFO_BY_FD; struct bpf_prog_info's ``name`` at offset 64, include/uapi/linux/
bpf.h) through ctypes, and adds every registered kprobe (/sys/kernel/debug/kprobes/list:
bcc's perf-PMU kprobes have no kprobe_events line) and the kprobe_events lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ("GUEST_SCRIPT", "BpfState", "guest_state")

GUEST_SCRIPT = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
SYS_bpf = 321  # x86_64
PROG_GET_NEXT_ID, PROG_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD = 11, 13, 15

def bpf(cmd, attr):
    return libc.syscall(SYS_bpf, cmd, ctypes.byref(attr), ctypes.sizeof(attr))

progs, cur = {}, 0
while True:
    attr = (ctypes.c_uint32 * 4)(cur, 0, 0, 0)   # start_id, next_id, open_flags
    if bpf(PROG_GET_NEXT_ID, attr) != 0:
        break
    cur = attr[1]
    fd = bpf(PROG_GET_FD_BY_ID, (ctypes.c_uint32 * 4)(cur, 0, 0, 0))
    if fd < 0:
        continue
    info = ctypes.create_string_buffer(256)
    ia = (ctypes.c_uint64 * 2)(fd | (256 << 32), ctypes.addressof(info))  # bpf_fd, info_len
    name = ""
    if bpf(OBJ_GET_INFO_BY_FD, ia) == 0:
        name = info.raw[64:80].split(b"\0")[0].decode(errors="replace")
    os.close(fd)
    progs[cur] = name

def lines(path):
    try:
        with open(path) as f:
            return [ln.strip() for ln in f if ln.strip()]
    except OSError as e:
        return ["unreadable: %s" % e]

print(json.dumps({"progs": progs,
                  "kprobes": lines("/sys/kernel/debug/kprobes/list"),
                  "kprobe_events": lines("/sys/kernel/debug/tracing/kprobe_events")}))
"""


@dataclass(frozen=True)
class BpfState:
    """BPF program ids -> names, registered kprobes and kprobe_events lines of a guest."""

    progs: dict[int, str]
    kprobes: tuple[str, ...]
    kprobe_events: tuple[str, ...]

    def added_since(self, before: BpfState) -> dict[str, Any]:
        """What is new compared with ``before`` (``{}`` when nothing is)."""
        out: dict[str, Any] = {}
        progs = {i: n for i, n in self.progs.items() if i not in before.progs}
        if progs:
            out["progs"] = progs
        kp = sorted(set(self.kprobes) - set(before.kprobes))
        if kp:
            out["kprobes"] = kp
        ev = sorted(set(self.kprobe_events) - set(before.kprobe_events))
        if ev:
            out["kprobe_events"] = ev
        return out


def guest_state(vm: Any) -> BpfState:
    """Run :data:`GUEST_SCRIPT` in the guest (as root)."""
    r = vm.run(f"python3 - <<'EOF'\n{GUEST_SCRIPT}\nEOF", timeout=60)
    assert r.rc == 0, f"bpf state script failed: {r.stdout}{r.stderr}"
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return BpfState({int(k): v for k, v in d["progs"].items()}, tuple(d["kprobes"]),
                    tuple(d["kprobe_events"]))

"""Guest side of the live-race test: namespace and kmem churn next to a ``classify`` loop.

Run inside a lab guest (stdlib only; ``python3 -m lab.churn ...``, the project
is on ``PYTHONPATH`` with ``labvm(..., project=True)``). Every operation is logged as an
*event* with ``CLOCK_MONOTONIC`` times (system-wide, so the classify loop's times compare):

``{"seq", "op", "cmd", "t0", "t1", "rc", "out", "ns": {...} | None, "blocks": {...} | None}``

``ns`` is the namespace the operation touched (``name``, ``dev``, ``mode``, ``map``, ``size``
and, read back from /proc/iomem after a create, ``raw_start``/``raw_end``/``data_start`` in
bytes, end exclusive); ``blocks`` the memory-block states of a kmem namespace after the
operation. Ops: ``create``, ``destroy``, ``kmem`` (``daxctl reconfigure-device
--mode=system-ram --no-online``: hot-adds offline blocks), ``online`` / ``offline`` (the
blocks' sysfs ``state``), ``flap`` (:data:`FLAPS` rounds of offline + online: section flags
change many times within one operation, so a reader's short window likely sees one),
``devdax`` (``daxctl reconfigure-device --mode=devdax``: hot-removes them).

Commands:

* ``race --runs N [--flap-runs M] --out DIR``: start the churn in a child process (the
  permanent namespace :data:`PERMANENT` is made before, with ``op``), run ``python3 -m
  subsecinspect classify /proc/kcore --json`` N times (during the last M the churn only
  flaps K's kmem blocks), stop the churn (it tears down what it made) and print
  ``{"events": [...], "runs": [{"i", "t0", "t1", "rc", "stdout", "stderr"}]}``.
* ``churn --log FILE --stop FILE --flap FILE``: the churn alone (what ``race`` starts).
* ``op --op OP [--name N] [--mode M --map P --size MIB]``: one operation; prints its event.
* ``inject --op OP [--name N] [--mode M --map P --size MIB]``: a deterministic race.
  ``classify /proc/kcore --json`` runs in this process with the live guard
  (``subsecinspect.kernel._live_guard``) wrapped: the reader is held after its first read
  while OP runs to completion, then re-reads. Prints ``{"event": ..., "run": ...}``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from lab import ndctl

__all__ = ("FLAPS", "PERMANENT", "PLAN", "Churn", "main", "namespace_extent")

MiB = 1 << 20
_STATE = Path("/var/tmp/subsecinspect-churn.json")  # what exists, between commands
_MEMORY = Path("/sys/devices/system/memory")
_IOMEM_RE = re.compile(r"^ *([0-9a-f]+)-([0-9a-f]+) : (.*)$")

#: The churn's cycle: (op, name, mode, map, MiB). Sizes are not multiples of 128 MiB, so
#: namespaces share sections with their neighbours; K is big enough to hold whole blocks.
PLAN: tuple[tuple[str, str, str, str, int], ...] = (
    ("create", "A", "fsdax", "dev", 192),
    ("create", "B", "devdax", "mem", 96),
    ("destroy", "A", "", "", 0),
    ("create", "C", "devdax", "dev", 160),
    ("create", "K", "devdax", "mem", 400),
    ("kmem", "K", "", "", 0),
    ("destroy", "B", "", "", 0),
    ("online", "K", "", "", 0),
    ("flap", "K", "", "", 0),
    ("create", "D", "fsdax", "mem", 112),
    ("offline", "K", "", "", 0),
    ("destroy", "C", "", "", 0),
    ("online", "K", "", "", 0),
    ("flap", "K", "", "", 0),
    ("offline", "K", "", "", 0),
    ("devdax", "K", "", "", 0),
    ("destroy", "K", "", "", 0),
    ("destroy", "D", "", "", 0),
)
PERMANENT = ("create", "P", "fsdax", "mem", 128)
#: ``flap``: how many offline/online rounds of the kmem blocks in one operation.
FLAPS = 20


def _iomem() -> list[tuple[int, int, str]]:
    out = []
    for line in Path("/proc/iomem").read_text().splitlines():
        m = _IOMEM_RE.match(line)
        if m:
            out.append((int(m[1], 16), int(m[2], 16) + 1, m[3]))
    return out


def namespace_extent(
    iomem: list[tuple[int, int, str]], dev: str, size: int
) -> tuple[int, int, int] | None:
    """``(raw_start, raw_end, data_start)`` in bytes of namespace *dev* (end exclusive).

    ``namespaceX.Y`` is the head (the whole namespace for fsdax), ``daxX.Y`` the device-dax
    data; ndctl's ``size`` is the data at the end of the raw range.
    """
    spans = {name: (a, b) for a, b, name in iomem}
    head = spans.get(dev)
    if head is None:
        return None
    dax = spans.get(dev.replace("namespace", "dax"))
    end = max(head[1], dax[1]) if dax else head[1]
    return head[0], end, end - size


class Churn:
    """Runs and logs the operations; remembers what exists in :data:`_STATE`."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.seq = 0
        self.made: dict[str, dict[str, Any]] = (
            json.loads(_STATE.read_text()) if _STATE.exists() else {}
        )

    def _save(self) -> None:
        _STATE.write_text(json.dumps(self.made))

    def _event(self, op: str, cmd: str, t0: float, rc: int, out: str,
               ns: dict[str, Any] | None) -> dict[str, Any]:
        ev = {"seq": self.seq, "pid": os.getpid(), "op": op, "cmd": cmd, "t0": t0,
              "t1": time.monotonic(), "rc": rc, "out": out[-600:], "ns": ns,
              "blocks": self._blocks(ns) if ns and ns.get("kmem") else None}
        self.seq += 1
        with open(self.log, "a") as f:
            f.write(json.dumps(ev) + "\n")
        return ev

    @staticmethod
    def _blocks(ns: dict[str, Any]) -> dict[str, str]:
        out = {}
        for b in ns.get("block_ids", ()):
            p = _MEMORY / f"memory{b}" / "state"
            out[str(b)] = p.read_text().strip() if p.exists() else "absent"
        return out

    @staticmethod
    def _sh(cmd: str) -> tuple[int, str]:
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
        return r.returncode, r.stdout + r.stderr

    def run(self, op: str, name: str, mode: str = "", map_: str = "",
            mib: int = 0) -> dict[str, Any]:
        """One operation; returns its event (rc != 0 is logged, not raised)."""
        ns = self.made.get(name)
        if op == "create" and ns is not None:
            return self._event(op, f"# {name} exists", time.monotonic(), 1, "", None)
        if op == "create":
            cmd = ndctl.create_namespace(mode, map_, mib * MiB, name)
        elif ns is None:
            return self._event(op, f"# {name} does not exist", time.monotonic(), 1, "", None)
        elif op == "destroy":
            cmd = ndctl.destroy_namespace(ns["dev"])
        elif op == "kmem":
            cmd = f"daxctl reconfigure-device --mode=system-ram --no-online {ns['chardev']}"
        elif op in ("online", "offline"):
            state = "online_movable" if op == "online" else "offline"
            cmd = "; ".join(f"echo {state} > {_MEMORY}/memory{b}/state"
                            for b in ns.get("block_ids", ()))
        elif op == "flap":  # offline and online again, FLAPS times: dense section changes
            blocks = ns.get("block_ids", ())
            off = "; ".join(f"echo offline > {_MEMORY}/memory{b}/state" for b in blocks)
            on = "; ".join(f"echo online_movable > {_MEMORY}/memory{b}/state" for b in blocks)
            cmd = f"for i in $(seq {FLAPS}); do {off}; {on}; done"
        elif op == "devdax":
            cmd = f"daxctl reconfigure-device --mode=devdax -f {ns['chardev']}"
        else:
            raise ValueError(f"unknown op {op}")
        t0 = time.monotonic()
        rc, out = self._sh(cmd)
        if op == "create" and rc == 0:
            doc = json.loads(out[out.index("{"):])
            ns = {"name": name, "dev": doc["dev"], "mode": mode, "map": map_,
                  "size": int(doc["size"]), "chardev": doc["dev"].replace("namespace", "dax")}
            ext = namespace_extent(_iomem(), ns["dev"], ns["size"])
            if ext is not None:
                ns["raw_start"], ns["raw_end"], ns["data_start"] = ext
            self.made[name] = ns
        elif op == "destroy" and rc == 0 and ns is not None:
            self.made.pop(name)
        elif op == "kmem" and rc == 0 and ns is not None:
            ram = [(a, b) for a, b, n in _iomem() if n == "System RAM (kmem)"
                   and ns["raw_start"] <= a < ns["raw_end"]]
            bsize = int((_MEMORY / "block_size_bytes").read_text(), 16)
            ns["kmem"] = True
            ns["kmem_ranges"] = ram
            ns["block_ids"] = sorted({x // bsize for a, b in ram for x in range(a, b, bsize)})
        elif op == "devdax" and rc == 0 and ns is not None:
            ns["kmem"] = False
        self._save()
        return self._event(op, cmd, t0, rc, out, dict(ns) if ns else None)

    def teardown(self) -> None:
        """Undo what exists except the permanent namespace P (kmem blocks first)."""
        for name in [n for n in self.made if n != PERMANENT[1]]:
            ns = self.made[name]
            if ns.get("kmem"):
                if "online" in self._blocks(ns).values():
                    self.run("offline", name)
                self.run("devdax", name)
            self.run("destroy", name)


def _to_flapping(c: Churn) -> None:
    """Only P and K left, K's blocks kmem and online: ready for nothing but ``flap``."""
    for name in [n for n in c.made if n not in (PERMANENT[1], "K")]:
        c.run("destroy", name)
    k = c.made.get("K")
    if k is None:
        c.run(*next(step for step in PLAN if step[:2] == ("create", "K")))
        k = c.made.get("K")
    if k is not None and not k.get("kmem"):
        c.run("kmem", "K")
    if k is not None and set(c._blocks(k).values()) != {"online"}:
        c.run("online", "K")


def _churn(log: Path, stop: Path, flap: Path, max_steps: int) -> None:
    """The :data:`PLAN` cycle until *stop* exists; once *flap* exists, only ``flap``."""
    c = Churn(log)
    i = 0
    for _ in range(max_steps):
        if stop.exists():
            break
        if flap.exists():
            _to_flapping(c)
            c.run("flap", "K")
            continue
        c.run(*PLAN[i % len(PLAN)])
        i += 1
    c.teardown()


def _classify_cmd() -> list[str]:
    return [sys.executable, "-m", "subsecinspect", "classify", "/proc/kcore", "--json"]


def _race(runs: int, flap_runs: int, out: Path, max_steps: int) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    log, stop, flap = out / "events.jsonl", out / "stop", out / "flap"
    for f in (log, stop, flap):
        f.unlink(missing_ok=True)
    child = subprocess.Popen([sys.executable, "-m", "lab.churn", "churn",
                              "--log", str(log), "--stop", str(stop), "--flap", str(flap),
                              "--max-steps", str(max_steps)])
    results = []
    try:
        for i in range(runs):
            if i == runs - flap_runs:
                flap.touch()
            t0 = time.monotonic()
            r = subprocess.run(_classify_cmd(), capture_output=True, text=True, timeout=600)
            results.append({"i": i, "t0": t0, "t1": time.monotonic(), "rc": r.returncode,
                            "stdout": r.stdout, "stderr": r.stderr})
    finally:
        stop.touch()
        child.wait(timeout=600)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    return {"events": events, "runs": results, "churn_rc": child.returncode}


def _inject(args: argparse.Namespace) -> dict[str, Any]:
    import subsecinspect.kernel.read as kernel
    from subsecinspect.cli import main as cli

    c = Churn(Path(args.log))
    original = kernel._live_guard
    held: list[dict[str, Any]] = []

    def guard(*a: Any, **kw: Any) -> Any:
        held.append(c.run(args.op, args.name, args.mode, args.map, args.size))
        return original(*a, **kw)

    kernel._live_guard = guard  # type: ignore[assignment]
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    rc = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            cli.main(["classify", "/proc/kcore", "--json"])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    run = {"i": -1, "t0": t0, "t1": time.monotonic(), "rc": rc, "stdout": out.getvalue(),
           "stderr": err.getvalue()}
    return {"event": held[0] if held else None, "run": run}


def main(argv: list[str] | None = None) -> None:
    """Command line of the guest side (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python3 -m lab.churn")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("race")
    r.add_argument("--runs", type=int, default=8)
    r.add_argument("--flap-runs", type=int, default=0)
    r.add_argument("--out", default="/tmp/race")
    r.add_argument("--max-steps", type=int, default=400)
    c = sub.add_parser("churn")
    c.add_argument("--log", required=True)
    c.add_argument("--stop", required=True)
    c.add_argument("--flap", required=True)
    c.add_argument("--max-steps", type=int, default=400)
    for cmd in ("inject", "op"):
        i = sub.add_parser(cmd)
        i.add_argument("--op", required=True)
        i.add_argument("--name", default="K")
        i.add_argument("--mode", default="")
        i.add_argument("--map", default="")
        i.add_argument("--size", type=int, default=0)
        i.add_argument("--log", default="/tmp/inject.jsonl")
    a = p.parse_args(argv)
    if a.cmd == "race":
        json.dump(_race(a.runs, a.flap_runs, Path(a.out), a.max_steps), sys.stdout)
    elif a.cmd == "churn":
        _churn(Path(a.log), Path(a.stop), Path(a.flap), a.max_steps)
    elif a.cmd == "op":
        json.dump(Churn(Path(a.log)).run(a.op, a.name, a.mode, a.map, a.size), sys.stdout)
    else:
        json.dump(_inject(a), sys.stdout)


if __name__ == "__main__":
    main()

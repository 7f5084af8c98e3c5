"""The lab's main job: boot the default guest, classify it live, then classify its dump.

This is README command (A)::

    python -m lab.demo [--kernel 6.1] [--scenario nvdimm-mixed] [--keep-dump]

It builds what the lab cache lacks for the kernel, boots the guest with the scenario's
persistent memory, shows the pmem layout the guest reports (``ndctl list``, ``/proc/iomem``),
runs ``subsecinspect classify /proc/kcore`` inside the guest, takes a QMP ELF dump of the same
guest, classifies that dump on the host with the kernel's vmlinux, and deletes the dump.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ("main",)

_COLUMNS = 160


def _say(msg: str) -> None:
    print(f"\n=== {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    from lab import images
    from lab.kdump import dump_elf, remove_dumps
    from lab.scenarios import SCENARIOS, apply, labvm

    parser = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", default="6.1", help="kernel id of vm-images/kernels.toml")
    parser.add_argument("--scenario", default="nvdimm-mixed",
                        help=f"one of {', '.join(SCENARIOS)}")
    parser.add_argument("--keep-dump", action="store_true", help="do not delete the ELF dump")
    args = parser.parse_args(argv)

    if args.scenario not in SCENARIOS:
        parser.error(f"unknown scenario {args.scenario!r}")
    scenario = SCENARIOS[args.scenario]
    support = scenario.support(args.kernel)
    if not support.supported:
        print(f"demo: error: {scenario.name} does not run on {args.kernel}: {support.reason}",
              file=sys.stderr)
        return 2

    t0 = time.monotonic()
    _say(f"lab cache for kernel {args.kernel}")
    paths = images.ensure_built(args.kernel)

    _say(f"booting {paths.kver} with scenario {scenario.name}: {scenario.description}")
    with labvm(scenario, args.kernel, project=True) as vm:
        apply(vm, scenario)
        print(vm.run("ndctl list -N -u", timeout=60).stdout)
        print(vm.run("grep -i -A20 'persistent memory' /proc/iomem || true", timeout=60).stdout)

        _say("classify /proc/kcore inside the guest")
        # Wide enough for the evidence column: rich assumes 80 columns when not on a terminal.
        live = vm.run(f"COLUMNS={_COLUMNS} python3 -m subsecinspect classify /proc/kcore",
                      timeout=300)
        print(live.stdout, live.stderr, sep="")
        if live.rc != 0:
            print(f"demo: error: classify in the guest exited {live.rc}", file=sys.stderr)
            return 1

        with tempfile.TemporaryDirectory(prefix="subsecinspect-demo-") as tmp:
            dump = Path(tmp) / f"{scenario.name}-{args.kernel}.vmcore"
            _say(f"QMP ELF dump of the same guest -> {dump}")
            dump_elf(vm, dump)
            vm.stop()
            try:
                _say(f"classify the dump on the host with {paths.vmlinux}")
                host = subprocess.run(
                    [sys.executable, "-m", "subsecinspect", "classify", str(dump),
                     "-s", str(paths.vmlinux)],
                    check=False, env={**os.environ, "COLUMNS": str(_COLUMNS)},
                )
            finally:
                if args.keep_dump:
                    kept = Path.cwd() / dump.name
                    dump.replace(kept)
                    print(f"demo: dump kept at {kept}")
                else:
                    remove_dumps(dump)
    _say(f"done in {time.monotonic() - t0:.0f} s")
    return host.returncode


if __name__ == "__main__":
    sys.exit(main())

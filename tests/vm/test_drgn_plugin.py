"""Lab test: the drgn plugin, installed from the wheel, inside drgn on a live kernel and a dump.

The wheel built from this checkout is unpacked into a directory on the guest's PYTHONPATH
(what ``pip install --target`` does; the guest has no pip), so drgn finds the plugin through
the wheel's entry point like any installed plugin. In one drgn session on /proc/kcore
(tests/vm/plugin_session.py) every ``%subsec`` command writes its JSON, which must equal what
the installed ``subsecinspect`` command line prints on the same kernel. Then the guest is
dumped and the same session runs in the host's drgn on the vmcore, against the host CLI.
``stats.read_ms`` (a wall time) is the only key left out of the comparison.

Marker ``lab``; LAB_KERNELS narrows the kernels (default: 6.1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab import images
from lab.scenarios import SCENARIOS, apply
from lab.wheel import build_wheel

pytestmark = pytest.mark.lab

HERE = Path(__file__).parent
SCENARIO = SCENARIOS["nvdimm-mixed"]
KERNELS = tuple(os.environ.get("LAB_KERNELS", "").split() or ("6.1",))
COMMANDS = ("classify", "explain", "sections", "pgmaps")
SITE = "/opt/subsec"


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    if "stats" in doc:
        doc["stats"] = {k: v for k, v in doc["stats"].items() if k != "read_ms"}
    return doc


def _cli_argv(cmd: str, pfn: str) -> list[str]:
    return ["explain", f"pfn:{pfn}"] if cmd == "explain" else [cmd]


@pytest.mark.parametrize("kernel", KERNELS)
def test_plugin_commands_equal_the_cli(kernel: str, boot_scenario: Any, tmp_path: Path) -> None:
    whl = build_wheel(tmp_path / "build")
    with boot_scenario(SCENARIO, kernel, project=False, name=f"test-plugin-{kernel}") as vm:
        apply(vm, SCENARIO)
        vm.put(whl, "/tmp/subsecinspect.whl", timeout=300)
        vm.put(HERE / "plugin_session.py", "/tmp/plugin_session.py")
        r = vm.run(f"python3 -c \"import zipfile; zipfile.ZipFile('/tmp/subsecinspect.whl')"
                   f".extractall('{SITE}')\" && mkdir -p /tmp/plug && "
                   f"PYTHONPATH={SITE} drgn -q /tmp/plugin_session.py /tmp/plug", timeout=900)
        assert r.rc == 0, r.stderr
        pfn = vm.run("cat /tmp/plug/pfn", check=True).stdout.strip()
        for cmd in COMMANDS:
            plug = json.loads(vm.run(f"cat /tmp/plug/{cmd}.json", check=True).stdout)
            cli = vm.run(f"PYTHONPATH={SITE} python3 -m subsecinspect "
                         f"{' '.join(_cli_argv(cmd, pfn))} --json", timeout=600)
            assert cli.rc == 0, cli.stderr
            assert _comparable(plug) == _comparable(json.loads(cli.stdout)), cmd
            assert plug["target"]["kind"] == "live"
        assert plug["pgmaps"], "the scenario's namespaces have dev_pagemaps"
        dump = vm.dump(tmp_path / "guest.vmcore")
    try:
        _check_dump(dump, images.paths(kernel).vmlinux, tmp_path / "dump")
    finally:
        dump.unlink(missing_ok=True)


def _check_dump(dump: Path, vmlinux: Path, out: Path) -> None:
    """The same session in the host's drgn on the vmcore; the plugin named by DRGN_PLUGINS."""
    out.mkdir()
    env = {**os.environ, "DRGN_PLUGINS": "subsecinspect=subsecinspect.drgn_plugin"}
    r = subprocess.run([sys.executable, "-m", "drgn", "-q", "-c", str(dump), "-s", str(vmlinux),
                        str(HERE / "plugin_session.py"), str(out)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    pfn = (out / "pfn").read_text()
    for cmd in COMMANDS:
        cli = subprocess.run([sys.executable, "-m", "subsecinspect", *_cli_argv(cmd, pfn),
                              str(dump), "-s", str(vmlinux), "--json"],
                             capture_output=True, text=True, timeout=900)
        assert cli.returncode == 0, cli.stderr
        plug = json.loads((out / f"{cmd}.json").read_text())
        assert _comparable(plug) == _comparable(json.loads(cli.stdout)), cmd
        assert plug["target"]["kind"] == "vmcore"

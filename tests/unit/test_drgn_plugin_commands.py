"""The drgn plugin: its entry point, its commands' parsing, and their output against the CLI's.

drgn 0.3.0's command framework runs the commands on a :class:`drgn.Program`; here the program
has no kernel, so :func:`subsecinspect.api.read_program` is replaced by the load of a saved lab
snapshot, and each ``%subsec`` command must print what ``subsecinspect CMD SNAPSHOT`` prints.
The lab test (tests/vm/test_drgn_plugin.py) runs the same commands in drgn on /proc/kcore.
"""

from __future__ import annotations

import tomllib
from importlib import import_module
from pathlib import Path

import drgn
import pytest
from cliout import run_cli
from drgn.commands import DEFAULT_COMMAND_NAMESPACE, CommandArgumentError, CommandError

from subsecinspect import api, drgn_plugin

ROOT = Path(__file__).resolve().parents[2]
SNAP = str(Path(__file__).parent / "fixtures" / "lab" / "nvdimm_mixed_6.1_dump.json")


@pytest.fixture
def prog(monkeypatch: pytest.MonkeyPatch) -> drgn.Program:
    snap = api.load_saved_snapshot(SNAP)
    monkeypatch.setattr(api, "read_program", lambda prog, info=None: snap)
    return drgn.Program()


def _run(prog: drgn.Program, capsys: pytest.CaptureFixture[str], line: str) -> str:
    capsys.readouterr()
    drgn_plugin.run_subsec_command(prog, line)
    return capsys.readouterr().out


def test_the_entry_point_names_this_module() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    value = meta["project"]["entry-points"]["drgn.plugins"]["subsecinspect"]
    assert import_module(value) is drgn_plugin
    # Importing the plugin registers the dispatcher in drgn's own namespace.
    assert DEFAULT_COMMAND_NAMESPACE._commands["subsec"].description().startswith("subsecinspect")


def test_the_subcommands() -> None:
    names = sorted(n for n, _ in drgn_plugin.SUBSEC_COMMAND_NAMESPACE.enabled(drgn.Program()))
    assert names == ["classify", "explain", "pgmaps", "sections"]


@pytest.mark.parametrize("line, argv", [
    ("classify --json", ["classify", SNAP, "--json"]),
    ("sections --json", ["sections", SNAP, "--json"]),
    ("pgmaps --json", ["pgmaps", SNAP, "--json"]),
    ("explain pfn:0x100000 --json", ["explain", "pfn:0x100000", SNAP, "--json"]),
    ("explain 0x10c200000 --json", ["explain", "0x10c200000", SNAP, "--json"]),
    ("classify", ["classify", SNAP]),
])
def test_output_equals_the_cli(prog: drgn.Program, capsys: pytest.CaptureFixture[str],
                               line: str, argv: list[str]) -> None:
    out = _run(prog, capsys, line)
    code, want, _ = run_cli(capsys, *argv)
    assert code == 0 and out == want and out


def test_output_file_is_the_document(prog: drgn.Program, capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path) -> None:
    target = tmp_path / "c.json"
    assert _run(prog, capsys, f"classify --json -o {target}") == ""
    assert target.read_text() == api.dumps(api.classification_document(SNAP))


def test_drgn_option_prints_runnable_api_code(prog: drgn.Program,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = _run(prog, capsys, "explain pfn:0x100000 --drgn")
    printed: list[str] = []
    exec(code, {"prog": prog, "print": printed.append})
    assert printed == [api.dumps(api.explain_document(SNAP, 0x100000))]


@pytest.mark.parametrize("line, exc, msg", [
    ("explain", CommandArgumentError, "the following arguments are required: location"),
    ("classify --bogus", CommandArgumentError, "unrecognized arguments: --bogus"),
    ("explain zz --json", CommandError, "bad location 'zz'"),
])
def test_bad_arguments_are_one_line_errors(prog: drgn.Program, line: str, exc: type,
                                           msg: str) -> None:
    with pytest.raises(exc) as info:
        drgn_plugin.run_subsec_command(prog, line)
    assert msg in str(info.value) and "\n" not in str(info.value)


def test_a_subsecinspect_error_becomes_a_command_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a program that is no kernel, the API's TargetError reaches drgn as one line."""
    with pytest.raises(CommandError, match="not a Linux kernel"):
        drgn_plugin.run_subsec_command(drgn.Program(), "classify --json")


def test_the_dispatcher_only_exists_for_a_kernel() -> None:
    from drgn.commands import CommandNotFoundError, run_command

    with pytest.raises(CommandNotFoundError):
        run_command(drgn.Program(), "subsec classify --json")

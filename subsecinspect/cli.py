"""Command line: ``subsecinspect classify | explain | sections | pgmaps``.

A typer app. It imports no drgn at module level: a saved snapshot
(``classify SNAPSHOT.json``) is classified on machines without drgn, and the
kernel readers are reached only through :mod:`subsecinspect.target` and
:func:`subsecinspect.kernel.read_snapshot`. Only data goes to stdout;
warnings and errors go to stderr. Errors are one line,
``subsecinspect: error: ...``, with the exit code of their
:mod:`subsecinspect.errors` class; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
from rich.console import Console

from subsecinspect import __version__, trace_cli
from subsecinspect.errors import EXIT_CODES, OptionError, SubsecinspectError, TargetError
from subsecinspect.snapshot import (
    Snapshot,
    SnapshotFormatError,
    snapshot_from_json,
    snapshot_to_json,
)

__all__ = ("app", "main", "parse_location", "write_atomic")

_EXIT_HELP = "Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + "."

app = typer.Typer(
    name="subsecinspect",
    help="Which struct pages are safe to read: classify every PFN of a live kernel or a vmcore "
    "into HOLE, ONLINE_RAM and Hildenbrand's five ZONE_DEVICE/hotplug memmap cases.\n\n"
    + _EXIT_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

TargetArg = Annotated[
    str | None,
    typer.Argument(
        help="/proc/kcore (default, live; needs root), a vmcore (ELF or kdump-compressed), "
        "or a snapshot saved with --save (*.json, classified offline)",
        show_default=False,
    ),
]
VmlinuxOpt = Annotated[
    str | None,
    typer.Option("-s", "--vmlinux", help="vmlinux with debug info (default: drgn's search)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the JSON document instead of tables")]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "-o", "--output", help="write the output to this file (atomically) instead of stdout"
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="show tracebacks of errors")]


class _Terminated(Exception):
    """SIGTERM, turned into an exception so that temporary files are removed."""


def write_atomic(path: str, text: str) -> None:
    """Write *text* to *path* via a temporary file in the same directory and ``os.replace``.

    After an error, Ctrl-C or SIGTERM no partial *path* exists.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".subsecinspect-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def parse_location(text: str) -> tuple[int, str]:
    """Parse an explain location.

    ``pfn:0x1234`` / ``pfn:4660`` / ``4660`` is a PFN; ``0x12340000`` / ``phys:...``
    is a physical address.

    :return: ``(value, "pfn" | "phys")``
    :raises OptionError: not a number.
    """
    t = text.strip().lower().replace("_", "")
    kind = "pfn"
    if t.startswith("pfn:"):
        t = t[4:]
    elif t.startswith("phys:"):
        kind, t = "phys", t[5:]
    elif t.startswith("0x"):
        kind = "phys"
    if not re.fullmatch(r"0x[0-9a-f]+|[0-9]+", t):
        raise OptionError(
            f"bad location {text!r}: use a PFN (4660, pfn:0x1234) or a physical address (0x1234000)"
        )
    return int(t, 0), kind


def _load(target: str | None, vmlinux: str | None) -> Snapshot:
    """A snapshot from a saved JSON file, or read from the live kernel / a vmcore."""
    if target and target.endswith(".json"):
        if vmlinux:
            raise OptionError("-s/--vmlinux does not apply to a saved snapshot")
        try:
            with open(target) as f:
                text = f.read()
        except OSError as e:
            raise TargetError(f"cannot read snapshot {target}: {e.strerror or e}") from None
        try:
            snap = snapshot_from_json(text)
        except SnapshotFormatError as e:
            raise TargetError(f"{target} is not a saved subsecinspect snapshot: {e}") from None
        return dataclasses.replace(
            snap, target=dataclasses.replace(snap.target, format="snapshot", path=target)
        )
    try:
        from subsecinspect.kernel import read_snapshot
        from subsecinspect.target import open_target
    except ImportError as e:
        raise TargetError(
            f"cannot read a kernel without drgn ({e}); install drgn==0.3.0, or classify a "
            "snapshot saved with --save"
        ) from None

    prog, info = open_target(target, vmlinux)
    return read_snapshot(prog, info)


def _warn(snapshot: Snapshot) -> None:
    for w in snapshot.warnings:
        err.print(f"subsecinspect: warning: {w}", markup=False, highlight=False)


def _emit(text: str | Any, output: str | None) -> None:
    """Print *text* (a string or a rich renderable) or write it atomically to *output*."""
    if output is None:
        if isinstance(text, str):
            sys.stdout.write(text)
        else:
            out.print(text)
        return
    if not isinstance(text, str):
        cap = Console(width=200, record=True, file=open(os.devnull, "w"))
        cap.print(text)
        text = cap.export_text()
    write_atomic(output, text)


def _run(debug: bool, fn: Callable[[], None]) -> None:
    """Run a command body: errors become one line on stderr and the class's exit code."""
    try:
        fn()
    except SubsecinspectError as e:
        if debug:
            traceback.print_exc()
        err.print(f"subsecinspect: error: {e}", markup=False, highlight=False)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        err.print("subsecinspect: error: interrupted", markup=False, highlight=False)
        raise typer.Exit(130) from None
    except _Terminated:
        err.print("subsecinspect: error: terminated", markup=False, highlight=False)
        raise typer.Exit(143) from None
    except typer.Exit:
        raise
    except Exception as e:  # a bug: one line unless --debug
        if debug:
            traceback.print_exc()
        err.print(
            f"subsecinspect: error: internal error: {type(e).__name__}: {e} "
            "(run with --debug for the traceback)",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1) from None


@contextlib.contextmanager
def _render_api() -> Iterator[Any]:
    from subsecinspect.render import jsondoc, tables

    yield jsondoc, tables


@app.command()
def classify(
    target: TargetArg = None,
    vmlinux: VmlinuxOpt = None,
    json_: JsonOpt = False,
    save: Annotated[
        str | None, typer.Option("--save", help="also save the snapshot as JSON (atomically)")
    ] = None,
    output: OutputOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Classify every PFN: a summary per class and the range table (or --json).

    Examples:

      subsecinspect classify                         # live, via /proc/kcore (root)

      subsecinspect classify vmcore -s vmlinux --json  # a dump, as JSON

      subsecinspect classify --save snap.json        # keep the snapshot for later

      subsecinspect classify snap.json               # re-classify a saved snapshot offline
    """

    def body() -> None:
        from subsecinspect.classify import classify as do_classify

        snap = _load(target, vmlinux)
        _warn(snap)
        if save:
            write_atomic(save, snapshot_to_json(snap, indent=None) + "\n")
        cls = do_classify(snap)
        with _render_api() as (jsondoc, tables):
            if json_:
                doc = jsondoc.classification_document(snap, cls, tool_version=__version__)
                _emit(jsondoc.dumps(doc), output)
            else:
                from rich.console import Group

                _emit(Group(tables.summary_table(cls), tables.ranges_table(cls)), output)

    _run(debug, body)


@app.command()
def explain(
    location: Annotated[
        str,
        typer.Argument(
            help="PFN (decimal, or pfn:0x...) or physical address (0x..., phys:...)",
            show_default=False,
        ),
    ],
    target: TargetArg = None,
    vmlinux: VmlinuxOpt = None,
    json_: JsonOpt = False,
    output: OutputOpt = None,
    debug: DebugOpt = False,
) -> None:
    """The chain of evidence for one PFN, its verdict, and what the kernel's predicates answer.

    A plain number is a PFN; 0x... is a physical address; pfn:0x... is a PFN in hex.

    Examples:

      subsecinspect explain 0x100000000              # physical address 4 GiB, live

      subsecinspect explain pfn:0x100000 vmcore -s vmlinux  # the same page by PFN, in a dump

      subsecinspect explain 1048576 snap.json --json # from a saved snapshot
    """

    def body() -> None:
        from subsecinspect.explain import explain as do_explain

        value, kind = parse_location(location)
        snap = _load(target, vmlinux)
        _warn(snap)
        pfn = value >> snap.kernel.page_shift if kind == "phys" else value
        exp = do_explain(snap, pfn)
        with _render_api() as (jsondoc, tables):
            if json_:
                _emit(jsondoc.dumps(jsondoc.explain_document(snap, exp, tool_version=__version__)),
                      output)
            else:
                _emit(tables.explain_panel(exp), output)

    _run(debug, body)


def _snapshot_view(
    target: str | None, vmlinux: str | None, json_: bool, output: str | None, debug: bool,
    view: str,
) -> None:
    """``sections`` / ``pgmaps``: one snapshot, rendered by ``render.jsondoc.<view>_document``
    with ``--json``, else by ``render.tables.<view>_table``."""

    def body() -> None:
        snap = _load(target, vmlinux)
        _warn(snap)
        with _render_api() as (jsondoc, tables):
            if json_:
                document = getattr(jsondoc, f"{view}_document")
                _emit(jsondoc.dumps(document(snap, tool_version=__version__)), output)
            else:
                _emit(getattr(tables, f"{view}_table")(snap), output)

    _run(debug, body)


@app.command()
def sections(
    target: TargetArg = None,
    vmlinux: VmlinuxOpt = None,
    json_: JsonOpt = False,
    output: OutputOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Every present SPARSEMEM section: flags, subsection map, usage.

    Examples:

      subsecinspect sections                         # live

      subsecinspect sections vmcore -s vmlinux --json
    """

    _snapshot_view(target, vmlinux, json_, output, debug, "sections")


@app.command()
def pgmaps(
    target: TargetArg = None,
    vmlinux: VmlinuxOpt = None,
    json_: JsonOpt = False,
    output: OutputOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Every dev_pagemap in pgmap_array: type, ranges, altmap, lifecycle, memmap evidence.

    Examples:

      subsecinspect pgmaps                           # live

      subsecinspect pgmaps snap.json --json          # from a saved snapshot
    """

    _snapshot_view(target, vmlinux, json_, output, debug, "pgmaps")


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


# `subsecinspect trace` lives in trace_cli.py (bcc is imported only when it runs).
app.command("trace")(trace_cli.trace)


def main() -> None:
    """Entry point (``subsecinspect`` and ``python -m subsecinspect``)."""
    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, _on_sigterm)
    app()

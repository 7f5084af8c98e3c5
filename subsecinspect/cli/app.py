"""The typer app behind :func:`subsecinspect.cli.main`: every command line but the fast path.

``classify`` (tables or JSON), ``explain``, ``audit``, ``sections``, ``pgmaps`` and
``trace``, with help texts and usage errors. Loading, warnings, errors, exit
codes and atomic writes are the helpers of :mod:`subsecinspect.cli.common`, shared
with the typer-free fast path of ``classify --json``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from subsecinspect import __version__
from subsecinspect.cli import diff as diff_cmd
from subsecinspect.cli import trace as trace_cmd
from subsecinspect.cli.common import (
    Opening,
    classify_json,
    emit_text,
    load_snapshot,
    parse_location,
    run_guarded,
    say,
    write_atomic,
)
from subsecinspect.errors import EXIT_CODES, OptionError

__all__ = ("app", "package_version")

_EXIT_HELP = "Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + "."

app = typer.Typer(
    name="subsecinspect",
    help="Which struct pages are safe to read: classify every PFN of a live kernel or a vmcore "
    "into HOLE, ONLINE_RAM and Hildenbrand's five ZONE_DEVICE/hotplug memmap cases.\n\n"
    + _EXIT_HELP,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (typer's, via shellingham)
    pretty_exceptions_enable=False,
)

out = Console(soft_wrap=True)


def package_version() -> str:
    """The installed distribution's version (its metadata); a bare checkout's ``__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("subsecinspect")
    except PackageNotFoundError:
        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"subsecinspect {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="print the version and exit",
    )] = False,
) -> None:
    """The options before the command (``--version``, shell completion)."""

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
DebuginfoOpt = Annotated[
    str, typer.Option("--debuginfo", help="auto (DWARF when found, else BTF + kallsyms), "
                      "dwarf or btf")
]
SystemMapOpt = Annotated[
    str | None, typer.Option("-m", "--system-map", help="System.map as the symbol source (BTF)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the JSON document instead of tables")]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "-o", "--output", help="write the output to this file (atomically) instead of stdout"
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="show tracebacks of errors")]
NoBpfOpt = Annotated[
    bool,
    typer.Option(
        "--no-bpf",
        help="live: read only what /proc/kcore serves (on-device memmaps stay MEMMAP_UNREADABLE)",
    ),
]


def _emit(text: str | Any, output: str | None) -> None:
    """Print *text* (a string or a rich renderable) or write it atomically to *output*."""
    if isinstance(text, str):
        emit_text(text, output)
    elif output is None:
        out.print(text)
    else:
        cap = Console(width=200, record=True, file=open(os.devnull, "w"))
        cap.print(text)
        write_atomic(output, cap.export_text())


def _run(debug: bool, fn: Callable[[], None]) -> None:
    """:func:`subsecinspect.cli.common.run_guarded`, ending the command with its exit code."""
    code = run_guarded(debug, fn)
    if code:
        raise typer.Exit(code)


@app.command()
def classify(
    targets: Annotated[list[str] | None, typer.Argument(
        help="/proc/kcore (default, live; needs root), vmcores (ELF or kdump-compressed), or "
        "snapshots saved with --save (*.json); several: JSON lines, one per target",
        show_default=False, metavar="[TARGET]...",
    )] = None,
    vmlinux: VmlinuxOpt = None,
    debuginfo: DebuginfoOpt = "auto",
    system_map: SystemMapOpt = None,
    json_: JsonOpt = False,
    save: Annotated[
        str | None, typer.Option("--save", help="also save the snapshot as JSON (atomically)")
    ] = None,
    output: OutputOpt = None,
    debug: DebugOpt = False,
    no_bpf: NoBpfOpt = False,
    format_: Annotated[str | None, typer.Option(
        "--format", help="table (default), json (same as --json), or openmetrics "
        "(pages and ranges per class, for node_exporter's textfile collector; use with -o)",
    )] = None,
    jobs: Annotated[int | None, typer.Option(
        "-j", "--jobs", help="classify the targets N at a time, each in its own process "
        "(JSON lines; one error line per bad target; progress on stderr)",
    )] = None,
    picture: Annotated[str | None, typer.Option(
        "--picture", help="also write the memory map as SVG to this file (atomically): a row "
        "per section, a cell per sub-section coloured by class, ranges as tooltips",
    )] = None,
) -> None:
    """Classify every PFN: a summary per class and the range table (or --json).

    Examples:

      subsecinspect classify                         # live, via /proc/kcore (root)

      subsecinspect classify vmcore -s vmlinux --json  # a dump, as JSON

      subsecinspect classify --save snap.json        # keep the snapshot for later

      subsecinspect classify snap.json               # re-classify a saved snapshot offline

      subsecinspect classify --format openmetrics -o /var/lib/node_exporter/subsec.prom

      subsecinspect classify /var/crash/*/vmcore -j 4 > triage.jsonl  # a fleet's dumps
    """
    from subsecinspect.cli import metrics

    opening = Opening(vmlinux, debuginfo, system_map, not no_bpf)
    if len(targets or ()) > 1 or jobs is not None:
        from subsecinspect.cli import fleet

        worst = [0]

        def many() -> None:
            if save or picture or format_ not in (None, "json"):
                raise OptionError("several targets or --jobs: JSON lines only (no --save, "
                                  "--picture or --format)")
            worst[0] = fleet.classify_many(targets or ["/proc/kcore"], opening,
                                            1 if jobs is None else jobs, output)

        _run(debug, many)
        if worst[0]:
            raise typer.Exit(worst[0])
        return
    target = targets[0] if targets else None
    if picture is not None:
        from subsecinspect.cli.svgout import classify_picture

        def with_picture() -> None:
            if save or metrics.check_format(format_, json_) == "openmetrics":
                raise OptionError("--picture goes with the table or --json (no --save, "
                                  "no --format openmetrics)")
            classify_picture(target, opening, picture, json_, output)

        return _run(debug, with_picture)

    def tables_body() -> None:
        from rich.console import Group

        from subsecinspect.classify.decide import classify as do_classify
        from subsecinspect.render import tables
        from subsecinspect.snapshot.codec import snapshot_to_json

        snap = load_snapshot(target, opening)
        if save:
            write_atomic(save, snapshot_to_json(snap, indent=None) + "\n")
        cls = do_classify(snap)
        if snap.target.debuginfo:
            say(f"subsecinspect: debug info: {snap.target.debuginfo}")
        _emit(Group(tables.summary_table(cls), tables.ranges_table(cls)), output)

    bodies = {"json": lambda: classify_json(target, opening, save, output), "table": tables_body,
              "openmetrics": lambda: metrics.classify_metrics(target, opening, save, output)}
    _run(debug, lambda: bodies[metrics.check_format(format_, json_)]())


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
    debuginfo: DebuginfoOpt = "auto",
    system_map: SystemMapOpt = None,
    json_: JsonOpt = False,
    output: OutputOpt = None,
    debug: DebugOpt = False,
    no_bpf: NoBpfOpt = False,
) -> None:
    """The chain of evidence for one PFN, its verdict, and what the kernel's predicates answer.

    A plain number is a PFN; 0x... is a physical address; pfn:0x... is a PFN in hex.

    Examples:

      subsecinspect explain 0x100000000              # physical address 4 GiB, live

      subsecinspect explain pfn:0x100000 vmcore -s vmlinux  # the same page by PFN, in a dump

      subsecinspect explain 1048576 snap.json --json # from a saved snapshot
    """

    def body() -> None:
        from subsecinspect import api
        from subsecinspect.classify.explain import explain as do_explain
        from subsecinspect.render import tables

        value, kind = parse_location(location)
        snap = load_snapshot(target, Opening(vmlinux, debuginfo, system_map, not no_bpf))
        pfn = value >> snap.kernel.page_shift if kind == "phys" else value
        if json_:
            _emit(api.dumps(api.explain_document(snap, pfn)), output)
        else:
            _emit(tables.explain_panel(do_explain(snap, pfn)), output)

    _run(debug, body)


def _model_names(models: list[str]) -> list[str]:
    """The ``--model`` values, ``all`` expanded, duplicates dropped, in report order.

    :raises OptionError: an unknown model name.
    """
    from subsecinspect.classify.audit.models import MODELS

    names = models or ["kernel"]
    bad = [n for n in names if n != "all" and n not in MODELS]
    if bad:
        raise OptionError(f"unknown model {bad[0]!r}: use one of {', '.join(MODELS)} or all")
    return [n for n in MODELS if "all" in names or n in names]


@app.command()
def audit(
    target: TargetArg = None,
    vmlinux: VmlinuxOpt = None,
    debuginfo: DebuginfoOpt = "auto",
    system_map: SystemMapOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="kernel (default), init-reserved, section-flag, "
                     "subsection-zone-device, subsection-initialised, or all; repeatable"),
    ] = None,
    json_: JsonOpt = False,
    output: OutputOpt = None,
    debug: DebugOpt = False,
    no_bpf: NoBpfOpt = False,
) -> None:
    """Per class, which PFNs the kernel's predicates (and the 2019 alternatives) answer
    right, unsafe (a struct page that is not initialised) or over-cautious (a valid one hidden).

    Examples:

      subsecinspect audit                            # live: the running kernel's predicates

      subsecinspect audit vmcore -s vmlinux --model all   # every model, on a dump

      subsecinspect audit snap.json -m kernel -m subsection-initialised --json
    """

    def body() -> None:
        from subsecinspect.classify.audit.tally import audit as do_audit
        from subsecinspect.classify.decide import classify as do_classify
        from subsecinspect.render import auditdoc, jsondoc

        names = _model_names(list(model or []))
        snap = load_snapshot(target, Opening(vmlinux, debuginfo, system_map, not no_bpf))
        result = do_audit(snap, do_classify(snap), names)
        doc = auditdoc.audit_document(snap, result, tool_version=__version__) if json_ else None
        _emit(jsondoc.dumps(doc) if doc is not None else auditdoc.audit_tables(result), output)

    _run(debug, body)


def _snapshot_view(
    target: str | None, vmlinux: str | None, json_: bool, output: str | None, debug: bool,
    bpf: bool, view: str, debuginfo: str = "auto", system_map: str | None = None,
) -> None:
    """``sections`` / ``pgmaps``: one snapshot, rendered by ``render.jsondoc.<view>_document``
    with ``--json``, else by ``render.tables.<view>_table``."""

    def body() -> None:
        from subsecinspect import api
        from subsecinspect.render import tables

        snap = load_snapshot(target, Opening(vmlinux, debuginfo, system_map, bpf))
        if json_:
            _emit(api.dumps(getattr(api, f"{view}_document")(snap)), output)
        else:
            _emit(getattr(tables, f"{view}_table")(snap), output)

    _run(debug, body)


def _view_command(view: str, doc: str) -> None:
    """Register the ``view`` command (``sections`` / ``pgmaps``) with the common options."""

    def command(
        target: TargetArg = None,
        vmlinux: VmlinuxOpt = None,
        debuginfo: DebuginfoOpt = "auto",
        system_map: SystemMapOpt = None,
        json_: JsonOpt = False,
        output: OutputOpt = None,
        debug: DebugOpt = False,
        no_bpf: NoBpfOpt = False,
    ) -> None:
        _snapshot_view(target, vmlinux, json_, output, debug, not no_bpf, view, debuginfo,
                       system_map)

    command.__doc__ = doc
    app.command(view)(command)


_view_command("sections", """Every present SPARSEMEM section: flags, subsection map, usage.

    Examples:

      subsecinspect sections                         # live

      subsecinspect sections vmcore -s vmlinux --json
    """)

_view_command("pgmaps", """Every dev_pagemap in pgmap_array: type, ranges, altmap, lifecycle,
    memmap evidence.

    Examples:

      subsecinspect pgmaps                           # live

      subsecinspect pgmaps snap.json --json          # from a saved snapshot
    """)


# `subsecinspect trace` lives in cli/trace.py (bcc is imported only when it runs).
app.command("trace")(trace_cmd.trace)
app.command("diff")(diff_cmd.diff)

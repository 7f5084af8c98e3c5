"""
drgn plugin: the subsecinspect commands inside drgn
---------------------------------------------------

Installed with the package as the ``subsecinspect`` entry point of the ``drgn.plugins`` group,
so a ``drgn`` session on a Linux kernel (``drgn -c vmcore``, ``drgn`` live) gets, on the
``prog`` it already has open (its debug info is not loaded a second time)::

    %subsec classify [--json] [-o FILE] [--drgn]
    %subsec explain LOCATION [--json] [-o FILE] [--drgn]
    %subsec sections [--json] [-o FILE] [--drgn]
    %subsec pgmaps [--json] [-o FILE] [--drgn]

As with drgn's ``%crash kmem``, the commands live in their own namespace
(:data:`SUBSEC_COMMAND_NAMESPACE`) behind one dispatcher command, ``subsec``, so that
generic names such as ``sections`` cannot collide with other plugins' commands. ``--json``
prints exactly what the command line prints (:mod:`subsecinspect.api`); errors are one
line (``drgn: error: ...``).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from drgn import Program
from drgn.commands import (
    CommandError,
    CommandNamespace,
    argument,
    command,
    drgn_argument,
)
from drgn.commands.linux import linux_kernel_raw_command

from subsecinspect import api
from subsecinspect.errors import SubsecinspectError

__all__ = ("SUBSEC_COMMAND_NAMESPACE", "run_subsec_command")

#: The namespace of the ``%subsec`` sub-commands (``classify``, ``explain``, ...).
SUBSEC_COMMAND_NAMESPACE = CommandNamespace()
_subsec_command = functools.partial(command, namespace=SUBSEC_COMMAND_NAMESPACE)

_COMMON = (
    argument("--json", action="store_true", help="print the JSON document (as the CLI does)"),
    argument("-o", "--output", metavar="FILE",
             help="write the output to FILE (atomically) instead of stdout"),
    drgn_argument,
)


def _emit(args: argparse.Namespace, document: Callable[[], dict[str, Any]],
          table: Callable[[], Any]) -> None:
    """Print (or write to ``-o``) the JSON document or the rich table of one command."""
    from subsecinspect.cli.common import emit_text

    try:
        if args.json:
            emit_text(api.dumps(document()), args.output)
            return
        from rich.console import Console

        renderable = table()
        if args.output is None:
            Console(file=sys.stdout, soft_wrap=True).print(renderable)
        else:
            cap = Console(width=200, record=True, file=open(os.devnull, "w"))
            cap.print(renderable)
            emit_text(cap.export_text(), args.output)
    except SubsecinspectError as e:
        raise CommandError(str(e)) from None


def _print_drgn(call: str) -> None:
    """``--drgn``: the API call that produces the same document in a drgn script."""
    print("from subsecinspect import api\n")
    print(f"doc = {call}")
    print("print(api.dumps(doc))")


@_subsec_command(
    description="classify every PFN (summary and ranges)",
    long_description="Every PFN of the program in exactly one class, with its evidence.",
    arguments=_COMMON,
)
def _cmd_classify(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    if args.drgn:
        return _print_drgn("api.classification_document(prog)")
    from rich.console import Group

    from subsecinspect.classify.decide import classify
    from subsecinspect.render import tables

    def table() -> Any:
        cls = classify(api.read_program(prog))
        return Group(tables.summary_table(cls), tables.ranges_table(cls))

    _emit(args, lambda: api.classification_document(prog), table)


@_subsec_command(
    description="the chain of evidence for one PFN",
    long_description="A plain number is a PFN; 0x... is a physical address; pfn:0x... a PFN.",
    arguments=(argument("location", help="PFN (4660, pfn:0x1234) or physical address (0x...)"),
               *_COMMON),
)
def _cmd_explain(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    from subsecinspect.cli.common import parse_location

    try:
        value, kind = parse_location(args.location)
    except SubsecinspectError as e:
        raise CommandError(str(e)) from None
    key = "pfn" if kind == "pfn" else "phys_addr"
    if args.drgn:
        return _print_drgn(f"api.explain_document(prog, {key}={value:#x})")

    def table() -> Any:
        from subsecinspect.classify.explain import explain
        from subsecinspect.render import tables

        snap = api.read_program(prog)
        pfn = value >> snap.kernel.page_shift if kind == "phys" else value
        return tables.explain_panel(explain(snap, pfn))

    def document() -> dict[str, Any]:
        if kind == "pfn":
            return api.explain_document(prog, value)
        return api.explain_document(prog, phys_addr=value)

    _emit(args, document, table)


def _view(view: str, description: str) -> None:
    """Register ``sections`` / ``pgmaps``: ``api.<view>_document``, ``tables.<view>_table``."""

    def run(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
        if args.drgn:
            return _print_drgn(f"api.{view}_document(prog)")
        from subsecinspect.render import tables

        _emit(args, lambda: getattr(api, f"{view}_document")(prog),
              lambda: getattr(tables, f"{view}_table")(api.read_program(prog)))

    _subsec_command(name=view, description=description, arguments=_COMMON)(run)


_view("sections", "every present SPARSEMEM section: flags, subsection map")
_view("pgmaps", "every dev_pagemap: type, ranges, altmap, lifecycle, memmap")
# audit: once subsecinspect.classify has it, register it here like the views above
# (``_view("audit", ...)`` with ``api.audit_document`` and ``tables.audit_table``).


def run_subsec_command(prog: Program, line: str, *, globals: dict[str, Any] | None = None
                       ) -> Any:
    """Run one ``%subsec`` sub-command line (``"classify --json"``) on *prog*.

    :raises CommandError: bad arguments or a subsecinspect error (one-line message).
    """
    return SUBSEC_COMMAND_NAMESPACE.run(prog, line, globals=globals or {})


@linux_kernel_raw_command(
    description="subsecinspect: which struct pages are safe to read",
    usage="**subsec** [*command*]",
    long_description="""
    Run a subsecinspect command (``classify``, ``explain``, ``sections``, ``pgmaps``) on
    the program drgn has open; without *command*, list them. Each takes ``--json``
    (the document the ``subsecinspect`` command line prints), ``-o FILE`` and ``--drgn``.
    """,
)
def _cmd_subsec(prog: Program, name: str, args: str, *, globals: dict[str, Any],
                **kwargs: Any) -> Any:
    if not args.strip():
        for sub, cmd in sorted(SUBSEC_COMMAND_NAMESPACE.enabled(prog)):
            print(f"{sub:<10} {cmd.description()}")
        return None
    return SUBSEC_COMMAND_NAMESPACE.run(prog, args, globals=globals)

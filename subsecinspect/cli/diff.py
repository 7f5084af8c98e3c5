"""``subsecinspect diff BEFORE AFTER``: the PFN ranges whose class changed, with both evidences.

Registered in :mod:`subsecinspect.cli.app`. BEFORE and AFTER are targets or saved snapshots
(``classify --save`` before and after a hotplug operation, or a vmcore and a live baseline).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from subsecinspect.snapshot.model import Snapshot

__all__ = ("diff",)


def diff(
    before: Annotated[str, typer.Argument(help="target or saved snapshot (*.json) before",
                                          show_default=False)],
    after: Annotated[str, typer.Argument(help="target or saved snapshot (*.json) after",
                                         show_default=False)],
    vmlinux: Annotated[str | None, typer.Option(
        "-s", "--vmlinux", help="vmlinux with debug info for targets that are not snapshots")
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="print the JSON document")] = False,
    output: Annotated[str | None, typer.Option(
        "-o", "--output", help="write the output to this file (atomically)")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks of errors")] = False,
) -> None:
    """The PFN ranges whose class changed between two targets, with both evidences.

    Examples:

      subsecinspect diff before.json after.json      # around a hotplug operation

      subsecinspect diff vmcore.json /proc/kcore --json  # a dump against the live kernel
    """
    from subsecinspect.cli.common import Opening, emit_text, load_snapshot, run_guarded

    def body() -> None:
        from subsecinspect import __version__
        from subsecinspect.classify.decide import classify
        from subsecinspect.classify.diff import diff_classifications
        from subsecinspect.render import diffdoc, jsondoc

        def one(t: str) -> Snapshot:
            return load_snapshot(t, Opening(None if t.endswith(".json") else vmlinux))

        a, b = one(before), one(after)
        changes = diff_classifications(classify(a), classify(b))
        if json_:
            doc = diffdoc.diff_document(a, b, changes, tool_version=__version__)
            emit_text(jsondoc.dumps(doc), output)
        else:
            emit_text(_as_text(diffdoc.diff_table(changes)), output)

    code = run_guarded(debug, body)
    if code:
        raise typer.Exit(code)


def _as_text(renderable: object) -> str:
    """A rich renderable as plain text (the table goes through emit_text like the JSON)."""
    import io

    from rich.console import Console

    console = Console(width=160, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()

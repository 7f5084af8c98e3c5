"""``classify --picture FILE.svg``: write the memory map as SVG (atomically), then the usual output.

The SVG comes from :func:`subsecinspect.render.svg.svg_picture` of the same snapshot and
classification the command prints (one read of the target): the ``--json`` document, or the
summary table.
"""

from __future__ import annotations

from subsecinspect.cli.common import Opening, emit_text, load_snapshot, say, write_atomic

__all__ = ("classify_picture",)


def classify_picture(target: str | None, opening: Opening, picture: str, json_: bool,
                     output: str | None) -> None:
    """Classify *target*, write *picture*, print the document (``json_``) or the summary."""
    from subsecinspect import api
    from subsecinspect.classify.decide import classify
    from subsecinspect.render.svg import svg_picture

    snap = load_snapshot(target, opening)
    result = classify(snap)
    write_atomic(picture, svg_picture(snap, result))
    say(f"subsecinspect: wrote {picture}")
    if json_:
        emit_text(api.dumps(api.classification_document(snap)), output)
        return
    import io

    from rich.console import Console

    from subsecinspect.render.tables import summary_table

    console = Console(width=120, record=True, file=io.StringIO())
    console.print(summary_table(result))
    emit_text(console.export_text(), output)

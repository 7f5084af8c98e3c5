"""``classify --format openmetrics [-o FILE]``: the classification as a node_exporter textfile.

Kept out of the typer app so that ``trace --metrics`` and the fleet runs reuse it; imports no
typer or rich. ``-o`` writes atomically (:func:`subsecinspect.cli.common.write_atomic`), so the
textfile collector never reads half a file.
"""

from __future__ import annotations

from subsecinspect.cli.common import Opening, emit_text, load_snapshot, write_atomic
from subsecinspect.errors import OptionError

__all__ = ("FORMATS", "check_format", "classify_metrics")

#: The values of ``classify --format``.
FORMATS = ("table", "json", "openmetrics")


def check_format(fmt: str | None, json_: bool) -> str:
    """The output format of ``classify``: ``--format`` or ``--json``, which must agree.

    :raises OptionError: an unknown format, or ``--json`` with another format.
    """
    if fmt is None:
        return "json" if json_ else "table"
    if fmt not in FORMATS:
        raise OptionError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if json_ and fmt != "json":
        raise OptionError(f"--json and --format {fmt} contradict each other")
    return fmt


def classify_metrics(
    target: str | None, opening: Opening, save: str | None, output: str | None
) -> None:
    """Read (or load) the snapshot, save it if asked, print or write the metrics file."""
    from subsecinspect import __version__
    from subsecinspect.classify.decide import classify
    from subsecinspect.render.openmetrics import classification_metrics

    snap = load_snapshot(target, opening)
    if save:
        from subsecinspect.snapshot.codec import snapshot_to_json

        write_atomic(save, snapshot_to_json(snap, indent=None) + "\n")
    text = classification_metrics(snap, classify(snap), tool_version=__version__,
                                  debuginfo_source=snap.target.debuginfo or opening.vmlinux)
    emit_text(text, output)

"""The ``classify --format openmetrics`` document: pages and ranges per class, as metrics.

Prometheus text exposition, in the form node_exporter's textfile collector reads
(``--collector.textfile.directory``; write the file atomically, which ``-o`` does), and valid
OpenMetrics as well (it ends with ``# EOF``). Two gauges, one sample per :class:`PageClass`,
including classes with no pages (a series that vanishes cannot alert)::

    subsecinspect_pages{class="C4_DEV_INITIALISING",kernel_release="6.1.0-...",
                        tool_version="0.1.0",target_kind="live",...} 32768
    subsecinspect_ranges{class="C4_DEV_INITIALISING",...} 1

Labels: ``class``, ``tool_version``, ``kernel_release``, ``target_kind`` (live / vmcore),
and ``debuginfo_source`` only when the caller knows it (e.g. the ``-s`` vmlinux). Pure: no
drgn, no I/O.
"""

from __future__ import annotations

from subsecinspect.classify.classes import Classification, PageClass
from subsecinspect.snapshot.model import Snapshot

__all__ = ("classification_metrics", "metrics_text")

_HELP = {
    "pages": "Pages (PFNs) of each subsecinspect class.",
    "ranges": "Maximal PFN ranges of each subsecinspect class.",
}


def _label_value(value: str) -> str:
    """Escape a label value (backslash, double quote, newline) per the text format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(counts: dict[PageClass, tuple[int, int]], labels: dict[str, str]) -> str:
    """The metrics file for ``{class: (pages, ranges)}``; absent classes are 0.

    :param labels: the labels every sample carries besides ``class``, in this order.
    """
    common = "".join(f',{k}="{_label_value(v)}"' for k, v in labels.items())
    lines: list[str] = []
    for index, name in enumerate(("pages", "ranges")):
        metric = f"subsecinspect_{name}"
        lines += [f"# HELP {metric} {_HELP[name]}", f"# TYPE {metric} gauge"]
        for cls in PageClass:
            value = counts.get(cls, (0, 0))[index]
            lines.append(f'{metric}{{class="{cls.value}"{common}}} {value}')
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def classification_metrics(
    snapshot: Snapshot, classification: Classification, *, tool_version: str,
    debuginfo_source: str | None = None,
) -> str:
    """The metrics file of one classification."""
    labels = {"tool_version": tool_version, "kernel_release": snapshot.kernel.release,
              "target_kind": snapshot.target.kind}
    if debuginfo_source:
        labels["debuginfo_source"] = debuginfo_source
    counts = {s.cls: (s.pages, s.ranges) for s in classification.summary()}
    return metrics_text(counts, labels)

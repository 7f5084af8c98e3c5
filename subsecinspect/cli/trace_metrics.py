"""``trace --metrics FILE``: keep a ``classify --format openmetrics`` file current while tracing.

The file is written once when tracing starts and again after hotplug lifecycle events (the
probes of :mod:`subsecinspect.probes.subsec_trace` say *that* the memory map changed; a new
classification of the live kernel says *what* it is now), at most once per
:attr:`MetricsFile.min_interval` so a burst of events costs one read. Every write is atomic,
so node_exporter's textfile collector reads either the old or the new file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from subsecinspect.cli.common import write_atomic

if TYPE_CHECKING:
    from subsecinspect.snapshot.model import Snapshot

__all__ = ("MetricsFile", "live_metrics_file")


class MetricsFile:
    """A metrics file rewritten from *read* (a fresh snapshot) when marked stale."""

    def __init__(self, path: str, read: Callable[[], Snapshot], *,
                 debuginfo_source: str | None = None, min_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.min_interval = min_interval
        self.writes = 0
        self._read = read
        self._debuginfo = debuginfo_source
        self._clock = clock
        self._stale = True
        self._last = float("-inf")

    def mark_stale(self) -> None:
        """The memory map changed (a lifecycle event): rewrite at the next :meth:`refresh`."""
        self._stale = True

    def refresh(self, force: bool = False) -> bool:
        """Rewrite the file if stale and *min_interval* has passed (or *force*). :return: wrote."""
        if not self._stale or (not force and self._clock() - self._last < self.min_interval):
            return False
        from subsecinspect import __version__
        from subsecinspect.classify.decide import classify
        from subsecinspect.render.openmetrics import classification_metrics

        self._stale = False
        snap = self._read()
        write_atomic(self.path, classification_metrics(
            snap, classify(snap), tool_version=__version__, debuginfo_source=self._debuginfo))
        self._last = self._clock()
        self.writes += 1
        return True


def live_metrics_file(path: str, vmlinux: str | None, debuginfo: str = "auto",
                      system_map: str | None = None) -> MetricsFile:
    """A :class:`MetricsFile` of the live kernel: one Program (debug info loaded once),
    re-read on every refresh."""
    from subsecinspect import api
    from subsecinspect.target import open_target

    prog, info = open_target(None, vmlinux, debuginfo, system_map)
    # The same label classify --format openmetrics writes: where the debug info came from.
    return MetricsFile(path, lambda: api.read_program(prog, info),
                       debuginfo_source=info.debuginfo or vmlinux)

"""``trace --metrics``: the file is written at start, after lifecycle events, at most once per
interval, atomically, and parses as the classification of the snapshot it was read from."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from subsecinspect import api
from subsecinspect.cli.trace_metrics import MetricsFile

LAB = Path(__file__).parent / "fixtures" / "lab"
BEFORE = api.load_saved_snapshot(str(LAB / "nvdimm_mixed_6.1_live.json"))
AFTER = api.load_saved_snapshot(str(LAB / "legacy_pmem_6.1_live.json"))


def _pages(path: Path) -> dict[str, float]:
    return {s.labels["class"]: s.value
            for f in text_string_to_metric_families(path.read_text())
            for s in f.samples if s.name == "subsecinspect_pages"}


def _want(snap) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {s["class"]: s["pages"] for s in api.classification_document(snap)["summary"]}


def test_rewrites_after_events_debounced(tmp_path: Path) -> None:
    now = [100.0]
    current = [BEFORE]
    out = tmp_path / "subsec.prom"
    m = MetricsFile(str(out), lambda: current[0], min_interval=1.0, clock=lambda: now[0])
    assert m.refresh() and m.writes == 1                      # at start
    got = _pages(out)
    assert {k: v for k, v in got.items() if v} == _want(BEFORE)
    assert not m.refresh()                                    # nothing changed
    current[0] = AFTER
    m.mark_stale()
    now[0] += 0.5
    assert not m.refresh()                                    # too soon after the last write
    now[0] += 0.6
    assert m.refresh() and m.writes == 2
    assert {k: v for k, v in _pages(out).items() if v} == _want(AFTER) != _want(BEFORE)
    m.mark_stale()
    assert m.refresh(force=True) and m.writes == 3            # at exit, whatever the interval
    assert [p.name for p in tmp_path.iterdir()] == ["subsec.prom"]


def test_a_failed_read_leaves_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "subsec.prom"
    snaps = [BEFORE]

    def read():  # type: ignore[no-untyped-def]
        if not snaps:
            raise OSError("gone")
        return snaps.pop()

    m = MetricsFile(str(out), read, min_interval=0.0)
    m.refresh()
    before = out.read_text()
    m.mark_stale()
    try:
        m.refresh()
    except OSError:
        pass
    assert out.read_text() == before

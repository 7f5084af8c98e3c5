"""``classify --format openmetrics``: parsed back with prometheus_client's parsers.

Both the Prometheus text parser (what node_exporter's textfile collector speaks) and the
OpenMetrics parser must read the file; every class has one ``subsecinspect_pages`` and one
``subsecinspect_ranges`` sample whose values equal the ``classify --json`` summary.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cliout import run_cli
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from subsecinspect import __version__
from subsecinspect.classify.classes import PageClass
from subsecinspect.render.openmetrics import metrics_text

LAB = Path(__file__).parent / "fixtures" / "lab"
SNAPS = [LAB / "nvdimm_mixed_6.1_dump.json", LAB / "nvdimm_mixed_7.2_live.json"]


def _samples(text: str, parse=text_string_to_metric_families):  # type: ignore[no-untyped-def]
    out: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
    for family in parse(text):
        assert family.type == "gauge"
        for s in family.samples:
            key = (s.name, s.labels["class"])
            assert key not in out, key
            out[key] = (s.value, s.labels)
    return out


@pytest.mark.parametrize("snap", SNAPS, ids=lambda p: p.stem)
def test_metrics_equal_the_json_summary(snap: Path, capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    prom = tmp_path / "subsec.prom"
    code, out, _ = run_cli(capsys, "classify", str(snap), "--format", "openmetrics", "-o",
                           str(prom))
    assert (code, out) == (0, "")
    assert [p.name for p in tmp_path.iterdir()] == ["subsec.prom"]  # no temporary left
    text = prom.read_text()
    _, js, _ = run_cli(capsys, "classify", str(snap), "--json")
    doc = json.loads(js)
    samples = _samples(text)
    assert samples == _samples(text, openmetrics_families)
    assert len(samples) == 2 * len(PageClass)
    want = {s["class"]: (s["pages"], s["ranges"]) for s in doc["summary"]}
    for cls in PageClass:
        pages, ranges = want.get(cls.value, (0, 0))
        assert samples[("subsecinspect_pages", cls.value)][0] == pages
        assert samples[("subsecinspect_ranges", cls.value)][0] == ranges
    labels = samples[("subsecinspect_pages", "HOLE")][1]
    assert labels == {"class": "HOLE", "tool_version": __version__,
                      "kernel_release": doc["kernel"]["release"],
                      "target_kind": doc["target"]["kind"]}
    assert sum(samples[("subsecinspect_pages", c.value)][0] for c in PageClass) == doc["end_pfn"]


def test_label_values_are_escaped() -> None:
    text = metrics_text({PageClass.HOLE: (3, 1)},
                        {"debuginfo_source": 'C:\\odd "path"\nx', "tool_version": "0"})
    (value, labels), = [v for k, v in _samples(text).items() if k == ("subsecinspect_pages",
                                                                          "HOLE")]
    assert value == 3 and labels["debuginfo_source"] == 'C:\\odd "path"\nx'


@pytest.mark.parametrize("argv, msg", [
    (["--format", "xml"], "--format 'xml': use one of table, json, openmetrics"),
    (["--format", "openmetrics", "--json"],
     "--json and --format openmetrics contradict each other"),
])
def test_bad_formats(argv: list[str], msg: str, capsys: pytest.CaptureFixture[str],
                     tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "classify", str(SNAPS[0]), *argv, "-o",
                             str(tmp_path / "m.prom"))
    assert (code, out, err) == (2, "", f"subsecinspect: error: {msg}\n")
    assert not list(tmp_path.iterdir())

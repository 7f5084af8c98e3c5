"""``classify --picture FILE.svg``, rendered by headless Chromium and read back pixel by pixel.

On the lab's nvdimm-mixed layout (tests/unit/test_classify_cases.py, built): the cell of a boot
RAM sub-section must be ONLINE_RAM's colour, namespace A's first sub-section (its altmap
reserve and the memmap it holds; the reserve is 2 pages, the memmap the most) C5b's, namespace
B's (devdax map=mem at 0x110000) C2's, and the absent tail of the partial section 37
(sub-sections 40..63) C3's; the legend shows each colour drawn. Needs Debian's ``chromium``
(scripts/setup-host.sh installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cliout import run_cli
from PIL import Image
from test_classify_cases import memmap_a, nvdimm_mixed

from subsecinspect.classify.classes import PageClass
from subsecinspect.render.svg import CELL, SVG_COLOURS, cell_origin
from subsecinspect.snapshot.codec import snapshot_to_json

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars",
         "--force-device-scale-factor=1"]


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16))


@pytest.fixture(scope="module")
def shot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Image.Image, list[int]]:
    if CHROMIUM is None:
        pytest.fail("chromium not installed (bash scripts/setup-host.sh installs it)")
    tmp = tmp_path_factory.mktemp("svg")
    snap = nvdimm_mixed(mm_a=memmap_a())
    (tmp / "s.json").write_text(snapshot_to_json(snap))
    svg = tmp / "p.svg"
    from subsecinspect.cli import main as cli

    with pytest.raises(SystemExit) as ex:
        cli.main(["classify", str(tmp / "s.json"), "--picture", str(svg), "--json",
                  "-o", str(tmp / "c.json")])
    assert ex.value.code in (0, None)
    text = svg.read_text()
    width = int(text.split('width="', 1)[1].split('"', 1)[0])
    height = int(text.split('height="', 1)[1].split('"', 1)[0])
    png = tmp / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}",
                    f"--screenshot={png}", f"--window-size={width},{height}",
                    svg.as_uri()], check=True, capture_output=True, timeout=120)
    return Image.open(png).convert("RGB"), sorted(s.section_nr for s in snap.sections)


@pytest.mark.parametrize("section_nr, subsection, cls", [
    (0, 0, PageClass.ONLINE_RAM),
    (15, 63, PageClass.ONLINE_RAM),
    (32, 0, PageClass.C5b_DEV_ALTMAP_MEMMAP),
    (34, 0, PageClass.C2_DEV_VALID),
    (37, 40, PageClass.C3_SUBSECTION_GAP),
    (37, 63, PageClass.C3_SUBSECTION_GAP),
])
def test_cell_colours(shot: tuple[Image.Image, list[int]], section_nr: int, subsection: int,
                      cls: PageClass) -> None:
    image, rows = shot
    x, y = cell_origin(rows.index(section_nr), subsection)
    got = image.getpixel((x + CELL // 2, y + CELL // 2))
    assert got == _rgb(SVG_COLOURS[cls]), (section_nr, subsection, cls)


def test_tooltips_and_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snap = nvdimm_mixed(mm_a=memmap_a())
    (tmp_path / "s.json").write_text(snapshot_to_json(snap))
    code, out, err = run_cli(capsys, "classify", str(tmp_path / "s.json"), "--picture",
                             str(tmp_path / "p.svg"))
    assert code == 0 and "Summary" in out and "wrote" in err
    svg = (tmp_path / "p.svg").read_text()
    # D: devdax map=dev from 0x11c000, altmap reserve 2 + free 1534 = 0x600 pages before it
    assert "<title>PFN 0x128000-0x128200: 0x11c600-0x12d000 C2_DEV_VALID</title>" in svg
    assert svg.count("<rect x=") == 22 * 64 + len({c for c in PageClass if
                                                   f">{c.value}</text>" in svg})


@pytest.mark.parametrize("extra", [["--format", "openmetrics"], ["--save", "x.json"]])
def test_picture_refuses_other_outputs(extra: list[str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "s.json").write_text(snapshot_to_json(nvdimm_mixed(mm_a=memmap_a())))
    code, out, err = run_cli(capsys, "classify", str(tmp_path / "s.json"), "--picture",
                             str(tmp_path / "p.svg"), *extra)
    assert (code, out) == (2, "") and "--picture goes with the table or --json" in err
    assert not (tmp_path / "p.svg").exists()

"""snapshot, classify, explain and render import and run without drgn.

A child interpreter installs a ``sys.meta_path`` finder that refuses any
``drgn`` import, then imports the pure modules and classifies a saved fixture.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = r"""
import sys

class NoDrgn:
    def find_spec(self, name, path=None, target=None):
        if name == "drgn" or name.startswith("drgn."):
            raise ImportError("drgn is blocked for this test")
        return None

sys.meta_path.insert(0, NoDrgn())
for mod in [m for m in sys.modules if m == "drgn" or m.startswith("drgn.")]:
    del sys.modules[mod]

import subsecinspect.snapshot.model, subsecinspect.classify.decide, subsecinspect.snapshot.pageinit
import subsecinspect.classify.predicates, subsecinspect.classify.explain
import subsecinspect.classify.audit.models, subsecinspect.classify.audit.tally
import subsecinspect.render.auditdoc
import subsecinspect.render.jsondoc, subsecinspect.render.tables, subsecinspect.render.picture
import subsecinspect.render.openmetrics, subsecinspect.render.diffdoc, subsecinspect.classify.diff
import subsecinspect.render.svg
from subsecinspect.classify.decide import classify
from subsecinspect.snapshot.codec import snapshot_from_json

snap = snapshot_from_json(open(sys.argv[1]).read())
print(len(classify(snap).ranges))
try:
    import drgn  # noqa: F401
except ImportError:
    print("blocked")
assert not any(m == "drgn" or m.startswith("drgn.") for m in sys.modules)
"""


def test_pure_modules_import_without_drgn() -> None:
    fixture = Path(__file__).parent / "fixtures" / "nvdimm_mixed_6.1.json"
    if not fixture.exists():  # written by test_snapshot_json; build it here if run alone
        from test_classify_cases import memmap_a, nvdimm_mixed

        from subsecinspect.snapshot.codec import snapshot_to_json
        fixture.write_text(snapshot_to_json(nvdimm_mixed(mm_a=memmap_a()), indent=1) + "\n")
    out = subprocess.run([sys.executable, "-c", CHILD, str(fixture)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["11", "blocked"]

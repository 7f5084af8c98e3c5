"""A drgn script for tests/vm/test_drgn_plugin.py: ``drgn [-c CORE] plugin_session.py OUTDIR``.

Runs every ``%subsec`` command of the plugin, as a user would type it, on the ``prog`` the
drgn CLI opened, writing each JSON document to OUTDIR/<command>.json. subsecinspect may not
open a target or load debug info itself here: both are replaced by functions that fail, so
the documents can only come from drgn's own Program, whose debug info drgn loaded once.
"""

import json
import sys

from drgn.commands import DEFAULT_COMMAND_NAMESPACE, run_command

import subsecinspect.target as target


def _refuse(*args, **kwargs):
    raise SystemExit("subsecinspect opened a target or loaded debug info a second time")


target.open_target = target._load_debug_info = _refuse
assert "subsec" in dict(DEFAULT_COMMAND_NAMESPACE.enabled(prog)), "plugin not loaded"  # noqa: F821
out = sys.argv[1]
run_command(prog, f"subsec classify --json -o {out}/classify.json")  # noqa: F821
with open(f"{out}/classify.json") as f:
    doc = json.load(f)
pfn = next(r for r in doc["ranges"] if r["class"] != "HOLE")["start_pfn"]
with open(f"{out}/pfn", "w") as f:
    f.write(f"{pfn:#x}")
run_command(prog, f"subsec explain pfn:{pfn:#x} --json -o {out}/explain.json")  # noqa: F821
for view in ("sections", "pgmaps"):
    run_command(prog, f"subsec {view} --json -o {out}/{view}.json")  # noqa: F821

#!/bin/bash
# README command (B): set up a fresh machine, build (or reuse) the lab, run every test.
#   bash scripts/test.sh              # everything: lint, types, unit tests, lab tests on all kernels
#   bash scripts/test.sh --fast       # the contributor's loop: lint, types, unit + reader tests
#   LAB_KERNELS="6.1" bash scripts/test.sh   # lab tests on a subset of the kernel matrix
# Extra arguments go to pytest. Lab tests never skip in CI (CI=true): a missing prerequisite
# fails them.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
fast=0
if [ "${1:-}" = --fast ]; then fast=1; shift; fi
bash scripts/setup-host.sh
.venv/bin/ruff check subsecinspect tests scripts vm-images/lab
.venv/bin/mypy   # [tool.mypy] in pyproject.toml: the package, the pure core strictly
if ((fast)); then
  .venv/bin/python -m pytest tests/unit tests/readers -p no:cacheprovider -q "$@"
  echo "test: --fast finished after $(( $(date +%s) - start )) s" >&2
  exit 0
fi
build_args=()
for k in ${LAB_KERNELS:-}; do build_args+=(--kernel "$k"); done
.venv/bin/python -m lab.images build "${build_args[@]}"
echo "test: lab ready after $(( $(date +%s) - start )) s" >&2
.venv/bin/python -m pytest tests -p no:cacheprovider "$@"
echo "test: finished after $(( $(date +%s) - start )) s" >&2

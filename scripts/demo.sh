#!/bin/bash
# README command (A): set up a fresh machine, build the lab's default kernel, boot the default
# guest (Debian 6.1 cloud kernel, scenario nvdimm-mixed), classify it live through /proc/kcore
# inside the guest, then classify a QMP ELF dump of the same guest on the host.
#   bash scripts/demo.sh [--kernel 6.12] [--scenario legacy-pmem] [--keep-dump]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
exec .venv/bin/python -m lab.demo "$@"

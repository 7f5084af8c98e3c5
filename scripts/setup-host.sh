#!/bin/bash
# Install everything subsecinspect and its lab need on a fresh Debian 12 host:
# the host packages (apt) and the project's Python environment (.venv, PyPI).
# Idempotent: a second run only checks. Used by scripts/test.sh, scripts/demo.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Host packages, each with the reason it is needed.
PKGS=(
  qemu-system-x86        # the lab guests (TCG)
  qemu-utils             # qemu-img for sparse disks
  debootstrap            # the guest root filesystem
  debian-archive-keyring # the lab's private apt configuration verifies the archive
  kmod                   # depmod/modprobe for the unpacked kernel trees
  cpio                   # initramfs
  e2fsprogs              # mkfs.ext4 -d and debugfs (read kdump files back without mounting)
  busybox-static         # initramfs userland
  xz-utils zstd          # .ko.xz modules, compressed caches
  gdb                    # gdbstub freezes (mid-init / mid-teardown dumps)
  makedumpfile crash     # dump conversion checks and the crash comparison
  gcc make bc flex bison libelf-dev # ground-truth kernel module builds against the lab kernels' headers
  python3-venv           # the project's virtual environment
  chromium               # renders classify --picture SVGs headless (tests/unit/test_svg_picture.py)
  man-db groff-base      # man -l / groff -ww of the shipped man page (tests/unit/test_packaging.py)
  util-linux dpkg        # setpriv (QEMU dies with its driver: PR_SET_PDEATHSIG), dpkg-deb
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup-host: installing ${missing[*]}" >&2
  if [ "$(id -u)" != 0 ]; then echo "setup-host: error: need root for apt-get" >&2; exit 3; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The project's Python environment.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Reinstall only when pyproject.toml changed (the stamp holds its hash).
stamp=.venv/.subsecinspect-pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -c 'import subsecinspect, drgn, rich, typer, pytest, hypothesis'
  echo "$want" > "$stamp"
fi
# The lab is no part of the package (it only works from a checkout): this venv finds it as
# the top-level package ``lab`` in vm-images/ (``python -m lab.images``, ``import lab.vm``).
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD/vm-images" > "$site/subsecinspect-lab.pth"
.venv/bin/python -c 'import drgn, rich, typer, lab.vm' 
echo "setup-host: ok ($(.venv/bin/python -c 'import drgn; print("drgn", drgn.__version__)'))" >&2

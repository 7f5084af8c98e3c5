#!/bin/bash
# Build the lab's shared guest root image (ext4, no loop mounts).
# Usage: build-rootfs.sh WORKDIR OUT_IMG WHEEL_DIR "PKG,PKG,..." "REQ REQ ..." [MIRROR]
# $PYTHON: a host CPython with pip (default python3); it only unpacks the cp311 wheels.
# Called by `python -m lab.images build`; its hash is part of the cache key.
set -euo pipefail
work=$1 out=$2 wheels=$3 include=$4 reqs=$5 mirror=${6:-http://deb.debian.org/debian}
root=$work/root
t() { local s=$SECONDS; "$@"; echo "rootfs: $1 $((SECONDS - s))s" >&2; }

s=$SECONDS
debootstrap --variant=minbase --include="$include" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
echo "rootfs: debootstrap $((SECONDS - s))s" >&2

# The guest runs Debian's /usr/bin/python3 (3.11); wheels were fetched for cp311 manylinux.
site=$root/usr/local/lib/python3.11/dist-packages
mkdir -p "$site"
# shellcheck disable=SC2086
t "${PYTHON:-python3}" -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --root-user-action=ignore --no-index --find-links "$wheels" --target "$site" \
    --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 $reqs
rm -rf "$site/bin"
# The console scripts of drgn's wheel (entry points drgn.cli:_main, drgn.internal.crashcli:_main),
# for Debian's /usr/bin/python3 (pip --target writes them for the host interpreter).
for ep in drgn:drgn.cli drgn-crash:drgn.internal.crashcli; do
    printf '#!/usr/bin/python3\nimport sys\nfrom %s import _main\nsys.exit(_main())\n' "${ep#*:}" \
        > "$root/usr/local/bin/${ep%%:*}"
    chmod 0755 "$root/usr/local/bin/${ep%%:*}"
done

# Mount points used by the guest init (kernel disk, project disk, scratch).
mkdir -p "$root/lab/kernel" "$root/lab/project" "$root/usr/lib/debug" "$root/usr/src"
echo lab > "$root/etc/hostname"
printf '127.0.0.1 localhost lab\n' > "$root/etc/hosts"
: > "$root/etc/fstab"

# Record what went in, then drop what a test guest never needs.
dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Package}=${Version}\n' | sort > "$work/packages.txt"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/locale

used=$(du -sm "$root" | cut -f1)
size=$((used + used / 4 + 256))
t mkfs.ext4 -q -F -L labroot -m 0 -d "$root" "$out" "${size}M"

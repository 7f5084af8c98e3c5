#!/bin/sh
# Build the ground-truth module subsec_gt.ko for one Debian kernel inside a build chroot.
#
# usage: build.sh CHROOT SUITE KVER OUTDIR [MAKE_ARG ...] [-- SOURCES_LINE ...]
#
#   CHROOT  build root (created with debootstrap on first use, reused afterwards)
#   SUITE   Debian suite of the chroot's compiler (bookworm: gcc-12; trixie: gcc-14)
#   KVER    kernel release, e.g. 6.1.0-47-cloud-amd64
#   OUTDIR  where subsec_gt.ko is copied
#   MAKE_ARG extra kbuild arguments (CC=gcc is added by itself when the headers' compiler,
#            e.g. gcc-10 for 5.10, is not in the chroot)
#   SOURCES_LINE extra apt source lines that hold the kernel's headers (its own suite)
#
# The headers packages expect /usr/src (absolute paths in their Makefiles), hence the chroot
# (lab-notes §16). They are unpacked with dpkg -x so that their compiler dependency (gcc-10 for
# 5.10) does not have to be installable.  Needs root, debootstrap and network access to
# deb.debian.org.  Prints the path of the built module on the last line.
set -eu
[ $# -ge 4 ] || { echo "usage: $0 CHROOT SUITE KVER OUTDIR [MAKE_ARG ...] [-- SOURCES_LINE ...]" >&2; exit 2; }
CHROOT=$1 SUITE=$2 KVER=$3 OUTDIR=$4
shift 4
MAKE_ARGS=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do MAKE_ARGS="$MAKE_ARGS $1"; shift; done
[ $# -gt 0 ] && shift
SRC=$(cd "$(dirname "$0")" && pwd)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ ! -e "$CHROOT/.lab-ready" ]; then
    rm -rf "$CHROOT"
    mkdir -p "$(dirname "$CHROOT")"
    debootstrap --variant=minbase --include=gcc,make,libc6-dev,libelf-dev,bc,xz-utils \
        "$SUITE" "$CHROOT" "$MIRROR" >"$CHROOT.debootstrap.log" 2>&1 \
        || { tail -20 "$CHROOT.debootstrap.log" >&2; exit 1; }
    touch "$CHROOT/.lab-ready"
fi

if [ ! -e "$CHROOT/usr/src/linux-headers-$KVER/Makefile" ]; then
    LIST="$CHROOT/etc/apt/sources.list.d/lab-kmod.list"
    : >"$LIST"
    for line in "$@"; do echo "$line" >>"$LIST"; done
    chroot "$CHROOT" apt-get -q update >/dev/null
    # The headers package plus what it pulls from the same source: -common and linux-kbuild.
    PKGS="linux-headers-$KVER $(chroot "$CHROOT" apt-cache depends "linux-headers-$KVER" \
        | sed -n 's/^ *Depends: \(linux-\(headers\|kbuild\)-[^ ]*\)$/\1/p' | sort -u | tr '\n' ' ')"
    mkdir -p "$CHROOT/tmp/debs"
    rm -f "$CHROOT"/tmp/debs/*.deb
    # shellcheck disable=SC2086
    (cd "$CHROOT/tmp/debs" && chroot "$CHROOT" sh -c "cd /tmp/debs && apt-get -q -o APT::Sandbox::User=root download $PKGS" >/dev/null)
    # tar keeps the merged-/usr symlinks (dpkg -x would replace /lib with a directory).
    for deb in "$CHROOT"/tmp/debs/*.deb; do
        dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$CHROOT"
    done
    rm -rf "$CHROOT/tmp/debs"
fi

# The headers name their compiler (gcc-10 for 5.10, absent on bookworm): fall back to the
# chroot's gcc; vermagic does not record the compiler.
HCC=$(sed -n 's/^CC = .*)\(gcc-[0-9]*\)$/\1/p' "$CHROOT/usr/src/linux-headers-$KVER/.kernelvariables" 2>/dev/null || true)
if [ -n "$HCC" ] && ! chroot "$CHROOT" sh -c "command -v $HCC || command -v x86_64-linux-gnu-$HCC" >/dev/null; then
    echo "build.sh: headers want $HCC, not in the $SUITE chroot: building with CC=gcc" >&2
    MAKE_ARGS="$MAKE_ARGS CC=gcc"
fi

rm -rf "$CHROOT/build/subsec_gt"
mkdir -p "$CHROOT/build/subsec_gt"
cp "$SRC/subsec_gt.c" "$SRC/Kbuild" "$CHROOT/build/subsec_gt/"
# No BTF for the module: it would need pahole matching the kernel build.  objtool (7.x) reads
# /proc, mounted in a private mount namespace so that nothing is left mounted.
unshare -m --propagation private sh -c "mount -t proc proc '$CHROOT/proc' && \
    exec chroot '$CHROOT' make -s -C '/usr/src/linux-headers-$KVER' M=/build/subsec_gt \
    CONFIG_DEBUG_INFO_BTF_MODULES= $MAKE_ARGS modules" >&2
mkdir -p "$OUTDIR"
cp "$CHROOT/build/subsec_gt/subsec_gt.ko" "$OUTDIR/subsec_gt.ko"
# Without debug info it is ~20 KB instead of ~400 KB: it travels into the guest over the serial line.
strip --strip-debug "$OUTDIR/subsec_gt.ko"
echo "$OUTDIR/subsec_gt.ko"

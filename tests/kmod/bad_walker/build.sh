#!/bin/sh
# Build bad_walker.ko for one kernel in the build chroot that tests/kmod/build.sh prepared
# (lab.groundtruth.build(kernel) creates the chroot and unpacks the headers).
#
# usage: build.sh CHROOT KVER OUTDIR [MAKE_ARG ...]
set -eu
[ $# -ge 3 ] || { echo "usage: $0 CHROOT KVER OUTDIR [MAKE_ARG ...]" >&2; exit 2; }
CHROOT=$1 KVER=$2 OUTDIR=$3
shift 3
SRC=$(cd "$(dirname "$0")" && pwd)
[ -e "$CHROOT/usr/src/linux-headers-$KVER/Makefile" ] || {
    echo "build.sh: no headers for $KVER in $CHROOT (run groundtruth.build first)" >&2; exit 1; }
MAKE_ARGS="$*"
HCC=$(sed -n 's/^CC = .*)\(gcc-[0-9]*\)$/\1/p' "$CHROOT/usr/src/linux-headers-$KVER/.kernelvariables" 2>/dev/null || true)
if [ -n "$HCC" ] && ! chroot "$CHROOT" sh -c "command -v $HCC || command -v x86_64-linux-gnu-$HCC" >/dev/null; then
    MAKE_ARGS="$MAKE_ARGS CC=gcc"
fi
rm -rf "$CHROOT/build/bad_walker"
mkdir -p "$CHROOT/build/bad_walker"
cp "$SRC/bad_walker.c" "$SRC/Kbuild" "$CHROOT/build/bad_walker/"
unshare -m --propagation private sh -c "mount -t proc proc '$CHROOT/proc' && \
    exec chroot '$CHROOT' make -s -C '/usr/src/linux-headers-$KVER' M=/build/bad_walker \
    CONFIG_DEBUG_INFO_BTF_MODULES= $MAKE_ARGS modules" >&2
mkdir -p "$OUTDIR"
cp "$CHROOT/build/bad_walker/bad_walker.ko" "$OUTDIR/bad_walker.ko"
strip --strip-debug "$OUTDIR/bad_walker.ko"
echo "$OUTDIR/bad_walker.ko"

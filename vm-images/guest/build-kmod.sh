#!/bin/sh
# The two steps of an out-of-tree module build for one Debian kernel, in a build chroot.
# Driven by lab.kmod (vm-images/lab/kmod.py), which picks the suite, holds the chroot's lock
# and caches the result; see vm-images/README.md, "Kernel modules".
#
# usage: build-kmod.sh prepare CHROOT SUITE KVER [SOURCES_LINE ...]
#          debootstrap CHROOT (SUITE's gcc) once; unpack KVER's headers into it once.
#          SOURCES_LINE: apt source lines of the suite that holds the kernel's headers.
#        build-kmod.sh module CHROOT KVER SRCDIR NAME OUTFILE
#          copy SRCDIR's files (module source + Kbuild) in, make, strip into OUTFILE.
#
# The headers packages expect /usr/src (absolute paths in their Makefiles), hence the chroot
# (lab-notes §16). Needs root, debootstrap, unshare and network access to deb.debian.org.
set -eu
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

prepare() {
    CHROOT=$1 SUITE=$2 KVER=$3
    shift 3
    if [ ! -e "$CHROOT/.lab-ready" ]; then
        rm -rf "$CHROOT"
        mkdir -p "$(dirname "$CHROOT")"
        debootstrap --variant=minbase --include=gcc,make,libc6-dev,libelf-dev,bc,xz-utils \
            "$SUITE" "$CHROOT" "$MIRROR" >"$CHROOT.debootstrap.log" 2>&1 \
            || { tail -20 "$CHROOT.debootstrap.log" >&2; exit 1; }
        touch "$CHROOT/.lab-ready"
    fi
    [ -e "$CHROOT/usr/src/linux-headers-$KVER/Makefile" ] && return 0
    LIST="$CHROOT/etc/apt/sources.list.d/lab-kmod.list"
    : >"$LIST"
    for line in "$@"; do echo "$line" >>"$LIST"; done
    chroot "$CHROOT" apt-get -q update >/dev/null
    # The headers package plus what it pulls from the same source: -common and linux-kbuild.
    PKGS="linux-headers-$KVER $(chroot "$CHROOT" apt-cache depends "linux-headers-$KVER" \
        | sed -n 's/^ *Depends: \(linux-\(headers\|kbuild\)-[^ ]*\)$/\1/p' | sort -u | tr '\n' ' ')"
    rm -rf "$CHROOT/tmp/debs"
    mkdir -p "$CHROOT/tmp/debs"
    chroot "$CHROOT" sh -c "cd /tmp/debs && apt-get -q -o APT::Sandbox::User=root download $PKGS" >/dev/null
    # Unpacked, not installed: their compiler dependency (gcc-10 for 5.10) need not be
    # installable; tar keeps the merged-/usr symlinks (dpkg -x would replace /lib with a directory).
    for deb in "$CHROOT"/tmp/debs/*.deb; do
        dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$CHROOT"
    done
    rm -rf "$CHROOT/tmp/debs"
}

module() {
    CHROOT=$1 KVER=$2 SRC=$3 NAME=$4 OUT=$5
    HDR="$CHROOT/usr/src/linux-headers-$KVER"
    [ -e "$HDR/Makefile" ] || { echo "build-kmod.sh: no headers for $KVER in $CHROOT (prepare first)" >&2; exit 1; }
    MAKE_ARGS=""
    # The headers name their compiler (gcc-10 for 5.10, absent on bookworm): fall back to the
    # chroot's gcc; vermagic does not record the compiler.
    HCC=$(sed -n 's/^CC = .*)\(gcc-[0-9]*\)$/\1/p' "$HDR/.kernelvariables" 2>/dev/null || true)
    if [ -n "$HCC" ] && ! chroot "$CHROOT" sh -c "command -v $HCC || command -v x86_64-linux-gnu-$HCC" >/dev/null; then
        echo "build-kmod.sh: headers want $HCC, not in the chroot: building with CC=gcc" >&2
        MAKE_ARGS="CC=gcc"
    fi
    mkdir -p "$CHROOT/build"
    # One directory per build: kernels of the same suite share the chroot.
    DIR=$(mktemp -d "$CHROOT/build/$NAME.XXXXXX")
    trap 'rm -rf "$DIR"' EXIT
    find "$SRC" -maxdepth 1 -type f -exec cp {} "$DIR/" \;
    M=/build/$(basename "$DIR")
    # No BTF for the module: it would need pahole matching the kernel build. objtool (7.x)
    # reads /proc, mounted in a private mount namespace so that nothing is left mounted.
    unshare -m --propagation private sh -c "mount -t proc proc '$CHROOT/proc' && \
        exec chroot '$CHROOT' make -s -C '/usr/src/linux-headers-$KVER' M=$M \
        CONFIG_DEBUG_INFO_BTF_MODULES= $MAKE_ARGS modules" >&2
    mkdir -p "$(dirname "$OUT")"
    # Without debug info a module is a few tens of KB instead of ~400 KB: it may travel into
    # the guest over the serial line (vm-images/README.md, put()).
    strip --strip-debug -o "$OUT.tmp" "$DIR/$NAME.ko"
    mv "$OUT.tmp" "$OUT"
}

[ $# -ge 1 ] || { echo "usage: $0 prepare|module ..." >&2; exit 2; }
step=$1
shift
case $step in
    prepare) [ $# -ge 3 ] || { echo "usage: $0 prepare CHROOT SUITE KVER [SOURCES_LINE ...]" >&2; exit 2; }
             prepare "$@" ;;
    module)  [ $# -eq 5 ] || { echo "usage: $0 module CHROOT KVER SRCDIR NAME OUTFILE" >&2; exit 2; }
             module "$@" ;;
    *) echo "$0: unknown step $step (prepare|module)" >&2; exit 2 ;;
esac

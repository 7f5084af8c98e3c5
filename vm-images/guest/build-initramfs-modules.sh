#!/bin/bash
# Collect the modules the initramfs must insmod before it can mount /dev/vda.
# Usage: build-initramfs-modules.sh TREE KVER OUTDIR MODULE...
# TREE is the unpacked image (depmod -b already run). Writes OUTDIR/<name>.ko (decompressed:
# busybox insmod cannot read .ko.xz) and OUTDIR/modules.order (load order, one name a line).
# Modules built into the kernel ("builtin" lines of --show-depends) are skipped.
set -euo pipefail
tree=$1 kver=$2 out=$3
shift 3
mkdir -p "$out"
: > "$out/modules.order"
modprobe -d "$tree" -S "$kver" --show-depends -a "$@" | while read -r verb path _; do
    [ "$verb" = insmod ] || continue
    name=$(basename "$path"); name=${name%.xz}; name=${name%.ko}
    grep -qx "$name" "$out/modules.order" && continue
    case $path in
        *.ko.xz) xz -dc "$path" > "$out/$name.ko" ;;
        *.ko.zst) zstd -qdc "$path" > "$out/$name.ko" ;;
        *) cp "$path" "$out/$name.ko" ;;
    esac
    echo "$name" >> "$out/modules.order"
done
echo "initramfs modules for $kver: $(tr '\n' ' ' < "$out/modules.order")" >&2

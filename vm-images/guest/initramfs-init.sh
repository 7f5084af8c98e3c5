#!/bin/busybox sh
# /init of the lab initramfs (busybox-static only).
# Loads the virtio modules listed in /modules.order (plain .ko: busybox insmod cannot
# read .ko.xz), mounts the shared root image /dev/vda (opened by QEMU with snapshot=on,
# so writes are thrown away), drops the guest init script into it and switch_roots.
# Built into every kernel's initramfs by vm-images/lab/images.py.
/bin/busybox mkdir -p /bin /sbin /proc /sys /dev /newroot
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "lab-initramfs: $(uname -r)" > /dev/kmsg
while read -r m; do
    [ -n "$m" ] && insmod "/modules/$m.ko" 2>/dev/kmsg
done < /modules.order
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
if ! mount -t ext4 /dev/vda /newroot; then
    echo "lab-initramfs: cannot mount /dev/vda; dropping to a shell" > /dev/kmsg
    exec sh
fi
cp /lab-init.sh /newroot/sbin/lab-init
cp /lab-shell.py /newroot/sbin/lab-shell
chmod 0755 /newroot/sbin/lab-init /newroot/sbin/lab-shell
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /sbin/lab-init

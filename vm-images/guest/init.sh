#!/bin/bash
# PID 1 of every lab guest (copied into the snapshot root by the initramfs as /sbin/lab-init).
#
# 1. mounts proc/sys/dev/tmpfs/debugfs/tracefs/bpffs, the per-kernel disk (LABEL=labkernel:
#    modules, headers, vmlinux) and the per-VM disk (LABEL=labproject: boot files, project);
# 2. kdump capture kernel (/proc/vmcore exists): loads NO pmem module, runs the script named
#    by `lab.capture=/path` on the kernel command line (stdout/stderr to ttyS1), powers off;
# 3. otherwise loads the pmem modules, then
#    batch mode  : runs the job in fw_cfg opt/lab/job, prints @@JOB-RC-<rc>@@ on ttyS1, powers off;
#    interactive : serves commands on ttyS1 (protocol below) after printing @@READY@@.
#
# ttyS1 protocol (host: vm-images/lab/channel.py; guest: shell-server.py). Host -> guest,
# one line per command:
#     <n> <base64 of a bash script>
# Guest -> host, one frame per finished command (frames never interleave; commands run
# concurrently so the host can start one and collect it later):
#     @@OUT-<n>@@ / base64 stdout lines / @@ERR-<n>@@ / base64 stderr lines / @@DONE-<n>-<rc>@@
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
LAB=/run/lab
log() { echo "lab-init: $*" > /dev/kmsg; }

mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mkdir -p "$LAB"
hostname lab

# The kernel disk: bind its trees where bcc (/lib/modules/<kver>/{build,source} ->
# /usr/src/...), kmod and drgn (/usr/lib/debug/boot/vmlinux-<kver>) look for them.
kdev=$(blkid -L labkernel)
if [ -n "$kdev" ] && mount -o ro "$kdev" /lab/kernel; then
    mkdir -p /usr/lib/modules
    mount --bind /lab/kernel/lib/modules /usr/lib/modules
    mount --bind /lab/kernel/usr/src /usr/src
    mount --bind /lab/kernel/usr/lib/debug /usr/lib/debug
else
    log "no kernel disk (LABEL=labkernel): modules, headers and vmlinux are missing"
fi
pdev=$(blkid -L labproject)
# The per-VM disk: boot/{vmlinuz,initrd.img} of this kernel (for kexec -p) and, when the host
# asked for it, the project's subsecinspect/ package.
if [ -n "$pdev" ] && mount -o ro "$pdev" /lab/project; then
    ln -sfn /lab/project/boot /lab/boot
    [ -d /lab/project/subsecinspect ] && export PYTHONPATH=/lab/project
fi

poweroff_now() {
    sync
    echo o > /proc/sysrq-trigger
    sleep 10
}

if [ -e /proc/vmcore ]; then
    # kdump capture kernel: the pmem modules would touch the crashed kernel's devices.
    capture=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^lab\.capture=//p' | tail -1)
    log "capture kernel; lab.capture=${capture:-<none>}"
    if [ -n "$capture" ]; then
        bash "$capture" > /dev/ttyS1 2>&1
        echo "@@CAPTURE-RC-$?@@" > /dev/ttyS1
    fi
    poweroff_now
fi

for m in libnvdimm nfit nd_e820 nd_btt nd_pmem dax_pmem device_dax kmem qemu_fw_cfg; do
    modprobe "$m" 2>/dev/null || log "module $m not loaded (absent on $(uname -r)?)"
done

job=/sys/firmware/qemu_fw_cfg/by_name/opt/lab/job/raw
if [ -r "$job" ]; then
    stty -F /dev/ttyS1 raw -echo 2>/dev/null
    cp "$job" "$LAB/job.sh"
    (cd /root && bash "$LAB/job.sh") < /dev/null > /dev/ttyS1 2>&1
    echo "@@JOB-RC-$?@@" > /dev/ttyS1
    poweroff_now
fi

# Interactive mode: the command server (vm-images/guest/shell-server.py, dropped into the root
# by the initramfs as /sbin/lab-shell) speaks the protocol above on ttyS1.
log "ready on ttyS1"
/usr/bin/python3 /sbin/lab-shell /dev/ttyS1
log "command server exited (rc $?)"
poweroff_now

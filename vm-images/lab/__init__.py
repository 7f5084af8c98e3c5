"""The lab: real Debian cloud kernels with persistent memory in QEMU/TCG.

Stdlib only (no drgn): ``matrix`` holds the kernel matrix (vm-images/kernels.toml),
``images`` builds the cache (kernels, initramfs, shared root image) and ``vm`` boots
and drives guests (:class:`lab.vm.LabVM`).
"""

__all__ = ()

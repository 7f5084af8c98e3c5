"""Debug info without a debug package: BTF types and kallsyms symbols for drgn.

:mod:`~subsecinspect.debuginfo.btf` reads the kernel's BTF blob,
:mod:`~subsecinspect.debuginfo.btf_types` turns it into drgn types through
``Program.register_type_finder``, :mod:`~subsecinspect.debuginfo.symbols` finds
the addresses of the globals the readers use (kallsyms or a System.map) and
:mod:`~subsecinspect.debuginfo.gate` checks all of it against VMCOREINFO.
"""

"""bcc front ends: one module per BPF program in ``bpf/``.

:mod:`.events` decodes the event struct of ``bpf/subsec_trace.h``;
:mod:`.windows` is the pure-Python model of the unsafe PFN windows the BPF side
keeps; :mod:`.kallsyms` decides which probe points the running kernel has;
:mod:`.subsec_trace` loads, attaches and polls the program (needs bcc and root).
"""

__all__: tuple[str, ...] = ()

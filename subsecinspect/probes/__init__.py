"""bcc front ends: one module per BPF program in ``bpf/``.

:mod:`.events` decodes the event struct of ``bpf/subsec_trace.h``;
:mod:`.windows` is the pure-Python model of the unsafe PFN windows the BPF side
keeps; :mod:`.kallsyms` decides which probe points the running kernel has;
:mod:`.subsec_trace` loads, attaches and polls the program (needs bcc and root);
:mod:`.bcc_env` detects what the system offers bcc (headers, kprobes, fentry/fexit);
:mod:`.ksyms` symbolises kernel stacks from /proc/kallsyms (modules loaded later too).
"""

__all__: tuple[str, ...] = ()

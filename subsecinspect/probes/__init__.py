"""bcc front ends of the BPF programs in ``bpf/`` (today one: the tracer, ``subsec_trace``).

Pure parts, tested without a kernel: :mod:`.events` mirrors and decodes the event struct
of ``bpf/subsec_trace.h``; :mod:`.windows` models the unsafe PFN windows the BPF side
keeps (``bpf/subsec_common.h``); :mod:`.probe_points` decides which probe points the
running kernel has; :mod:`.symbolize` names the frames of kernel stacks (modules loaded
later too); :mod:`.procfs` reads the kernel's files and parses /proc/kallsyms for both;
:mod:`.timeline` renders events and the summary.

Parts that need bcc and root: :mod:`.bcc_env` detects what the system offers bcc
(headers, kprobes, fentry/fexit); :mod:`.loading` finds and compiles the C;
:mod:`.attaching` attaches the planned probes; :mod:`.subsec_trace` puts them together,
seeds the maps and polls the perf buffer.
"""

__all__: tuple[str, ...] = ()

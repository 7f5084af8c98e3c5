"""Kernel readers: all drgn access of subsecinspect, one kernel concept per module.

:func:`subsecinspect.kernel.read.read_snapshot` reads a whole target into a snapshot;
the other modules are named after what they read (``sections``, ``pagemap``, ``pages``,
``nodes``, ``memory_blocks``, ``memmap``, ``features``).
"""

"""Audit: what the kernel's PFN predicates get wrong on one machine, and what the 2019
linux-mm proposals would have fixed (issue 16).

:mod:`.models` holds one small pure function per model (the running kernel, and four
alternatives); :mod:`.tally` evaluates them over the classifier's ranges and section runs
and judges every answer against the classification. Nothing here imports drgn.
"""

__all__ = ()

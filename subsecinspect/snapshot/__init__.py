"""The snapshot: plain data read from a kernel, with its codec, checks and lookups.

``model`` (the dataclasses the readers fill), ``codec`` (saved snapshots as JSON),
``checks`` (value checks of a decoded snapshot), ``index`` (lookups by PFN and section)
and ``pageinit`` (what a struct page's words say about its initialisation: shared by
the readers, which search the frontier, and the classifier). No drgn here.
"""

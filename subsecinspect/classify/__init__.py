"""The classifier: a pure function of a snapshot, never drgn.

``decide`` (Snapshot -> sorted maximal class ranges), ``runs`` (runs of alike
sections), ``lifecycle`` (a pgmap range's registration and teardown state), ``classes``
(the PageClass enum and its evidence), ``explain`` (one PFN's chain of evidence) and
``predicates`` (what the kernel's own predicates answer).
"""

"""Renderers: rich tables (:mod:`.tables`), the versioned JSON documents
(:mod:`.jsondoc`) and the per-section picture (:mod:`.picture`).

Renderers take snapshots, classifications and explanations and never touch a
kernel; importing them does not import drgn.
"""

__all__ = ("jsondoc", "picture", "tables")

"""subsecinspect: which struct pages are safe to read."""

__version__ = "0.1.0"

"""The command line: ``main`` (entry point and the typer-free ``classify --json`` path),
``common`` (helpers both paths run), ``app`` (the typer app) and ``trace``.
"""

"""``python -m subsecinspect``: :func:`subsecinspect.cli.main` (fast path, else the typer app)."""

from subsecinspect.cli.main import main

main()

"""``python -m sage_cli``: the same as the ``sage`` console script."""

from sage_cli.cli import app

app()

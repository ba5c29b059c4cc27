"""`python -m licet` runs the CLI."""

from licet.cli import app

app()

"""`python -m estafeta` runs the command line."""

from estafeta.cli import app

app()

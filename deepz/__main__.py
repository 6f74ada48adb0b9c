"""`python -m deepz` runs the command line."""

from deepz.cli import app

app(prog_name="deepz")

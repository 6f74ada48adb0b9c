"""`python -m deepz` runs the command line."""

from deepz.cli import app

if __name__ == "__main__":  # not again in a spawned process (the live compute process imports this as its main)
    app(prog_name="deepz")

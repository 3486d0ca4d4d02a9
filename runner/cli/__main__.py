"""`python -m runner.cli` runs the command line."""

from runner.cli import main

main(prog_name="imagerun")

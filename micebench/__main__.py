"""`python -m micebench` runs the command line."""

from micebench.cli import main

main()

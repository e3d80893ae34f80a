"""`python -m fastraft` runs the `fastraft` command."""

from fastraft.cli import main

main()

"""`python -m astra_tune` is the `astra` command."""

from astra_tune.cli.app import main

main()

"""The `astra` command line: thin Typer commands over the stage functions."""

"""Subcommands of the vividhead CLI, one module each."""

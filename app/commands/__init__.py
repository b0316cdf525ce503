"""CLI subcommands that are more than a few lines: each module adds its parser and runs it."""

"""Processes and their configuration: the CLI, `gateway serve` workers and supervisor, the config file."""

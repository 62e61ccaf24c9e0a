"""Composition root: configuration, the CLI, and the wiring of the components."""

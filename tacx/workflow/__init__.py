"""Workflows: the model and its validation, the YAML loader that keeps positions for errors, and templates."""

"""Workflows shipped with tacx (mapped into the package as tacx.workflows)."""

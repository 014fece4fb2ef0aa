"""Beam pipelines and the pure image functions they are built from."""

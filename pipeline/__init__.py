"""Beam wiring and the command line: composite PTransforms over `curation` functions."""

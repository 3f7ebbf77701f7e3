"""Benchmarks: quantum head step and the Table III harness."""

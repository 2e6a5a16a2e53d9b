"""Benchmarks that print measured figures: `python -m experiments.benchmarks.<name>`."""

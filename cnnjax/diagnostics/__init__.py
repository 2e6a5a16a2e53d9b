"""Babysitting a training run: pre-flight checks, in-step monitors, verdicts, report."""

"""Experiment configs: `get_config(arg)` files the CLI loads by path; derived ones import their base."""

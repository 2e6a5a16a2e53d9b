"""A config file for `--config`: a run's own `config.json` (`run_config.py:WORKDIR`).

`--mode=eval|predict|export` point `--config` here, so `--config.data.KEY=VALUE`
overrides apply on top of the run's config. A workdir without `config.json`
gives the schema's defaults; the mode then refuses the workdir with a message.
"""

from __future__ import annotations

import json
import os

import ml_collections

from cnnjax.config import base_config
from cnnjax.training import files


def _merge(config: ml_collections.ConfigDict, values: dict) -> None:
    for key, value in values.items():
        if key not in config:
            config[key] = value  # a key this version no longer has: kept as read
        elif isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, dict):
            _merge(config[key], value)
        elif isinstance(config[key], tuple) and isinstance(value, list):
            config[key] = tuple(value)  # JSON has no tuples
        else:
            with config.ignore_type():
                config[key] = value


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The schema's defaults updated with `workdir/config.json` (if present)."""
    config = base_config()
    path = os.path.join(workdir, "config.json")
    if files.exists(path):
        _merge(config, json.loads(files.read_text(path)))
    return config


def get_config(workdir: str | None = None) -> ml_collections.ConfigDict:
    return read_run_config(workdir or "")

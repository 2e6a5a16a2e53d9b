"""The config schema: every key with its default, and `validate_config`.

Experiment files under `experiments/configs/` start from `base_config()` and
change what they need; every key exists here so that `--config.a.b=VALUE` can
override it. Each package defines its keys and checks them beside their
definition; this module, above them all, puts the schema together:

- the training keys: `cnnjax.training.config` (`training_defaults`,
  `training_problems`);
- `monitor` and `babysit`: `cnnjax.diagnostics.settings` (`monitor_defaults`,
  `babysit_defaults`, `settings_problems`);
- `sweep`: `cnnjax.tuning.sweep_config` (`sweep_defaults`, `sweep_problems`).

The command line calls `validate_config` before anything is compiled or written,
whatever the mode. The library's entry points check the part they read
(`train_and_evaluate`: the training keys; `run_sweep`: the sweep block too;
`babysit`: the monitor and babysit blocks too), as the packages below this one
cannot import it. Checks that need the data or the workdir run where those are
known: the batch size against the training split
(`cnnjax.training.config.validate_against_data`), a resumed workdir's config,
and the sweep's study storage (`run_sweep`).
"""

from __future__ import annotations

import ml_collections

from cnnjax.diagnostics.settings import babysit_defaults, monitor_defaults, settings_problems
from cnnjax.training.config import raise_problems, training_defaults, training_problems
from cnnjax.tuning.sweep_config import sweep_defaults, sweep_problems


def base_config() -> ml_collections.ConfigDict:
    """Every config key with its default."""
    config = training_defaults()
    # Babysitting (`--mode=babysit`, or `--mode=train` with monitor.every > 0).
    config.monitor = monitor_defaults()
    config.babysit = babysit_defaults()
    # Hyperparameter search (`--mode=sweep`).
    config.sweep = sweep_defaults()
    return config


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Rejects impossible configs; raises `ConfigError` listing every problem of every block."""
    raise_problems(training_problems(config) + settings_problems(config) + sweep_problems(config))

"""The learning-rate range check: classification rules and one population run."""

from __future__ import annotations

import numpy as np

from cnnjax.diagnostics import checks, lr_range, settings
from cnnjax.training.train import build_model


def test_classification_rules():
    steps = 20
    finite = np.ones(steps, bool)
    flat = np.full(steps, 2.3)
    falling = np.linspace(2.3, 1.0, steps)
    spike = np.concatenate([[2.3, 40.0], np.full(steps - 2, 2.3)])
    assert lr_range.classify(flat, finite, 0.1, 1.5) == lr_range.TOO_SMALL
    assert lr_range.classify(falling, finite, 0.1, 1.5) == lr_range.GOOD
    assert lr_range.classify(spike, finite, 0.1, 1.5) == lr_range.TOO_LARGE
    assert lr_range.classify(falling, np.r_[finite[:-1], False], 0.1, 1.5) == lr_range.TOO_LARGE
    rates = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    found = lr_range.recommend(rates, [lr_range.TOO_SMALL, lr_range.GOOD, lr_range.GOOD, lr_range.TOO_LARGE,
                                       lr_range.TOO_LARGE], [2.3, 1.2, 0.9, np.inf, np.inf])
    assert found == {"low": 1e-3, "high": 1e-2, "best": 1e-2}
    assert lr_range.learning_rates(1e-5, 10, 7) == [1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0]


def test_lr_10_is_too_large_and_a_moderate_rate_is_good(default_config, mnist5k):
    config = default_config
    config.babysit.lr_min, config.babysit.lr_max, config.babysit.lr_points = 1e-2, 10.0, 2
    config.babysit.lr_steps = 20
    _, check_settings = settings.validate(config)
    ctx = checks.CheckContext(config, mnist5k, build_model(config, 10), check_settings)
    result = lr_range.check_lr_range(ctx)
    assert result.details["learning_rates"] == [1e-2, 10.0]
    assert result.details["classes"] == [lr_range.GOOD, lr_range.TOO_LARGE], result.measured
    assert result.status == checks.PASS and result.details["recommended"]["best"] == 1e-2

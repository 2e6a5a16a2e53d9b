"""profile_steps="A,B": a jax.profiler trace of those steps lands in the workdir."""

from __future__ import annotations

import glob
import os

import jax
import jax.numpy as jnp
import pytest

from cnnjax.training.config import ConfigError, base_config, validate_config
from cnnjax.training.profiling import StepProfiler, parse_profile_steps


def test_the_trace_starts_before_step_a_and_stops_after_step_b(tmp_path):
    profiler = StepProfiler("2,3", str(tmp_path))
    step_fn = jax.jit(lambda x: jnp.tanh(x) @ x)
    x = jnp.ones((64, 64))
    started = stopped = None
    for done in range(5):
        profiler.at(done, x)
        if profiler.active and started is None:
            started = done + 1
        if started and not profiler.active and stopped is None:
            stopped = done
        x = step_fn(x)
    profiler.close(x)
    assert (started, stopped) == (2, 3)
    traces = glob.glob(os.path.join(tmp_path, "plugins", "profile", "*", "*.xplane.pb"))
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 0


@pytest.mark.parametrize("spec", ["3", "0,2", "5,4", "a,b", "1,2,3"])
def test_bad_specs_are_refused_by_the_config_check(spec):
    config = base_config()
    config.profile_steps = spec
    with pytest.raises(ConfigError, match=r"profile_steps=.* must be 'A,B' with 1 <= A <= B"):
        validate_config(config)


def test_specs_parse():
    assert parse_profile_steps("") is None
    assert parse_profile_steps(" 4, 6") == (4, 6)

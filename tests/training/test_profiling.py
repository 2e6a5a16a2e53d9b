"""profile_steps="A,B": a jax.profiler trace of those steps lands in the workdir."""

from __future__ import annotations

import glob
import os

import jax
import jax.numpy as jnp
import pytest

from cnnjax.config import base_config, validate_config
from cnnjax.training.config import ConfigError
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


@pytest.mark.slow  # a minute on the loaded 2-core CPU (building mnist5k, a sweep, the trace)
def test_a_sweep_traces_its_population_into_its_workdir(load_config, tmp_path):
    from cnnjax.tuning.sweep import run_sweep

    config = load_config("sweep_lr_wd", "smoke")
    config.data.data_dir = str(tmp_path / "tfds")
    config.progress_bar = False
    config.profile_steps = "1,2"
    config.sweep.population_size = 2
    workdir = tmp_path / "sweep"
    run_sweep(config, str(workdir))
    traces = glob.glob(os.path.join(workdir, "plugins", "profile", "*", "*.xplane.pb"))
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
    assert (workdir / "results.csv").exists()


def test_a_sweep_is_traced_once_though_later_populations_count_from_step_0_again(tmp_path):
    profiler = StepProfiler("1,1", str(tmp_path))
    x = jnp.ones(4)
    starts = 0
    for _ in range(2):  # two populations, one after the other
        for done in range(3):
            was_active = profiler.active
            profiler.at(done, x)
            starts += profiler.active and not was_active
            x = x + 1
    profiler.close(x)
    assert starts == 1
    assert len(glob.glob(os.path.join(tmp_path, "plugins", "profile", "*", "*.xplane.pb"))) == 1

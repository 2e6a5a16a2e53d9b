"""The loop's calls of several steps: where they stop, and that they train exactly as single calls."""

import json

import jax
import numpy as np
import pytest

from cnnjax.training import feeds
from cnnjax.training.loop import Schedule, run_loop
from cnnjax.training.profiling import StepProfiler
from cnnjax.training.train import train_and_evaluate


class _Recorder:
    """A LoopTask whose state is the step count; records every call and event."""

    def __init__(self, most: int, monitored_every: int | None = None):
        self.most, self.every = most, monitored_every
        self.calls, self.events = [], []

    def max_steps(self, step):
        if self.every and step % self.every == 0:
            return 1
        return min(self.most, -step % self.every) if self.every else self.most

    def step(self, state, step, count):
        assert state == step
        self.calls.append((step, count))
        return state + count, list(range(step + 1, step + count + 1))

    def flush(self, state, step, pending):
        steps = [s for chunk in pending for s in chunk]
        assert steps == list(range(step - len(steps) + 1, step + 1))  # every step, in order, none twice
        self.events.append(("flush", step))

    def evaluate(self, state, step):
        self.events.append(("eval", step))

    def checkpoint(self, state, step):
        self.events.append(("checkpoint", step))

    def early_stop(self):
        return None


def _run(most, every=None, stop_at=None):
    task = _Recorder(most, every)
    schedule = Schedule(steps_per_epoch=10, total_steps=40, eval_every_steps=15, log_every_steps=6,
                        checkpoint_every_steps=25)
    result = run_loop(task, 0, 0, 40, schedule, eval_at_end=True, stop_at=stop_at)
    return task, result


def test_calls_of_several_steps_keep_every_event_where_single_calls_put_it():
    single, one = _run(most=1)
    several, many = _run(most=16)
    assert several.events == single.events and (many.state, many.step) == (one.state, one.step) == (40, 40)
    assert several.calls[0] == (0, 1)  # the first (compiling) call runs one step
    events = {step for _, step in single.events}
    for start, count in several.calls:  # no call runs past an event
        assert not any(start < e < start + count for e in events)
    assert len(several.calls) < len(single.calls) / 2


def test_a_stop_at_step_and_a_task_limit_end_calls_there():
    task, result = _run(most=16, every=4, stop_at=13)
    assert result.step == 13 and result.stopped == "stop_after_steps=13"
    assert [c for c in task.calls if c[0] % 4 == 0 and c[0] > 0] == [(4, 1), (8, 1), (12, 1)]
    assert all(start % 4 == 0 or start + count <= -(-start // 4) * 4 for start, count in task.calls)
    assert ("checkpoint", 13) in task.events


def test_the_profile_window_edges_bound_a_call(tmp_path):
    profiler = StepProfiler("5,9", str(tmp_path))
    assert profiler.steps_before_change(0) == 4  # the trace starts before step 5 (4 done)
    assert profiler.steps_before_change(4) is None  # `at(4)` starts it
    profiler.active = True
    assert profiler.steps_before_change(4) == 5 and profiler.steps_before_change(9) is None
    assert StepProfiler("", str(tmp_path)).steps_before_change(0) is None


@pytest.fixture(scope="module")
def lenet(load_config, tmp_path_factory):
    from cnnjax.data import load_dataset

    config = load_config("default", "smoke")
    config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
    config.num_epochs = 2
    config.checkpoint_every_steps = 5
    config.log_every_steps = 7
    config.progress_bar = False
    return config, load_dataset(config.data)


def _feed_and_state(config, dataset):
    from cnnjax.training.optim import optimizer_from_config
    from cnnjax.training.state import create_train_state
    from cnnjax.training.train import build_model

    model = build_model(config, dataset.num_classes)
    tx = optimizer_from_config(config, 8, 16)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), dataset.image_shape)
    return feeds.InMemoryFeed(config, dataset, None, jax.random.PRNGKey(1)), state


def test_a_call_of_five_steps_equals_five_single_calls_bit_for_bit(lenet):
    config, dataset = lenet
    feed, state = _feed_and_state(config, dataset)
    copy = lambda tree: jax.tree.map(lambda x: x.copy(), tree)  # noqa: E731
    steps = feed.make_steps(copy(state), feed.step_args(0))
    assert steps is not None  # LeNet-5's convolutions are banded on CPU: no XLA convolution in the step
    single, metrics = feed.make_step(), []
    one = copy(state)
    for s in range(5):
        one, m = single(one, *feed.step_args(s))
        metrics.append(m)
    many, rows = steps(copy(state), *feed.step_args(0), 5)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(rows["loss"][:5]), [float(m["loss"]) for m in metrics])
    assert rows["loss"].shape == (feeds.STEPS_PER_CALL,) and not np.asarray(rows["loss"][5:]).any()


def test_a_step_with_xla_convolutions_keeps_single_calls(lenet):
    config, dataset = lenet
    config = config.copy_and_resolve_references()
    config.model.conv_impl = "xla"
    feed, state = _feed_and_state(config, dataset)
    assert feed.make_steps(state, feed.step_args(0)) is None


def test_a_run_in_calls_of_several_steps_writes_what_single_calls_write(lenet, tmp_path, monkeypatch):
    config, dataset = lenet

    def records(workdir):
        lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if not k.endswith("_per_sec")} for r in lines]

    counts, make_steps = [], feeds.InMemoryFeed.make_steps

    def spied(self, state, args):
        steps = make_steps(self, state, args)
        return lambda *a: (counts.append(a[-1]), steps(*a))[1]

    monkeypatch.setattr(feeds.InMemoryFeed, "make_steps", spied)
    train_and_evaluate(config, str(tmp_path / "several"), dataset=dataset)
    assert counts[:2] == [1, 1] and max(counts) > 1 and sum(counts) == 16  # single calls until the first flush
    monkeypatch.setattr(feeds.InMemoryFeed, "make_steps", lambda self, state, args: None)
    train_and_evaluate(config, str(tmp_path / "single"), dataset=dataset)
    several, single = records(tmp_path / "several"), records(tmp_path / "single")
    assert several == single and [r["step"] for r in several if "train/loss" in r] == [5, 7, 8, 10, 14, 15, 16]

"""Where a run's batches come from: device-resident data or a stream.

`InMemoryFeed` keeps the whole (small) data set on the devices and gathers and
augments each batch inside the step (`make_step_fn`, the step populations vmap).
`StreamingFeed` reads data too large for memory with tf.data
(`cnnjax.data.streaming`): each process decodes and augments its own share on
the host and the step receives the batch. Both give `train_and_evaluate` the
same interface: sizes, the jitted step, the step's arguments at a global step,
and evaluation of the held-out splits.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax.data import pipeline
from cnnjax.kernels.conv import holds_xla_conv, outside_loops, xla_only
from cnnjax.training import sharding
from cnnjax.training.state import TrainState
from cnnjax.training.steps import eval_step, train_step

# Held-out splits and the metric prefix each is logged under.
EVAL_SPLITS = (("val", "validation"), ("eval", "test"))
# The most steps one call of a repeated step runs (`InMemoryFeed.make_steps`), and about
# how long a call may take: a stop request or the progress bar waits for at most one call.
STEPS_PER_CALL = 16
CALL_SECONDS = 0.25


def eval_split(state: TrainState, images, labels, mask, mean, std, batch_sharding=None) -> dict[str, jax.Array]:
    """Summed loss / correct / count over a split padded into [batches, batch, ...].

    `batch_sharding` (data parallel) splits each batch over the devices.
    """

    def body(total, batch):
        x, y, m = sharding.constrain_batch(batch, batch_sharding)
        out = eval_step(state, {"image": pipeline.normalize(x, mean, std), "label": y, "mask": m})
        return jax.tree_util.tree_map(jnp.add, total, out), None

    zero = {"loss_sum": jnp.zeros(()), "correct": jnp.zeros(()), "count": jnp.zeros(())}
    total, _ = jax.lax.scan(body, zero, (images, labels, mask))
    return total


def for_devices(fn, batch_sharding):
    """`fn` as a program split over `batch_sharding`'s devices: XLA's convolutions only across several.

    (`cnnjax.kernels.conv.xla_only`: XLA's partitioner would gather a custom
    call's operands onto every device.)
    """
    if batch_sharding is not None and len(batch_sharding.device_set) > 1:
        return xla_only(fn)
    return fn


def make_eval_fn(mean, std, batch_sharding=None):
    """Jitted evaluation of a whole padded split in one call."""
    return jax.jit(for_devices(
        lambda state, images, labels, mask: eval_split(state, images, labels, mask, mean, std, batch_sharding),
        batch_sharding))


def member_keys(seed: int, data_seed: int | None = None) -> tuple[jax.Array, jax.Array]:
    """(init key, data-order key) of a run: both from `seed` unless `data_seed` is set."""
    init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
    if data_seed is not None:
        data_key = jax.random.fold_in(jax.random.PRNGKey(data_seed), 1)
    return init_key, data_key


def cpu_step_shards(batch_sharding) -> int:
    """`train_step`'s `shards` for a single run's step: 2 on a CPU host with two or more cores, else 1.

    Only for one device (`batch_sharding` None): a data-parallel step already
    splits its batch. Measured on a 2-core host, LeNet-5 on the CIFAR-10 JPEGs
    at batch 128: 8.3-9.4 ms a step in the run's loop against 9.7-10.3 ms with
    one piece; 4 pieces were slower than 2.
    """
    if batch_sharding is not None or jax.default_backend() != "cpu" or (os.cpu_count() or 1) < 2:
        return 1
    return 2


def make_step_fn(config: ml_collections.ConfigDict, mean, std, monitor=None, batch_sharding=None, shards=1):
    """The training step on device-resident data, for one run or one member.

    `step(state, data_key, images, labels, permutation, index)` gathers batch
    `index` of the epoch order `permutation`, augments it with a key drawn from
    (data_key, step), and applies `train_step` (with `monitor`, see
    `cnnjax.training.steps.StepMonitor`). Populations vmap this function.
    `batch_sharding` (data parallel, see `cnnjax.training.sharding`) splits the
    batch over the mesh's `data` axis; `shards` is `train_step`'s.
    """
    augment = config.data.augment

    def step(state, data_key, images, labels, permutation, index, active=None):
        key = jax.random.fold_in(data_key, state.step)
        batch = pipeline.train_batch(
            images, labels, permutation, index, key,
            batch_size=config.batch_size, mean=mean, std=std,
            crop_padding=augment.crop_padding, flip=augment.flip,
        )
        batch = sharding.constrain_batch(batch, batch_sharding)
        if active is not None:
            batch["active"] = active
        return train_step(state, batch, monitor=monitor, shards=shards)

    return step


def repeated(step, length: int):
    """`step(state, *args, index)` run up to `length` times in one program.

    `steps(state, *args, index, count)` runs `count` steps (1 <= count <=
    `length`, a traced value: one program for every count), step i on batch
    `index + i`, and returns the state and the steps' metrics stacked in
    `length` rows, the first `count` filled. The state equals that of `count`
    separate calls bit for bit.
    """

    def steps(state, *args):
        *args, index, count = args
        metrics = jax.eval_shape(step, state, *args, index)[1]
        rows = jax.tree.map(lambda m: jnp.zeros((length, *m.shape), m.dtype), metrics)

        def body(i, carry):
            state, rows = carry
            state, metrics = step(state, *args, index + i)
            return state, jax.tree.map(lambda row, value: row.at[i].set(value), rows, metrics)

        return jax.lax.fori_loop(0, count, body, (state, rows))

    return steps


def make_batch_step_fn(mean, std, monitor=None, batch_sharding=None, shards=1):
    """The training step on a batch that arrives from the host (streaming input).

    `step(state, batch)` normalises the uint8 images on the device and applies
    `train_step`; the augmentation was done on the host.
    """

    def step(state, batch):
        batch = sharding.constrain_batch(batch, batch_sharding)
        images = pipeline.normalize(batch["image"], mean, std)
        return train_step(state, {"image": images, "label": batch["label"]}, monitor=monitor, shards=shards)

    return step


def _summed_metrics(sums) -> dict[str, float]:
    sums = jax.device_get(sums)
    count = max(float(sums["count"]), 1.0)
    return {"loss": float(sums["loss_sum"]) / count, "accuracy": float(sums["correct"]) / count}


class InMemoryFeed:
    """A loaded `cnnjax.data.Dataset`, replicated on every device of the mesh."""

    def __init__(self, config: ml_collections.ConfigDict, dataset, mesh, data_key: jax.Array):
        self.config, self.mesh, self.data_key = config, mesh, data_key
        self.name = dataset.name
        self.skipped_images = list(getattr(dataset, "skipped_images", ()))  # data.bad_images=skip: files left out
        self.num_classes = dataset.num_classes
        self.image_shape = tuple(dataset.image_shape)
        self.num_train_examples = dataset.train.num_examples
        # Host constants (not device arrays), so the steps compile for any mesh.
        self.mean = np.asarray(dataset.mean, np.float32)
        self.std = np.asarray(dataset.std, np.float32)
        self.batch_sharding = None if mesh is None else sharding.batch_sharding(mesh)
        self.images = sharding.replicate(dataset.train.images, mesh)
        self.labels = sharding.replicate(dataset.train.labels, mesh)
        # Evaluation batches split evenly over the mesh too.
        eval_batch = config.eval_batch_size if mesh is None else -(-config.eval_batch_size // mesh.size) * mesh.size
        self.eval_splits = {
            name: sharding.replicate(pipeline.pad_for_eval(split.images, split.labels, eval_batch), mesh)
            for name, split in (("val", dataset.validation), ("eval", dataset.test))
            if split is not None and split.num_examples > 0
        }
        self._eval_fn = make_eval_fn(self.mean, self.std, self.batch_sharding)
        self._permutation = jax.jit(
            pipeline.epoch_permutation, static_argnums=2,
            out_shardings=None if mesh is None else sharding.replicated(mesh),
        )
        self._epoch, self._order = -1, None

    def make_step(self, monitor=None):
        step = make_step_fn(self.config, self.mean, self.std, monitor, batch_sharding=self.batch_sharding,
                            shards=cpu_step_shards(self.batch_sharding))
        # A single run's step: never inside a loop.
        return jax.jit(outside_loops(for_devices(step, self.batch_sharding)), donate_argnums=0)

    def make_steps(self, state: TrainState, args: tuple):
        """The step `repeated` in calls of up to `STEPS_PER_CALL` steps, or None where single calls stay.

        `steps(state, *step_args(s), count)` runs steps s .. s+count-1, all in
        one epoch. For a CPU host with one device, where the step holds no XLA
        convolution (`holds_xla_conv`: inside a loop its CPU gradients run 30x
        slower, ResNet-20 without oneDNN 16 s against 0.53 s a step); `state` and
        `args` (a step's) trace it once to tell. Measured on a 2-core host,
        LeNet-5 on the CIFAR-10 JPEGs at batch 128: 7.9-8.3 ms a step in calls
        of 16 against 9.2-9.7 ms in single calls; ResNet-20 with oneDNN the same
        either way.
        """
        if self.batch_sharding is not None or jax.default_backend() != "cpu":
            return None
        step = make_step_fn(self.config, self.mean, self.std, shards=cpu_step_shards(None))
        steps = jax.jit(outside_loops(repeated(step, STEPS_PER_CALL)), donate_argnums=0)
        return None if holds_xla_conv(steps.trace(state, *args, 1).jaxpr) else steps

    def step_args(self, step: int) -> tuple:
        epoch, index = divmod(step, self.num_train_examples // self.config.batch_size)
        if epoch != self._epoch:
            self._order, self._epoch = self._permutation(self.data_key, epoch, self.num_train_examples), epoch
        return self.data_key, self.images, self.labels, self._order, index

    def evaluate(self, state: TrainState, name: str) -> dict[str, float]:
        return _summed_metrics(self._eval_fn(state, *self.eval_splits[name]))

    def close(self) -> None:
        pass


class StreamingFeed:
    """Batches streamed by tf.data (`cnnjax.data.streaming`), prefetched to the devices.

    Each process reads its own share of the files; with a mesh, the processes'
    rows form one global batch split over `data`. A resumed run starts a new
    shuffle (the stream is keyed by the seed and the resume step), so it is not
    bitwise the uninterrupted run, unlike `InMemoryFeed`.
    """

    def __init__(self, config: ml_collections.ConfigDict, mesh, start_step: int):
        from cnnjax.data import streaming

        self._streaming = streaming
        self.config, self.mesh = config, mesh
        # data.bad_images=skip: the files left out so far, by the statistics sample and the streams
        self.skipped_images: list[str] = []
        info = streaming.streaming_info(config.data, skipped=self.skipped_images)
        self.name = info.name
        self.num_classes = info.num_classes
        self.class_names = tuple(info.class_names)
        self.image_shape = tuple(info.image_shape)
        self.num_train_examples = info.num_train_examples
        self.mean, self.std = np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32)
        self.batch_sharding = None if mesh is None else sharding.batch_sharding(mesh)
        self.eval_splits = {
            name: split for name, split in EVAL_SPLITS if info.num_eval_examples.get(split, 0) > 0
        }
        self.eval_batch_size = (
            config.eval_batch_size if mesh is None else -(-config.eval_batch_size // mesh.size) * mesh.size
        )
        self._start_step = start_step
        self._batches = None
        self._eval_fn = jax.jit(for_devices(self._eval_batch, self.batch_sharding))

    def _eval_batch(self, state, batch):
        batch = sharding.constrain_batch(batch, self.batch_sharding)
        images = pipeline.normalize(batch["image"], self.mean, self.std)
        return eval_step(state, {"image": images, "label": batch["label"], "mask": batch["mask"]})

    def make_steps(self, state: TrainState, args: tuple):
        """None: a stream's batches come one call at a time."""
        return None

    def make_step(self, monitor=None):
        step = make_batch_step_fn(self.mean, self.std, monitor, batch_sharding=self.batch_sharding,
                                  shards=cpu_step_shards(self.batch_sharding))
        return jax.jit(outside_loops(for_devices(step, self.batch_sharding)), donate_argnums=0)

    def step_args(self, step: int) -> tuple:
        if self._batches is None:
            seed = (self.config.seed + 1_000_003 * self._start_step) % 2**31
            stream = self._streaming.train_stream(self.config.data, global_batch_size=self.config.batch_size,
                                                  seed=seed, skipped=self.skipped_images)
            self._batches = self._streaming.prefetch_to_device(stream, self.config.data.prefetch_batches,
                                                               self.batch_sharding)
        return (next(self._batches),)

    def evaluate(self, state: TrainState, name: str) -> dict[str, float]:
        stream = self._streaming.eval_stream(self.config.data, self.eval_splits[name],
                                             global_batch_size=self.eval_batch_size, skipped=self.skipped_images)
        total = None
        for batch in self._streaming.prefetch_to_device(stream, self.config.data.prefetch_batches,
                                                        self.batch_sharding):
            sums = self._eval_fn(state, batch)
            total = sums if total is None else jax.tree_util.tree_map(jnp.add, total, sums)
        return _summed_metrics(total)

    def close(self) -> None:
        self._batches = None

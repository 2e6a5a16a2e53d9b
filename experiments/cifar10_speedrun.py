"""CIFAR-10 speed run: train the airbench94 recipe and time it to 94% validation accuracy.

    python -m experiments.cifar10_speedrun --workdir=/tmp/speedrun                        # full run (GPU)
    python -m experiments.cifar10_speedrun --workdir=/tmp/speedrun \\
        --config=experiments/configs/cifar10_speedrun.py:cpu_budget                         # fixed CPU budget
    python -m experiments.cifar10_speedrun --workdir=/tmp/speedrun --precision=float32 --runs=5 \\
        --config.num_epochs=11.07                                                           # any config key

The recipe and its variants are in `experiments/configs/cifar10_speedrun.py`.
The images are decoded once (PIL; no TensorFlow anywhere on this path) and put
on the device as uint8 with their labels; every epoch is one compiled program
(`lax.scan` over the steps: shuffling, translation, flips, normalisation,
forward, backward, Nesterov SGD, Lookahead), so the host only launches one
program per epoch and one per evaluation.

Timing. Every program is compiled before the clock starts
(`jax.jit(f).lower(...).compile()`, timed: `compile_s`). The clock then runs
over what the reference times: fitting the whitening layer, the training
epochs and the final test-time-augmented evaluation, each ended with
`block_until_ready`. Per-epoch evaluations (without TTA by default) are
taken outside the clock, and so are decoding the JPEGs with the copy to the
device (`data_load_s`, reported) and parameter init. Time to target:
the clock at the first evaluation at or above `target_accuracy` (an epoch
end, or the final TTA evaluation with its own time included);
`..._with_compile_s` adds `compile_s`. `--runs=N` repeats the run with seeds
seed, seed+1, ... using the same compiled programs.

Writes into `--workdir`: `table.csv` / `table.md` (one row per evaluation:
run, epoch, steps, clock, validation accuracy, train loss and accuracy),
`summary.json` and `val_accuracy_vs_time.png`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from experiments import common

CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "cifar10_speedrun.py"
COLUMNS = ("run", "epoch", "steps", "clock_s", "clock_with_compile_s", "val_accuracy", "tta_level",
           "train_loss", "train_accuracy")


def get_config(variant: str | None = None):
    """The speed-run config (`experiments/configs/cifar10_speedrun.py`) of `variant`."""
    from experiments.configs import cifar10_speedrun

    return cifar10_speedrun.get_config(variant)


# -- data ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SpeedrunData:
    """uint8 NHWC images and int32 labels of both splits, and the train split's channel mean/std in [0, 1]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    num_classes: int


def _data_key(config, path) -> str:
    d = config.data
    return json.dumps({"path": os.path.abspath(str(path)), "validation_fraction": d.validation_fraction,
                       "max_train_examples": d.max_train_examples, "max_eval_examples": d.max_eval_examples},
                      sort_keys=True)


def load_data(config, data_path: str | None = None, cache: str | None = None) -> SpeedrunData:
    """Train/validation splits carved from the CIFAR-10 JPEG archive (`cnnjax.data.load_dataset`, no TFDS).

    The validation split is `data.validation_fraction` of every class of the
    archive's 50,000 training images (fixed seed), the rest is training data;
    `data.max_*_examples` take fixed stratified subsets of each. `cache`
    (an .npz path) stores the decoded arrays on first use and reads them after.
    """
    path = Path(data_path or config.data.path or common.find_cifar_archive())
    key = _data_key(config, path)
    if cache and os.path.exists(cache):
        with np.load(cache) as stored:
            if str(stored["key"]) == key:
                arrays = {name: stored[name] for name in stored.files if name != "key"}
                return SpeedrunData(**{k: v for k, v in arrays.items() if k != "num_classes"},
                                    num_classes=int(arrays["num_classes"]))
            print(f"data cache {cache} was made for other data settings; decoding again")
    if not path.exists():
        raise FileNotFoundError(f"CIFAR-10 JPEG archive not found at {path}; pass --data_path=PATH "
                                "(a .tar.gz or folder laid out as train/<class>/<image>)")
    import ml_collections

    wrapper = ml_collections.ConfigDict()
    wrapper.data = ml_collections.ConfigDict(dict(
        name="image_folder", path=str(path), validation_fraction=float(config.data.validation_fraction),
        test_fraction=0.0, max_train_examples=config.data.max_train_examples,
        max_eval_examples=config.data.max_eval_examples, preprocess="standardize"))
    dataset = common.load(wrapper)
    data = SpeedrunData(
        train_images=dataset.train.images, train_labels=dataset.train.labels.astype(np.int32),
        val_images=dataset.validation.images, val_labels=dataset.validation.labels.astype(np.int32),
        mean=np.asarray(dataset.mean, np.float32).reshape(-1), std=np.asarray(dataset.std, np.float32).reshape(-1),
        num_classes=dataset.num_classes)
    if cache:
        np.savez(cache, key=np.array(key), num_classes=np.array(data.num_classes),
                 **{f.name: getattr(data, f.name) for f in dataclasses.fields(data) if f.name != "num_classes"})
    return data


# -- optimiser -----------------------------------------------------------------
def lr_factor(step, total_steps: int, warmup_fraction: float, start: float, end: float):
    """Piecewise-linear multiplier: `start` -> 1 over the first `warmup_fraction` of steps, then 1 -> `end`."""
    import jax.numpy as jnp

    warmup = max(int(total_steps * warmup_fraction), 1)
    step = jnp.asarray(step, jnp.float32)
    rising = start + (1.0 - start) * step / warmup
    falling = 1.0 + (end - 1.0) * (step - warmup) / max(total_steps - warmup, 1)
    return jnp.where(step < warmup, rising, falling)


def make_optimizer(config, steps_per_epoch: int, total_steps: int):
    """Nesterov SGD per parameter group (`cnnjax.models.airbench.param_labels`), as the reference sets it up.

    The reference's decoupled hyperparameters become PyTorch-style SGD ones on
    the summed loss: step rate lr / (1024 (1 + 1 / (1 - momentum))), times the
    schedule, and an L2 term added to the gradient before momentum with
    coefficient decay / rate, where decay = weight_decay x batch /
    (1024 (1 + 1 / (1 - momentum))), so every group decays alike whatever its
    rate. BN biases step `bias_scaler` times faster; the whitening bias stops
    after `whiten.bias_epochs`; the frozen group (whitening kernel, BN scales)
    never moves.
    """
    import jax.numpy as jnp
    import optax

    from cnnjax.models import airbench

    opt = config.optimizer
    kilostep = 1024 * (1 + 1 / (1 - opt.momentum))
    rate = opt.learning_rate / kilostep
    decay = opt.weight_decay * config.batch_size / kilostep
    whiten_bias_steps = round(config.whiten.bias_epochs * steps_per_epoch)
    shape = functools.partial(lr_factor, total_steps=total_steps, warmup_fraction=config.schedule.warmup_fraction,
                              start=config.schedule.start, end=config.schedule.end)

    def sgd(group_rate: float, stop_step: int | None = None):
        def scale(count):
            value = -group_rate * shape(count)
            return value if stop_step is None else jnp.where(count < stop_step, value, 0.0)

        return optax.chain(optax.add_decayed_weights(decay / group_rate),
                           optax.trace(decay=opt.momentum, nesterov=True),
                           optax.scale_by_schedule(scale))

    transforms = {
        airbench.DEFAULT: sgd(rate),
        airbench.NORM_BIAS: sgd(rate * opt.bias_scaler),
        airbench.WHITEN_BIAS: sgd(rate, whiten_bias_steps),
        airbench.FROZEN: optax.set_to_zero(),
    }
    return optax.multi_transform(transforms, airbench.param_labels)


# -- the compiled programs -----------------------------------------------------
@dataclasses.dataclass
class Programs:
    """The speed run's pure functions (not yet jitted) and the sizes they were built for."""

    init: Callable[..., Any]
    fit_whitening: Callable[..., Any]
    train_epoch: Callable[..., Any]
    evaluate: Callable[..., Any]
    steps_per_epoch: int
    total_steps: int
    num_epochs: int


def build(config, num_train: int, num_classes: int, mean: np.ndarray, std: np.ndarray) -> Programs:
    """Model, optimiser and the functions of one run; sizes are static."""
    import jax
    import jax.numpy as jnp
    import optax

    from cnnjax.models import airbench, get_model
    from cnnjax.training.state import make_apply_fn
    from cnnjax.training.steps import cross_entropy

    batch = int(config.batch_size)
    if num_train < batch:
        raise ValueError(f"batch_size={batch} is larger than the training split ({num_train} images)")
    steps_per_epoch = num_train // batch  # the last partial batch is dropped, as in the reference
    total_steps = math.ceil(steps_per_epoch * config.num_epochs)
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    model = get_model(config.model.name, num_classes, widths=tuple(config.model.widths),
                      bn_momentum=config.model.bn_momentum, bn_epsilon=config.model.bn_epsilon,
                      logit_scale=config.model.logit_scale, conv_impl=config.model.conv_impl,
                      whiten_kernel_size=config.whiten.kernel_size)
    apply_fn = make_apply_fn(model, config.precision)
    tx = make_optimizer(config, steps_per_epoch, total_steps)
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    look = config.lookahead
    translate = int(config.augment.translate)
    flip_mode = config.augment.flip
    if flip_mode not in ("alternate", "random", "none"):
        raise ValueError(f"augment.flip={flip_mode!r}; valid choices: alternate, random, none")

    def normalize(images):
        return (images.astype(jnp.float32) / 255.0 - mean) / std

    def init(key, image_shape):
        params_key, flip_key = jax.random.split(key)
        variables = model.init(params_key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
        params, stats = variables["params"], variables["batch_stats"]
        return {
            "params": params, "batch_stats": stats, "opt_state": tx.init(params),
            "slow_params": params, "slow_stats": stats, "step": jnp.zeros((), jnp.int32),
            # Alternating flip: this half of the images is flipped in even epochs, the rest in odd ones.
            "flip": jax.random.bernoulli(flip_key, 0.5, (num_train,)),
        }

    def fit_whitening(state, images):
        kernel = airbench.whitening_kernel(normalize(images), config.whiten.kernel_size, config.whiten.eps)
        params = airbench.set_whitening(state["params"], kernel)
        return {**state, "params": params, "slow_params": params}

    def augment(images, flips, key):
        if translate:
            height, width, channels = images.shape[1:]
            padded = jnp.pad(images, ((0, 0), (translate, translate), (translate, translate), (0, 0)), mode="reflect")
            shifts = jax.random.randint(key, (images.shape[0], 2), 0, 2 * translate + 1)
            images = jax.vmap(lambda im, s: jax.lax.dynamic_slice(im, (s[0], s[1], 0), (height, width, channels)))(
                padded, shifts)
        return jnp.where(flips[:, None, None, None], images[:, :, ::-1, :], images)

    def lookahead(step, fast, slow):
        """Every `every_steps` the slow copy moves toward the weights, which then take it; the last step ends on it."""
        periodic = step % look.every_steps == 0
        decay = look.decay * (step.astype(jnp.float32) / total_steps) ** look.power
        # Written s + (1 - decay)(f - s) so weights that never change (the frozen ones) stay bitwise equal.
        slow = jax.tree.map(lambda s, f: jnp.where(periodic, s + (1 - decay) * (f - s), s), slow, fast)
        take = periodic | (step == total_steps)
        fast = jax.tree.map(lambda s, f: jnp.where(take, s, f), slow, fast)
        return fast, slow

    def train_step(state, images, labels, flips, key):
        flip_key, shift_key = jax.random.split(key)
        if flip_mode == "random":
            flips = jax.random.bernoulli(flip_key, 0.5, flips.shape)
        elif flip_mode == "none":
            flips = jnp.zeros_like(flips)
        x = normalize(augment(images, flips, shift_key))

        def loss_fn(params):
            logits, updates = apply_fn({"params": params, "batch_stats": state["batch_stats"]}, x, train=True,
                                       mutable=["batch_stats"])
            # The reference sums the loss over the batch; its learning rates are set for that.
            loss = cross_entropy(logits, labels, config.loss.label_smoothing) * labels.shape[0]
            return loss, (logits, updates["batch_stats"])

        (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        step = state["step"] + 1
        (params, stats), (slow_params, slow_stats) = lookahead(
            step, (params, stats), (state["slow_params"], state["slow_stats"]))
        metrics = {"loss": loss / labels.shape[0], "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
                   "active": jnp.ones((), jnp.float32)}
        new_state = {**state, "params": params, "batch_stats": stats, "opt_state": opt_state,
                     "slow_params": slow_params, "slow_stats": slow_stats, "step": step}
        return new_state, metrics

    def train_epoch(state, images, labels, epoch, key):
        order_key, step_key = jax.random.split(key)
        order = jax.random.permutation(order_key, num_train)[: steps_per_epoch * batch].reshape(steps_per_epoch, batch)
        epoch_flips = state["flip"] ^ (epoch % 2 == 1) if flip_mode == "alternate" else state["flip"]

        def body(state, xs):
            index, step_key = xs
            new_state, metrics = train_step(state, images[index], labels[index], epoch_flips[index], step_key)
            # Past the last step (in a fractional final epoch) the step is computed and discarded: a select
            # rather than `lax.cond` keeps the compiled epoch free of data-dependent branches.
            active = state["step"] < total_steps
            new_state = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_state, state)
            return new_state, jax.tree.map(lambda m: jnp.where(active, m, 0.0), metrics)

        state, metrics = jax.lax.scan(body, state, (order, jax.random.split(step_key, steps_per_epoch)))
        active = jnp.maximum(jnp.sum(metrics["active"]), 1.0)
        return state, {"loss": jnp.sum(metrics["loss"]) / active, "accuracy": jnp.sum(metrics["accuracy"]) / active}

    def evaluate(params, stats, images, labels, *, tta_level: int, eval_batch: int):
        """Accuracy on `images`, test-time augmented at `tta_level` (0 none, 1 mirror, 2 mirror + translations)."""
        variables = {"params": params, "batch_stats": stats}
        count = images.shape[0]
        chunks = -(-count // eval_batch)
        padded = jnp.pad(images, ((0, chunks * eval_batch - count), (0, 0), (0, 0), (0, 0)))
        height, width = images.shape[1:3]

        def logits_of(chunk):
            x = normalize(chunk)
            views = [x]
            if tta_level >= 1:
                views.append(x[:, :, ::-1])
            if tta_level >= 2:
                wide = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
                for shifted in (wide[:, :height, :width], wide[:, 2:, 2:]):
                    views += [shifted, shifted[:, :, ::-1]]
            # One forward pass over every view.
            out = apply_fn(variables, jnp.concatenate(views), train=False).reshape(len(views), eval_batch, -1)
            if tta_level == 0:
                return out[0]
            mirror = 0.5 * (out[0::2] + out[1::2])
            return mirror[0] if tta_level == 1 else 0.5 * mirror[0] + 0.25 * (mirror[1] + mirror[2])

        logits = jax.lax.map(logits_of, padded.reshape(chunks, eval_batch, *images.shape[1:]))
        predictions = jnp.argmax(logits.reshape(chunks * eval_batch, -1)[:count], -1)
        return jnp.mean(predictions == labels)

    return Programs(init=init, fit_whitening=fit_whitening, train_epoch=train_epoch, evaluate=evaluate,
                    steps_per_epoch=steps_per_epoch, total_steps=total_steps, num_epochs=num_epochs)


@dataclasses.dataclass
class Compiled:
    init: Any
    fit_whitening: Any
    train_epoch: Any
    epoch_eval: Any
    final_eval: Any
    seconds: dict[str, float]


def compile_programs(programs: Programs, config, device_data: dict[str, Any],
                     compiler_options: dict[str, Any] | None = None) -> Compiled:
    """Lowers and compiles every program for the data's shapes; times each compile.

    `compiler_options` go to XLA's `compile` (the tests lower the optimisation
    level to compile faster; timed runs leave them alone).
    """
    import jax
    import jax.numpy as jnp

    seconds: dict[str, float] = {}

    def timed(name, fn, *args, **jit_kwargs):
        start = time.perf_counter()
        compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile(compiler_options)
        seconds[name] = time.perf_counter() - start
        return compiled

    image_shape = tuple(device_data["train_images"].shape[1:])
    key = jax.random.PRNGKey(0)
    init = timed("init", functools.partial(programs.init, image_shape=image_shape), key)
    state = jax.eval_shape(functools.partial(programs.init, image_shape=image_shape), key)
    fit = timed("fit_whitening", programs.fit_whitening, state, device_data["whiten_images"], donate_argnums=0)
    epoch = timed("train_epoch", programs.train_epoch, state, device_data["train_images"],
                  device_data["train_labels"], jnp.zeros((), jnp.int32), key, donate_argnums=0)
    evals = {}
    for name, level in (("epoch_eval", config.eval.epoch_tta_level), ("final_eval", config.eval.tta_level)):
        fn = functools.partial(programs.evaluate, tta_level=int(level), eval_batch=int(config.eval.batch_size))
        if name == "final_eval" and level == config.eval.epoch_tta_level:
            evals[name] = evals["epoch_eval"]
            continue
        evals[name] = timed(name, fn, state["params"], state["batch_stats"], device_data["val_images"],
                            device_data["val_labels"])
    return Compiled(init=init, fit_whitening=fit, train_epoch=epoch, seconds=seconds, **evals)


# -- the run -------------------------------------------------------------------
def _device_name() -> str:
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        return f"{device.platform}: {device.device_kind}"
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{os.cpu_count()}-core {platform.machine()} CPU" + (f" ({model})" if model else "")


def train_once(programs: Programs, compiled: Compiled, config, device_data, seed: int,
               log=print) -> tuple[list[dict], dict, np.ndarray]:
    """One timed run: its table rows (one per evaluation), final train state and fitted whitening kernel."""
    import jax

    key = jax.random.PRNGKey(seed)
    init_key, run_key = jax.random.split(key)
    state = jax.block_until_ready(compiled.init(init_key))
    rows: list[dict] = []
    clock = 0.0
    start = time.perf_counter()
    state = jax.block_until_ready(compiled.fit_whitening(state, device_data["whiten_images"]))
    clock += time.perf_counter() - start
    fitted = np.asarray(state["params"]["whiten"]["kernel"])  # kept to show training leaves it alone
    images, labels = device_data["train_images"], device_data["train_labels"]
    val = (device_data["val_images"], device_data["val_labels"])
    for epoch in range(programs.num_epochs):
        start = time.perf_counter()
        state, metrics = compiled.train_epoch(state, images, labels, np.int32(epoch), jax.random.fold_in(run_key, epoch))
        state, metrics = jax.block_until_ready((state, metrics))
        clock += time.perf_counter() - start
        accuracy = float(compiled.epoch_eval(state["params"], state["batch_stats"], *val))  # outside the clock
        rows.append({"epoch": epoch + 1, "steps": int(state["step"]), "clock_s": clock,
                     "val_accuracy": accuracy, "tta_level": int(config.eval.epoch_tta_level),
                     "train_loss": float(metrics["loss"]), "train_accuracy": float(metrics["accuracy"])})
        log(f"run seed={seed} epoch {epoch + 1}/{programs.num_epochs}: val_accuracy={accuracy:.4f} "
            f"train_loss={float(metrics['loss']):.4f} clock={clock:.2f}s")
    start = time.perf_counter()
    accuracy = float(jax.block_until_ready(compiled.final_eval(state["params"], state["batch_stats"], *val)))
    clock += time.perf_counter() - start
    rows.append({"epoch": "final", "steps": int(state["step"]), "clock_s": clock, "val_accuracy": accuracy,
                 "tta_level": int(config.eval.tta_level)})
    log(f"run seed={seed} final (TTA level {config.eval.tta_level}): val_accuracy={accuracy:.4f} clock={clock:.2f}s")
    return rows, state, fitted


def time_to_target(rows: list[dict], target: float) -> float | None:
    """Clock at the first evaluation at or above `target` (None if none reached it)."""
    return next((row["clock_s"] for row in rows if row["val_accuracy"] >= target), None)


def run(config, workdir: str, *, data_path: str | None = None, runs: int = 1, data_cache: str | None = None,
        compiler_options: dict[str, Any] | None = None, log: Callable[[str], None] = print) -> dict:
    """Loads the data, compiles, trains `runs` times and writes table, summary and plot into `workdir`.

    Returns the table rows, the summary, and the last run's final train state
    and its whitening kernel as fitted before training.
    """
    import jax

    os.makedirs(workdir, exist_ok=True)
    wall_start = time.perf_counter()
    data = load_data(config, data_path, data_cache)
    whiten_count = min(int(config.whiten.examples), len(data.train_labels))
    device_data = {
        "train_images": jax.device_put(data.train_images), "train_labels": jax.device_put(data.train_labels),
        "val_images": jax.device_put(data.val_images), "val_labels": jax.device_put(data.val_labels),
    }
    # The reference fits the whitening layer to the first 5,000 training images.
    device_data["whiten_images"] = device_data["train_images"][:whiten_count]
    jax.block_until_ready(device_data)
    data_load_s = time.perf_counter() - wall_start
    log(f"data: {len(data.train_labels)} train / {len(data.val_labels)} validation images, {data_load_s:.1f} s "
        f"(decode + copy to {_device_name()})")

    programs = build(config, len(data.train_labels), data.num_classes, data.mean, data.std)
    compiled = compile_programs(programs, config, device_data, compiler_options)
    compile_s = sum(compiled.seconds.values())
    log(f"compiled in {compile_s:.1f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in compiled.seconds.items()))

    rows: list[dict] = []
    records = []
    for index in range(runs):
        seed = int(config.seed) + index
        run_rows, state, fitted = train_once(programs, compiled, config, device_data, seed, log)
        for row in run_rows:
            row["run"] = index
            row["clock_with_compile_s"] = row["clock_s"] + compile_s
        reached = time_to_target(run_rows, config.target_accuracy)
        records.append({
            "run": index, "seed": seed, "final_accuracy": run_rows[-1]["val_accuracy"],
            "clock_s": run_rows[-1]["clock_s"], "time_to_target_s": reached,
            "time_to_target_with_compile_s": None if reached is None else reached + compile_s,
        })
        rows += run_rows

    common.write_table(workdir, rows, columns=COLUMNS, title=f"CIFAR-10 speed run ({config.variant})")
    finals = [r["final_accuracy"] for r in records]
    summary = {
        "variant": config.variant, "device": _device_name(), "jax_version": jax.__version__,
        "precision": config.precision, "model": config.model.name,
        "num_params": int(sum(x.size for x in jax.tree.leaves(
            jax.eval_shape(functools.partial(programs.init, image_shape=data.train_images.shape[1:]),
                           jax.random.PRNGKey(0))["params"]))),
        "train_examples": len(data.train_labels), "val_examples": len(data.val_labels),
        "batch_size": int(config.batch_size), "num_epochs": float(config.num_epochs),
        "steps": programs.total_steps, "target_accuracy": config.target_accuracy,
        "data_load_s": data_load_s, "compile_s": compile_s, "compile_breakdown_s": compiled.seconds,
        "mean_final_accuracy": float(np.mean(finals)),
        # Over all runs; None unless every run reached the target. Run 0 is the cold one (first execution).
        "median_time_to_target_s": _median([r["time_to_target_s"] for r in records]),
        "runs": records,
        "wall_time_s": time.perf_counter() - wall_start,
    }
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    _plot(workdir, rows, records, config, compile_s)
    return {"rows": rows, "summary": summary, "state": state, "fitted_whitening": fitted}


def _median(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.median(values))


def _plot(workdir: str, rows: list[dict], records: list[dict], config, compile_s: float) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for record in records:
        points = [r for r in rows if r["run"] == record["run"]]
        times = [r["clock_s"] for r in points]
        accuracy = [r["val_accuracy"] for r in points]
        label = "excluding compile" if record["run"] == 0 else None
        ax.plot(times, accuracy, "o-", color="C0", alpha=0.8, label=label)
        ax.plot([t + compile_s for t in times], accuracy, "s--", color="C1", alpha=0.6,
                label="including compile" if record["run"] == 0 else None)
        ax.plot(times[-1:], accuracy[-1:], "*", color="C3", markersize=12,
                label=f"final, TTA level {config.eval.tta_level}" if record["run"] == 0 else None)
    ax.axhline(config.target_accuracy, color="gray", linestyle=":", label=f"target {config.target_accuracy:.0%}")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"CIFAR-10 speed run ({config.variant}, {config.precision}): {_device_name()}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    common.save_figure(fig, workdir, "val_accuracy_vs_time")


def main() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    flags.DEFINE_string("workdir", None, "Directory for table.csv / table.md / summary.json / the plot.", required=True)
    config_flags.DEFINE_config_file("config", f"{CONFIG_PATH}:full", "Speed-run config (PATH[:VARIANT]).")
    flags.DEFINE_string("data_path", None, "CIFAR-10 JPEG archive (.tar.gz) or folder; default: the shared one.")
    flags.DEFINE_enum("precision", None, ["float32", "bfloat16"], "Overrides config.precision.")
    flags.DEFINE_integer("runs", 1, "Timed runs (seeds seed, seed+1, ...), sharing the compiled programs.")
    flags.DEFINE_string("data_cache", None, "An .npz of the decoded splits: written on first use, read after.")

    def _main(argv):
        del argv
        FLAGS = flags.FLAGS
        config = FLAGS.config
        if FLAGS.precision:
            config.precision = FLAGS.precision
        result = run(config, FLAGS.workdir, data_path=FLAGS.data_path, runs=FLAGS.runs, data_cache=FLAGS.data_cache)
        summary = result["summary"]
        for record in summary["runs"]:
            reached = record["time_to_target_s"]
            reached_text = (f"{reached:.2f} s excluding compile, {record['time_to_target_with_compile_s']:.2f} s "
                            "including it" if reached is not None else "not reached")
            print(f"run {record['run']}: final val accuracy {record['final_accuracy']:.4f}; "
                  f"time to {config.target_accuracy:.0%}: {reached_text}; clock {record['clock_s']:.2f} s")
        if len(summary["runs"]) > 1:
            median = summary["median_time_to_target_s"]
            print(f"mean final accuracy {summary['mean_final_accuracy']:.4f}; median time to target: "
                  + (f"{median:.2f} s" if median is not None else "not reached in every run"))
        print(f"compile {summary['compile_s']:.1f} s, data {summary['data_load_s']:.1f} s, "
              f"wall {summary['wall_time_s']:.1f} s; wrote {FLAGS.workdir}")

    app.run(_main)


if __name__ == "__main__":
    main()

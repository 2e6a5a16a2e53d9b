"""Stacks of 3x3 convolutions versus one large filter (Simonyan & Zisserman 2015, section 2.3).

    python -m experiments.small_filters --workdir=/tmp/exp/small_filters [--variant=smoke|full]

With C channels in and out and no biases, two 3x3 convs hold 2 * 9 C^2 = 18 C^2
weights and see a 5x5 window (the same as one 5x5 conv, 25 C^2); three 3x3
convs hold 27 C^2 and see 7x7 (one 7x7 conv: 49 C^2), with two or three
non-linearities instead of one. Part 1 (`counts.csv`) builds each stack from the
library's `Conv` layer, counts the initialised parameters and multiply-adds
(`cnnjax.summary.summarize` at 32x32xC) and measures the receptive field as the
support of the gradient of the centre output pixel with respect to the input
(next to the analytic 1 + sum(k - 1)). Part 2 (`table.csv`) trains two small
CNNs of the same number of blocks, each block either one 5x5 conv or two 3x3
convs (then 2x2 max pooling), on CIFAR-10 and reports their accuracy (not
asserted: at smoke size it is 40 steps on 640 images). Both nets are trained
by one compiled step (summed losses, so each net gets its own gradient) with
the optimiser and schedule of `experiments/configs/small_filters.py`: one
compile instead of two keeps the smoke run inside the test suite's budget.
"""

from __future__ import annotations

from experiments import common

# name -> kernel sizes of the stack
STACKS = {"two_3x3": (3, 3), "one_5x5": (5,), "three_3x3": (3, 3, 3), "one_7x7": (7,)}
CHANNELS = {"smoke": (16, 64), "full": (16, 64, 256)}
RF_SIZE = 17  # input side for the receptive-field probe (odd, larger than 7)
CNN_BLOCKS = {"cnn_5x5": (5,), "cnn_3x3": (3, 3)}


def _flax():
    from flax import linen as nn

    from cnnjax.models import layers

    class ConvStack(nn.Module):
        """Bias-free convs of `kernels` sizes, C channels in and out, SAME padding, optional ReLU between."""

        kernels: tuple[int, ...]
        features: int
        activation: str | None = None

        @nn.compact
        def __call__(self, x, *, train: bool = False):
            del train
            for index, k in enumerate(self.kernels):
                if index and self.activation:
                    x = layers.get_activation(self.activation)(x)
                x = layers.Conv(self.features, (k, k), padding="SAME", use_bias=False,
                                kernel_init=layers.get_init("he_normal"), impl="xla")(x)
            return x

    class FilterCNN(nn.Module):
        """`blocks` blocks of convs with `kernels` sizes (+ ReLU), each then 2x2 max pooling; GAP; dense."""

        num_classes: int = 10
        kernels: tuple[int, ...] = (3, 3)
        width: int = 32
        blocks: int = 2
        activation: str = "relu"
        kernel_init: str = "he_normal"
        init_scale: float = 1.0
        conv_impl: str = "auto"

        @nn.compact
        def __call__(self, x, *, train: bool):
            act = layers.get_activation(self.activation)
            init = layers.get_init(self.kernel_init, self.init_scale)
            for _ in range(self.blocks):
                for k in self.kernels:
                    x = act(layers.Conv(self.width, (k, k), padding="SAME", kernel_init=init, impl=self.conv_impl)(x))
                x = layers.pool(x, "max", 2, train=train)
            return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))

    return ConvStack, FilterCNN


def count_stacks(channels) -> list[dict]:
    """Parameters, MACs (32x32 map) and receptive field (analytic and measured) of every stack."""
    import jax
    import numpy as np

    from cnnjax.summary import summarize

    conv_stack, _ = _flax()
    rows = []
    for c in channels:
        for name, kernels in STACKS.items():
            summary = summarize(conv_stack(kernels, c), (32, 32, c))
            rows.append({"stack": name, "kernels": "+".join(f"{k}x{k}" for k in kernels), "C": c,
                         "params": summary.total_params, "params_per_C2": summary.total_params / c**2,
                         "formula": f"{sum(k * k for k in kernels)}C^2", "macs_32x32": summary.total_macs,
                         "nonlinearities": len(kernels), "rf_formula": 1 + sum(k - 1 for k in kernels)})
    # The receptive field does not depend on C: probe with 2 channels, ReLU between the convs.
    # Positive input and all-one kernels: no path can cancel or be cut by a ReLU, so the
    # gradient is non-zero exactly on the receptive field (random weights could leave holes).
    import jax.numpy as jnp

    stacks = {name: conv_stack(kernels, 2, activation="relu") for name, kernels in STACKS.items()}
    x = jnp.ones((1, RF_SIZE, RF_SIZE, 2))
    centre = RF_SIZE // 2
    ones = {name: jax.tree_util.tree_map(lambda a: jnp.ones(a.shape, a.dtype),
                                         jax.eval_shape(stack.init, jax.random.PRNGKey(0), x))
            for name, stack in stacks.items()}

    @jax.jit
    def probe(x, variables):
        return {name: jax.grad(lambda x, s=stack, v=variables[name]: s.apply(v, x)[0, centre, centre].sum())(x)
                for name, stack in stacks.items()}

    measured = {}
    for name, grad in probe(x, ones).items():
        support = np.abs(np.asarray(grad[0])).sum(axis=-1) > 0
        rows_hit, cols_hit = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
        measured[name] = (int(rows_hit[-1] - rows_hit[0] + 1), int(cols_hit[-1] - cols_hit[0] + 1))
    for row in rows:
        height, width = measured[row["stack"]]
        row["rf_measured"] = height if height == width else f"{height}x{width}"
    return rows


def train_cnns(config, dataset, seed: int = 0):
    """Trains the 5x5-block and 3x3-block CNNs side by side; returns (rows, histories).

    One jitted step updates both (their losses are summed, so each net's
    gradient is its own; the optimiser is elementwise, no gradient clipping);
    `config` supplies the optimiser, schedule, batch size, epochs and augmentation.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from cnnjax.data import pipeline
    from cnnjax.summary import summarize
    from cnnjax.training.optim import optimizer_from_config
    from cnnjax.training.steps import cross_entropy

    _, cnn = _flax()
    m = config.model
    nets = {name: cnn(kernels=kernels, width=m.width, blocks=m.blocks, activation=m.activation,
                      kernel_init=m.kernel_init, num_classes=dataset.num_classes, conv_impl="xla")
            for name, kernels in CNN_BLOCKS.items()}
    train, val = dataset.train, dataset.validation
    mean, std = jnp.asarray(dataset.mean, jnp.float32), jnp.asarray(dataset.std, jnp.float32)
    steps_per_epoch = train.num_examples // config.batch_size
    total_steps = steps_per_epoch * config.num_epochs
    tx = optimizer_from_config(config, steps_per_epoch, total_steps)
    images, labels = jnp.asarray(train.images), jnp.asarray(train.labels)
    shape = (1, *train.images.shape[1:])

    @jax.jit
    def init(key):
        params = {name: net.init(key, jnp.zeros(shape), train=False)["params"] for name, net in nets.items()}
        return params, tx.init(params)

    def losses(params, x, y):
        out = {}
        for name, net in nets.items():
            logits = net.apply({"params": params[name]}, x, train=True)
            out[name] = (cross_entropy(logits, y), jnp.mean(jnp.argmax(logits, -1) == y))
        return sum(loss for loss, _ in out.values()), out

    @jax.jit
    def step(params, opt_state, permutation, index, key):
        batch = pipeline.train_batch(images, labels, permutation, index, key, batch_size=config.batch_size,
                                     mean=mean, std=std, crop_padding=config.data.augment.crop_padding,
                                     flip=config.data.augment.flip)
        grads, out = jax.grad(losses, has_aux=True)(params, batch["image"], batch["label"])
        updates, opt_state = tx.update(grads, opt_state, params)
        return jax.tree_util.tree_map(lambda p, u: p + u, params, updates), opt_state, out

    @jax.jit
    def correct(params, x, y):
        x = pipeline.normalize(x, mean, std)
        return {name: jnp.sum(jnp.argmax(net.apply({"params": params[name]}, x, train=False), -1) == y)
                for name, net in nets.items()}

    def evaluate(params):
        hits = {name: 0 for name in nets}
        for start in range(0, val.num_examples, config.eval_batch_size):
            chunk = correct(params, val.images[start:start + config.eval_batch_size],
                            val.labels[start:start + config.eval_batch_size])
            hits = {name: hits[name] + int(chunk[name]) for name in nets}
        return {name: hits[name] / val.num_examples for name in nets}

    data_key = jax.random.PRNGKey(seed + 1)
    order = np.random.default_rng(seed)
    # An `rbg` key for the init: same schemes, far faster to compile than threefry on CPU.
    params, opt_state = init(jax.random.key(seed, impl="rbg"))
    train_history = {name: [] for name in nets}
    val_history = {name: [] for name in nets}
    window = {name: [] for name in nets}
    eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch))) if config.eval_every_epochs else None
    for t in range(total_steps):
        _, index = divmod(t, steps_per_epoch)
        if index == 0:  # numpy: one compile fewer than jax.random.permutation
            permutation = jnp.asarray(order.permutation(train.num_examples), jnp.int32)
        params, opt_state, out = step(params, opt_state, permutation, index, jax.random.fold_in(data_key, t))
        for name in nets:
            window[name].append(out[name])
        if (t + 1) % config.log_every_steps == 0 or t + 1 == total_steps:
            for name in nets:
                loss, acc = np.mean(np.asarray(jax.device_get(window[name])), axis=0)
                train_history[name].append((t + 1, float(loss), float(acc)))
                window[name] = []
        if (eval_every and (t + 1) % eval_every == 0) or t + 1 == total_steps:
            accuracy = evaluate(params)
            for name in nets:
                if not val_history[name] or val_history[name][-1][0] != t + 1:
                    val_history[name].append((t + 1, accuracy[name]))
    rows = []
    for name, net in nets.items():
        summary = summarize(net, train.images.shape[1:])
        val_acc = [a for _, a in val_history[name]]
        rows.append({"model": name, "block": "+".join(f"{k}x{k}" for k in CNN_BLOCKS[name]), "blocks": m.blocks,
                     "C": m.width, "conv_layers": summary.weight_layers - 1, "params": summary.total_params,
                     "macs": summary.total_macs, "steps": total_steps,
                     "train_loss": train_history[name][-1][1], "train_accuracy": train_history[name][-1][2],
                     "val_accuracy": val_acc[-1], "best_val_accuracy": max(val_acc)})
    return rows, {"train": train_history, "val": val_history}


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    """Writes counts.csv/md, table.csv/md and small_filters.png; returns the rows and the training history."""
    common.check_variant(variant)
    counts = count_stacks(CHANNELS[variant])
    common.write_table(workdir, counts, name="counts",
                       title="Parameters (no biases), MACs at 32x32 and receptive field of conv stacks, C in = C out")
    from experiments.configs.small_filters import get_config

    config = get_config(variant)
    # Smoke: 640 training and 320 validation JPEGs; the CPU step time bounds the run.
    common.cifar_data(config, variant, data_path=data_path, train_examples=640, eval_examples=320)
    rows, history = train_cnns(config, common.load(config))
    common.write_table(workdir, rows, title=f"One 5x5 conv vs two 3x3 convs per block, CIFAR-10 ({variant})")
    _plot(workdir, counts, rows, history)
    return {"counts": counts, "training": rows, "history": history}


def _plot(workdir: str, counts, rows, history) -> str:
    plt = common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    per_stack = {r["stack"]: r for r in counts if r["C"] == counts[0]["C"]}
    names = list(per_stack)
    left.bar(names, [per_stack[n]["params_per_C2"] for n in names], color=["C0", "C1", "C0", "C1"])
    for i, n in enumerate(names):
        left.text(i, per_stack[n]["params_per_C2"] + 1, f"{per_stack[n]['formula']}\nRF {per_stack[n]['rf_measured']}",
                  ha="center", fontsize=8)
    left.set_ylabel("parameters / C^2 (counted)")
    left.set_ylim(0, 60)
    left.set_title("Same receptive field, fewer weights", fontsize=9)
    for row in rows:
        train = history["train"][row["model"]]
        right.plot([s for s, _, _ in train], [1 - a for _, _, a in train], label=f"{row['block']} blocks (train)")
        val = history["val"][row["model"]]
        right.plot([s for s, _ in val], [1 - a for _, a in val], "o--", color=right.lines[-1].get_color(),
                   label=f"{row['block']} blocks (val)")
    right.set_xlabel("step")
    right.set_ylabel("error")
    right.legend(fontsize=8)
    right.set_title(f"{rows[0]['blocks']} blocks, C={rows[0]['C']}: one 5x5 vs two 3x3 per block", fontsize=9)
    return common.save_figure(fig, workdir, "small_filters.png")


if __name__ == "__main__":
    common.main(run)

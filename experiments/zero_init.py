"""Constant initialisation never breaks the symmetry between hidden units (cs231n lecture 5).

    python -m experiments.zero_init --workdir=/tmp/exp/zero_init [--variant=smoke|full]

The registry's `mlp` (two hidden ReLU layers of 32 units) is trained with plain
SGD on the real 8x8 handwritten digits (scikit-learn's `load_digits`,
standardised per pixel) from four inits (biases zero in all):

* `zeros` (`kernel_init=zeros`): every hidden activation is 0 and so is every
  gradient reaching a hidden kernel; only the output bias ever learns;
* `constant_0.1`: every kernel filled with 0.1; all units of a layer compute the
  same function, get the same gradient and stay copies of each other forever;
* `normal_0.01` (`kernel_init=normal`, scale 0.01) and `he_normal`: random
  weights, different gradients, distinct units.

Per hidden layer the table gives, at init and after the SGD steps, the
largest gradient entry, the largest difference between two units' gradient
vectors (max over inputs of max-minus-min over units) and that difference
relative to the largest entry, plus the number of distinct units (columns of
the kernel, equal within 1e-6 relative). At init the constant net's output
columns are identical too, so its softmax is uniform and almost no gradient
flows back; after one step the classes differ and the hidden gradients are
sizeable, but identical across units. The plot
shows the norm of every first-layer unit's weight vector along training.
"""

from __future__ import annotations

from pathlib import Path

from experiments import common

WIDTH = 32
DEPTH = 2
INITS = ("zeros", "constant_0.1", "normal_0.01", "he_normal")
VARIANTS = {  # SGD steps, batch size, learning rate
    "smoke": {"steps": 100, "batch_size": 64, "learning_rate": 0.05},
    "full": {"steps": 3000, "batch_size": 64, "learning_rate": 0.05},
}
TOLERANCE = 1e-6  # relative: units closer than this count as identical
GRAD_EXAMPLES = 256


def digits():
    """scikit-learn's 1,797 8x8 digits as standardised float32 (N, 8, 8, 1) and int labels.

    Read straight from the CSV scikit-learn ships (importing scikit-learn costs
    seconds); falls back to `sklearn.datasets.load_digits` if the file moved.
    """
    import gzip
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is not None and path.exists():
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
        images, target = table[:, :64].reshape(-1, 8, 8), table[:, 64]
    else:
        from sklearn.datasets import load_digits

        data = load_digits()
        images, target = data.images, data.target
    x = images.astype(np.float32)[..., None]
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)  # per pixel; the constant border pixels stay 0
    return x, target.astype(np.int32)


def _model(kernel_init: str = "he_normal", scale: float = 1.0):
    from cnnjax.models import get_model

    return get_model("mlp", num_classes=10, depth=DEPTH, width=WIDTH, activation="relu",
                     kernel_init=kernel_init, init_scale=scale)


def init_all(x) -> dict:
    """Parameters of the `mlp` under every init in INITS (one compiled init for all)."""
    import jax

    schemes = {"zeros": ("zeros", 1.0), "normal_0.01": ("normal", 0.01), "he_normal": ("he_normal", 1.0)}

    @jax.jit
    def init(key):
        return {name: _model(*scheme).init(key, x[:1], train=False)["params"] for name, scheme in schemes.items()}

    # An `rbg` key: the same schemes, but far quicker to compile than threefry on CPU.
    params = init(jax.random.key(0, impl="rbg"))
    params["constant_0.1"] = {layer: {k: (v * 0 + 0.1 if k == "kernel" else v) for k, v in p.items()}
                              for layer, p in params["zeros"].items()}
    return {name: params[name] for name in INITS}


def unit_spread(kernel_like) -> float:
    """Largest difference between two units (columns): max over rows of max - min over columns."""
    import numpy as np

    g = np.asarray(kernel_like, np.float64)
    return float(np.max(g.max(axis=1) - g.min(axis=1)))


def distinct_units(kernel) -> int:
    """Columns of `kernel` that differ by more than TOLERANCE x max|kernel| from every earlier one."""
    import numpy as np

    w = np.asarray(kernel, np.float64)
    scale = float(np.max(np.abs(w)))
    kept: list = []
    for j in range(w.shape[1]):
        column = w[:, j]
        if not any(np.max(np.abs(column - k)) <= TOLERANCE * scale for k in kept):
            kept.append(column)
    return len(kept)


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    """Writes table.csv/md and trajectories.png; returns {(init, layer): row}."""
    del data_path  # scikit-learn's digits ship with the package
    common.check_variant(variant)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    settings = VARIANTS[variant]
    x, y = digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    x_val, y_val, x_train, y_train = x[:297], y[:297], x[297:], y[297:]
    hidden = [f"dense{i}" for i in range(DEPTH)]

    # The inits change only the starting point: one model applies them all, compiled once.
    model = _model()
    inits = init_all(x_train)

    def loss_fn(p, xb, yb):
        logits = model.apply({"params": p}, xb, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    grad_fn = jax.jit(jax.grad(loss_fn))

    @jax.jit
    def step(p, xb, yb):
        return jax.tree_util.tree_map(lambda w, d: w - settings["learning_rate"] * d, p, grad_fn(p, xb, yb))

    predict = jax.jit(lambda p, xb: jnp.argmax(model.apply({"params": p}, xb, train=False), -1))
    probe = (x_train[:GRAD_EXAMPLES], y_train[:GRAD_EXAMPLES])

    rows, trajectories = [], {}
    for name in INITS:
        params = inits[name]
        grads = {"init": grad_fn(params, *probe)}
        start = {layer: distinct_units(params[layer]["kernel"]) for layer in hidden}
        norms = [np.linalg.norm(np.asarray(params["dense0"]["kernel"]), axis=0)]
        batches = np.random.default_rng(1)
        for _ in range(settings["steps"]):
            idx = batches.choice(len(x_train), settings["batch_size"], replace=False)
            params = step(params, x_train[idx], y_train[idx])
            norms.append(np.linalg.norm(np.asarray(params["dense0"]["kernel"]), axis=0))
        trajectories[name] = np.stack(norms)
        # At init the constant net's uniform softmax sends (almost) no gradient back;
        # after training the gradients are sizeable, and still identical across units.
        grads["after"] = grad_fn(params, *probe)
        val_accuracy = float(np.mean(np.asarray(predict(params, x_val)) == y_val))
        for layer in hidden:
            row = {"init": name, "layer": layer}
            for when, g in grads.items():
                g = np.asarray(g[layer]["kernel"])
                scale = float(np.max(np.abs(g)))
                spread = unit_spread(g)
                row.update({f"grad_max_{when}": scale, f"max_pairwise_diff_{when}": spread,
                            f"relative_diff_{when}": spread / scale if scale > 0 else 0.0})
            row.update({"distinct_units_init": start[layer],
                        "distinct_units_after": distinct_units(params[layer]["kernel"]),
                        "steps": settings["steps"], "val_accuracy": val_accuracy})
            rows.append(row)
    common.write_table(workdir, rows, title=f"Hidden-unit symmetry, mlp 64-{WIDTH}-{WIDTH}-10 on sklearn digits, "
                                            f"{settings['steps']} SGD steps")
    _plot(workdir, trajectories)
    return {(row["init"], row["layer"]): row for row in rows}


def _plot(workdir: str, trajectories: dict) -> str:
    import numpy as np

    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(trajectories), figsize=(3.4 * len(trajectories), 3.0))
    for ax, (name, norms) in zip(axes, trajectories.items()):
        every = max(1, len(norms) // 300)  # keep long (full) runs light to draw
        ax.plot(range(0, len(norms), every), norms[::every], lw=0.8)
        overlap = " (all on one line)" if float(np.ptp(norms[-1])) == 0.0 else ""
        ax.set_title(f"{name}: {norms.shape[1]} units{overlap}", fontsize=9)
        ax.set_xlabel("SGD step")
    axes[0].set_ylabel("||w_unit||, first hidden layer")
    fig.suptitle("Weight-vector norm of every first-layer unit during training (one line per unit)", fontsize=10)
    return common.save_figure(fig, workdir, "trajectories.png")


if __name__ == "__main__":
    common.main(run)

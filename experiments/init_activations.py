"""Activation statistics of a deep net at initialisation (cs231n lecture 5).

    python -m experiments.init_activations --workdir=/tmp/exp/init_activations [--variant=smoke|full]

Ten fully connected layers of 500 units (no biases) see a batch of unit
Gaussian input; for each init scheme the post-activation mean and
standard deviation of every layer are recorded, with a row of histograms:

* tanh with N(0, 0.01): each layer multiplies the std by 0.01 * sqrt(500) ~ 0.22,
  so by layer 10 the activations (and the gradients) have vanished;
* tanh with N(0, 1): the pre-activations have std ~ 22, every unit saturates at
  +-1 and tanh' ~ 0;
* tanh with Xavier (Var = 2 / (fan_in + fan_out) = 1 / 500 here): the std stays
  of order one, shrinking only slowly;
* ReLU with Xavier: ReLU zeroes half the input, so the second moment halves per
  layer (the std shrinks by ~1/sqrt(2));
* ReLU with He (Var = 2 / fan_in): the factor 2 compensates and the std holds.

The inits are the library's (`cnnjax.models.layers.get_init`: `normal` with
scale = std, `xavier_normal`, `he_normal`). `full` only uses a bigger batch.
"""

from __future__ import annotations

from experiments import common

LAYERS = 10
WIDTH = 500
# (label, activation, registry kernel_init, init_scale)
SETTINGS = (
    ("normal_0.01", "tanh", "normal", 0.01),
    ("normal_1", "tanh", "normal", 1.0),
    ("xavier", "tanh", "xavier_normal", 1.0),
    ("xavier", "relu", "xavier_normal", 1.0),
    ("he", "relu", "he_normal", 1.0),
)
SATURATION = 0.99  # |tanh| above this counts as saturated
EXAMPLES = {"smoke": 1000, "full": 10000}
COLUMNS = ("init", "activation", "layer", "mean", "std", "saturated")


def all_kernels(seed: int = 0) -> list:
    """The 10 (500, 500) kernels of every setting, drawn from `get_init` (one compiled call)."""
    import jax

    from cnnjax.models.layers import get_init

    # `rbg` keys: the same schemes, but far quicker to compile than threefry on CPU.
    keys = jax.random.split(jax.random.key(seed, impl="rbg"), LAYERS)

    inits = [get_init(name, scale) for _, _, name, scale in SETTINGS]

    @jax.jit
    def draw(keys):
        return [jax.vmap(lambda key, init=init: init(key, (WIDTH, WIDTH)))(keys) for init in inits]

    return draw(keys)


def layer_activations(activation: str, kernels, x) -> list:
    """Post-activation outputs of the bias-free layers `x -> act(x @ W)`, one per kernel."""
    import jax

    from cnnjax.models.layers import get_activation

    act = get_activation(activation)
    acts = []
    for kernel in kernels:
        x = act(x @ kernel)
        acts.append(x)
    return jax.device_get(acts)


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    """Writes table.csv/md and histograms.png; returns {(init, activation): [row per layer]}."""
    del data_path  # synthetic Gaussian input
    common.check_variant(variant)
    import jax
    import numpy as np

    x = jax.random.normal(jax.random.key(42, impl="rbg"), (EXAMPLES[variant], WIDTH))
    rows, hists = [], {}
    for (label, activation, _, _), kernels in zip(SETTINGS, all_kernels()):
        acts = layer_activations(activation, kernels, x)
        hists[(label, activation)] = acts
        for index, a in enumerate(acts, start=1):
            a = np.asarray(a, np.float64)
            rows.append({
                "init": label, "activation": activation, "layer": index,
                "mean": float(a.mean()), "std": float(a.std()),
                # ReLU has no saturating regime: left blank.
                "saturated": float(np.mean(np.abs(a) > SATURATION)) if activation == "tanh" else "",
            })
    common.write_table(workdir, rows, columns=COLUMNS,
                       title=f"Per-layer activations, {LAYERS} x {WIDTH} units, {EXAMPLES[variant]} Gaussian inputs")
    _plot(workdir, hists)
    out: dict = {}
    for row in rows:
        out.setdefault((row["init"], row["activation"]), []).append(row)
    return out


def _plot(workdir: str, hists: dict) -> str:
    """One panel per setting holding a row of 10 per-layer histograms (each scaled to its own peak)."""
    import numpy as np

    plt = common.pyplot()
    fig, axes = plt.subplots(len(hists), 1, figsize=(12, 1.6 * len(hists)))
    for ax, ((label, activation), acts) in zip(axes, hists.items()):
        flat = [np.asarray(a).ravel() for a in acts]
        # tanh: its whole range; ReLU: a range shared by the row, so shrinking shows.
        lo, hi = (-1.0, 1.0) if activation == "tanh" else (0.0, max(float(np.quantile(f, 0.999)) for f in flat))
        for i, a in enumerate(flat):
            if activation == "relu":
                a = a[a > 0]  # the other half sits exactly at 0
            counts, edges = np.histogram(a, bins=30, range=(lo, hi))
            x = i + 0.05 + 0.9 * (edges - lo) / (hi - lo)
            ax.stairs(counts / max(counts.max(), 1), x, fill=True, color="C0" if activation == "tanh" else "C1")
            ax.text(i + 0.5, 1.05, f"std {flat[i].std():.2g}", ha="center", fontsize=7)
        ax.set_xlim(0, LAYERS)
        ax.set_ylim(0, 1.3)
        ax.set_yticks([])
        ax.set_xticks([i + 0.5 for i in range(LAYERS)], [f"layer {i + 1}" for i in range(LAYERS)], fontsize=7)
        ax.set_ylabel(f"{label}\n{activation}", fontsize=8)
        part = " (positive part; half the units output exactly 0)" if activation == "relu" else ""
        ax.set_title(f"{label} / {activation}: each slot spans [{lo:.2g}, {hi:.2g}]{part}", fontsize=8, loc="left")
    fig.suptitle("Activation histograms per layer at initialisation (10 x 500 units, Gaussian input)", fontsize=10)
    return common.save_figure(fig, workdir, "histograms.png")


if __name__ == "__main__":
    common.main(run)

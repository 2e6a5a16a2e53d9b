"""Run in a subprocess with 8 host CPU devices by test_data_parallel.py; prints JSON.

`step`: one train step of a BatchNorm ResNet on 8 devices vs 1 device.
`run DATA_DIR WORKDIR`: `train_and_evaluate` with mesh.data=8 vs mesh.data=1.
"""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 8)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402


def _max_diff(a, b) -> float:
    paths = [[jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(t)] for t in (a, b)]
    assert paths[0] == paths[1], "tree structures differ"
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def step() -> dict:
    from cnnjax.models.resnet_cifar import CifarResNet
    from cnnjax.training import sharding
    from cnnjax.training.state import create_train_state
    from cnnjax.training.steps import train_step

    model = CifarResNet(depth=8, num_classes=10)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), (16, 16, 3))
    rng = np.random.default_rng(0)
    # Shards differ in scale, so per-device BatchNorm statistics would differ from global ones.
    images = rng.normal(size=(64, 16, 16, 3)).astype(np.float32) * np.repeat(np.arange(1, 9), 8)[:, None, None, None]
    batch = {"image": images, "label": rng.integers(0, 10, 64).astype(np.int32)}

    one, one_metrics = jax.jit(train_step)(state, batch)
    mesh = sharding.data_mesh(8)
    split = sharding.batch_sharding(mesh)
    sharded_step = jax.jit(lambda s, b: train_step(s, sharding.constrain_batch(b, split)))
    placed_state, placed_batch = sharding.replicate(state, mesh), jax.device_put(batch, split)
    eight, eight_metrics = sharded_step(placed_state, placed_batch)
    hlo = sharded_step.lower(placed_state, placed_batch).compile().as_text()

    # What unsynchronised BN would give: each device normalising with its own 8 examples.
    local = [jax.jit(train_step)(state, {k: v[i * 8:(i + 1) * 8] for k, v in batch.items()})[0] for i in range(8)]
    local_stats = jax.tree_util.tree_map(lambda *xs: sum(xs) / 8, *[s.batch_stats for s in local])
    return {
        "devices": len(jax.devices()),
        "param_diff": _max_diff(one.params, eight.params),
        "stats_diff": _max_diff(one.batch_stats, eight.batch_stats),
        "local_stats_diff": _max_diff(one.batch_stats, local_stats),
        "loss": [float(one_metrics["loss"]), float(eight_metrics["loss"])],
        "param_devices": len(eight.params["Dense_0"]["kernel"].sharding.device_set),
        "all_reduces": hlo.count("all-reduce("),
    }


def run(data_dir: str, workdir: str) -> dict:
    from cnnjax.config import base_config
    from cnnjax.data import load_dataset
    from cnnjax.training.train import train_and_evaluate
    from experiments.configs import default

    config = default.get_config("smoke")
    config.data.data_dir = data_dir
    config.progress_bar = False
    config.tensorboard = False
    config.model.name = "lenet5"
    assert base_config().mesh.data == 1
    dataset = load_dataset(config.data)
    summaries = {}
    for devices in (1, 8):
        config.mesh.data = devices
        summaries[devices] = train_and_evaluate(config, f"{workdir}/mesh{devices}", dataset=dataset)
    return {str(k): {m: v for m, v in s.items() if isinstance(v, float)} for k, s in summaries.items()}


if __name__ == "__main__":
    result = step() if sys.argv[1] == "step" else run(*sys.argv[2:])
    print("RESULT " + json.dumps(result))

"""Sweeps end to end: outputs, strategies, bad input before any write, sharding."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from cnnjax.tuning.context import SweepError
from cnnjax.tuning.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[2]


def load(name, arg="smoke"):
    spec = importlib.util.spec_from_file_location("cfg_" + name, ROOT / "experiments" / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def smoke(name, data_dir, **changes):
    config = load(name)
    config.data.data_dir = data_dir
    config.progress_bar = False
    config.data.augment.crop_padding = 0
    for key, value in changes.items():
        node = config
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return config


def test_random_sweep_writes_results_and_plots(data, tmp_path):
    data_dir, dataset = data
    config = smoke("sweep_lr_wd", data_dir)
    summary = run_sweep(config, str(tmp_path), dataset=dataset)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 4
    for column in ("member", "optimizer.learning_rate", "optimizer.weight_decay", "best_val_accuracy",
                   "final_val_accuracy", "train_accuracy", "diverged", "steps"):
        assert column in rows[0]
    assert json.loads((tmp_path / "results.json").read_text())["members"][0]["steps"] == 8
    for png in ("val_accuracy_vs_hparams.png", "lr_wd_scatter.png", "loss_curves.png"):
        assert (tmp_path / png).stat().st_size > 1000
    members = {json.loads(line).get("member") for line in open(tmp_path / "metrics.jsonl")}
    assert members == {0, 1, 2, 3}
    assert summary["best_member"] in range(4) and summary["plans"]


def test_bad_sweeps_fail_before_writing(data, tmp_path):
    data_dir, dataset = data
    cases = [
        ({"sweep.population_size": 0}, "population_size must be >= 1"),
        ({"sweep.strategy": "bayes"}, "sweep.strategy='bayes' is unknown; valid choices: single, coarse_to_fine"),
        ({"sweep.space_extra": "optimizer.b1=uniform(0.8, 0.9)"}, "optimizer 'momentum' has no hyperparameter 'b1'"),
        ({"sweep.space_extra": "loss.l2=loguniform(0, 1)"}, "loguniform needs low > 0"),
        ({"sweep.sampler": "grid", "sweep.grid_points": 3}, "grid has 27 points .* larger than the budget"),
    ]
    for changes, message in cases:
        workdir = tmp_path / "w"
        with pytest.raises((SweepError, ValueError), match=message):
            run_sweep(smoke("sweep_lr_wd", data_dir, **changes), str(workdir), dataset=dataset)
        assert not workdir.exists()


def test_coarse_to_fine_narrowing_and_edge_warning():
    from cnnjax.tuning.space import narrow_space, parse_distribution

    space = {"optimizer.learning_rate": parse_distribution("lr", "loguniform(1e-4, 1)"),
             "loss.l2": parse_distribution("l2", "loguniform(1e-6, 1e-2)")}
    top = [{"optimizer.learning_rate": 1e-2, "loss.l2": 0.9e-2}, {"optimizer.learning_rate": 1e-3, "loss.l2": 1e-4}]
    new, warnings = narrow_space(space, top)
    lr = new["optimizer.learning_rate"]
    # Interior best: the span of the top values plus 10% of the 4-decade width (0.4 decades) each side.
    np.testing.assert_allclose([np.log10(lr.low), np.log10(lr.high)], [-3.4, -1.6], atol=1e-9)
    # l2's best sits on the high edge: widened by half the 4-decade width, with a warning.
    np.testing.assert_allclose(np.log10(new["loss.l2"].high), 0.0, atol=1e-9)
    assert warnings == ["best loss.l2=0.009 sits on the high edge of loguniform(1e-06, 0.01); widening above it"]


def test_coarse_to_fine_sweep_runs_its_rounds(data, tmp_path):
    data_dir, dataset = data
    summary = run_sweep(smoke("sweep_coarse_to_fine", data_dir), str(tmp_path), dataset=dataset)
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert summary["rounds"][0]["space"] != summary["rounds"][1]["space"]
    rounds = {r["round"] for r in json.loads((tmp_path / "results.json").read_text())["members"]}
    assert rounds == {0, 1}


def test_successive_halving_repacks_smaller_populations(data, tmp_path):
    data_dir, dataset = data
    config = smoke("sweep_lr_wd", data_dir, **{"sweep.strategy": "successive_halving", "num_epochs": 2,
                                               "sweep.min_epochs": 0.5, "sweep.eta": 2})
    summary = run_sweep(config, str(tmp_path), dataset=dataset)
    sizes = [len(r["members"]) for r in summary["rungs"]]
    assert sizes == [4, 2, 1]
    results = json.loads((tmp_path / "results.json").read_text())["members"]
    steps = sorted(r["steps"] for r in results)
    assert steps == [4, 4, 8, 16]


def test_hyperband_brackets_match_the_paper():
    from cnnjax.tuning.budget import hyperband_brackets

    # Li et al. 2018, Table 1: R = 81, eta = 3.
    brackets = hyperband_brackets(81, 1, 3)
    assert [b["members"] for b in brackets] == [81, 34, 15, 8, 5]
    assert [b["min_epochs"] for b in brackets] == [1, 3, 9, 27, 81]


def test_hyperband_runs_every_bracket(data, tmp_path):
    data_dir, dataset = data
    config = smoke("sweep_lr_wd", data_dir, **{"sweep.strategy": "hyperband", "num_epochs": 1,
                                               "sweep.min_epochs": 0.5, "sweep.eta": 2})
    summary = run_sweep(config, str(tmp_path), dataset=dataset)
    assert [b["members"] for b in summary["brackets"]] == [2, 2]
    by_bracket = {}
    for rung in summary["rungs"]:
        by_bracket.setdefault(rung["bracket"], []).append(len(rung["members"]))
    assert by_bracket == {1: [2, 1], 0: [2]}
    results = json.loads((tmp_path / "results.json").read_text())["members"]
    steps = {b: sorted(r["steps"] for r in results if r["bracket"] == b) for b in (0, 1)}
    assert steps == {1: [4, 8], 0: [8, 8]}
    with pytest.raises(SweepError, match="min_epochs <= num_epochs"):
        run_sweep(smoke("sweep_lr_wd", data_dir, **{"sweep.strategy": "hyperband", "sweep.min_epochs": 5.0}),
                  str(tmp_path / "bad"), dataset=dataset)
    assert not (tmp_path / "bad").exists()


def test_pbt_exploit_copies_state_and_perturbs():
    from cnnjax.config import base_config
    from cnnjax.tuning.population import init_population
    from cnnjax.tuning.strategies import _exploit

    config = base_config()
    members = [{"optimizer.learning_rate": lr, "seed": s} for lr, s in ((0.1, 0), (0.2, 1), (0.3, 2))]
    pop = init_population(config, members, 10, (8, 8, 1), 512)
    new_values = [dict(members[0]), dict(members[1]), {"optimizer.learning_rate": 0.25, "seed": 1}]
    moved = _exploit(pop, [0, 1, 1], new_values, config)
    for a in jax.tree_util.tree_leaves(moved.state.params):
        np.testing.assert_array_equal(a[2], a[1])
    lr = moved.state.opt_state.hyperparams["learning_rate"]
    np.testing.assert_allclose(lr, [0.1, 0.2, 0.25], rtol=1e-6)
    assert moved.ids == pop.ids


def test_pbt_sweep_runs_and_logs_events(data, tmp_path):
    data_dir, dataset = data
    config = smoke("sweep_lr_wd", data_dir, **{"sweep.strategy": "pbt", "num_epochs": 2,
                                               "sweep.pbt_interval_epochs": 0.5})
    summary = run_sweep(config, str(tmp_path), dataset=dataset)
    assert summary["pbt_events"] and all(e["member"] != e["copied_from"] for e in summary["pbt_events"])


def test_member_axis_sharded_over_a_mesh_equals_one_device_for_each_plan_and_padded(tmp_path):
    script = textwrap.dedent("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import numpy as np, jax
        from types import SimpleNamespace
        from jax.sharding import Mesh
        from cnnjax.config import base_config
        from cnnjax.tuning.population import init_population
        from cnnjax.tuning.runner import MemberRecord, PopulationTrainer
        assert len(jax.devices()) == 8
        rng = np.random.default_rng(0)
        split = lambda n: SimpleNamespace(images=rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8),
                                          labels=rng.integers(0, 10, n).astype(np.int32), num_examples=n)
        data = SimpleNamespace(train=split(128), validation=split(32), test=split(32), num_classes=10,
                               image_shape=(8, 8, 1), mean=np.zeros((1, 1, 1), np.float32),
                               std=np.ones((1, 1, 1), np.float32))
        config = base_config()
        config.batch_size = 16
        config.num_epochs = 1
        config.eval_batch_size = 16
        config.log_every_steps = 4
        members = [{"optimizer.learning_rate": 0.01 * (i + 1), "seed": i} for i in range(8)]
        out = []
        mesh8 = Mesh(np.asarray(jax.devices()), ("member",))
        mesh4 = Mesh(np.asarray(jax.devices()[:4]), ("member",))
        for mesh, plan in ((None, "vmap"), (mesh8, "vmap"), (mesh4, "sequential")):
            pop = init_population(config, members, 10, (8, 8, 1), 128)
            records = {i: MemberRecord(i, m) for i, m in enumerate(members)}
            pop = PopulationTrainer(config, data, records, plan=plan, mesh=mesh).train(pop, 6)
            if mesh is not None:
                leaf = jax.tree_util.tree_leaves(pop.state.params)[0]
                assert len(leaf.sharding.device_set) == mesh.size, leaf.sharding
            out.append(jax.device_get(pop.state.params))
        for other in out[1:]:
            for a, b in zip(jax.tree_util.tree_leaves(out[0]), jax.tree_util.tree_leaves(other)):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        # 6 members on 4 devices: padded to 8 with frozen copies, which the result leaves out.
        pop = init_population(config, members[:6], 10, (8, 8, 1), 128)
        records = {i: MemberRecord(i, m) for i, m in enumerate(members[:6])}
        pop = PopulationTrainer(config, data, records, plan="vmap", mesh=mesh4).train(pop, 6)
        assert pop.alive.shape == (6,) and bool(pop.alive.all())
        for a, b in zip(jax.tree_util.tree_leaves(out[0]), jax.tree_util.tree_leaves(jax.device_get(pop.state.params))):
            assert b.shape[0] == 6
            np.testing.assert_allclose(a[:6], b, rtol=1e-5, atol=1e-6)
        print("SHARDED_OK")
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert "SHARDED_OK" in result.stdout, result.stderr[-3000:]

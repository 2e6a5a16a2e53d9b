"""The persistent compilation cache: where it lives, bad directories, and a cached run equal to a compiled one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cnnjax.training import compile_cache

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "experiments" / "configs" / "default.py")


def test_where_the_cache_lives(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.cache_dir("auto") == str(tmp_path / "xdg" / "cnnjax" / "jax")
    assert (tmp_path / "xdg" / "cnnjax" / "jax").is_dir()
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jaxenv"))
    assert compile_cache.cache_dir("auto") == str(tmp_path / "jaxenv")
    assert compile_cache.cache_dir(str(tmp_path / "mine")) == str(tmp_path / "mine")
    assert compile_cache.cache_dir("gs://bucket/cache") == "gs://bucket/cache"
    for off in ("off", "OFF", "none", ""):
        assert compile_cache.cache_dir(off) is None
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(compile_cache.CacheDirError, match="a_file/cache.*writable directory, auto, or off"):
        compile_cache.cache_dir(str(tmp_path / "a_file" / "cache"))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "a_file" / "cache"))
    assert compile_cache.cache_dir("auto") is None  # auto never stops a run


def test_a_bad_cache_directory_exits_2_before_the_workdir(run_cli, tmp_path):
    (tmp_path / "a_file").write_text("x")
    result = run_cli(f"--config={DEFAULT}", f"--workdir={tmp_path / 'run'}",
                     f"--compilation_cache={tmp_path / 'a_file' / 'cache'}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --compilation_cache=")
    assert not (tmp_path / "run").exists()


def test_a_run_from_the_cache_equals_a_compiled_one(run_cli, tmp_path):
    cache = tmp_path / "cache"
    common = [f"--config={DEFAULT}", f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.num_epochs=1",
              "--config.data.max_train_examples=640",
              "--config.progress_bar=false"]
    runs = {}
    for name in ("compiled", "cached"):  # the first compiles and fills the cache, the second loads from it
        result = run_cli(*common, f"--workdir={tmp_path / name}", f"--compilation_cache={cache}")
        assert result.returncode == 0, result.stderr
        assert "compilation cache" not in result.stderr.lower(), result.stderr  # no cache warning
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text())
        if name == "compiled":
            entries = os.listdir(cache)
            assert any(entry.startswith("jit_step") for entry in entries), sorted(entries)
    # The second run found every program the first one cached: no second entry under any of their names. A
    # program whose compile took about MIN_COMPILE_S (0.2 s) may be written by the second run only.
    program = lambda entry: entry.rsplit("-", 2)[0]  # noqa: E731 ("jit_steps-<hash>-cache" -> "jit_steps")
    added = set(os.listdir(cache)) - set(entries)
    assert set(entries) <= set(os.listdir(cache)) and not {program(e) for e in added} & {program(e) for e in entries}, added
    keys = ("eval/accuracy", "eval/loss", "val/accuracy", "val/loss", "train/loss", "steps")
    assert {k: runs["cached"][k] for k in keys} == {k: runs["compiled"][k] for k in keys}
    losses = {name: [json.loads(line).get("train/loss") for line in (tmp_path / name / "metrics.jsonl").open()]
              for name in runs}
    assert losses["cached"] == losses["compiled"] and any(losses["compiled"])

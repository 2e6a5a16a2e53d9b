"""`--mode=export`: a run's inference function as a serialized `jax.export` artifact.

The exported function maps uint8 NHWC images (pixel values 0..255, the run's
height, width and channels; any batch size, the batch dimension is symbolic) to
float32 logits. Normalisation with the run's training statistics and the
weights (EMA weights when the run kept them) are inside the function, so a
consumer needs only `jax` and `numpy` (`cnnjax.export.load`). The artifact is
lowered for this machine's platform (`jax.export`'s default).

Files in the export directory (each written to a temporary name and renamed):
`model.jaxexport` (`Exported.serialize()`) and `metadata.json` (class names,
input shape and dtype, normalisation constants, the source run and step).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from cnnjax.export import METADATA_FILE, MODEL_FILE
from cnnjax.inference.restore import InferenceError, restore_run
from cnnjax.kernels.conv import xla_only
from cnnjax.training import files
from cnnjax.training.writers import write_json


def export_run(workdir: str, config: ml_collections.ConfigDict, export_dir: str,
               step: int | None = None) -> dict[str, Any]:
    """Exports `workdir`'s checkpoint to `export_dir`; returns the metadata written."""
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise InferenceError(f"--export_dir={export_dir} is a file; name a directory.")
    run = restore_run(workdir, config, step)
    logits_fn, variables = run.logits_fn(), run.variables

    def infer(images):
        return logits_fn(images, variables)

    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, *run.image_shape), jnp.uint8)
    # Only XLA operations: the artifact runs wherever jax does, without this process's custom calls.
    exported = jax.export.export(jax.jit(xla_only(infer)))(spec)
    metadata = {
        "format": "jax.export",
        "input": {"dtype": "uint8", "layout": "NHWC", "shape": ["batch", *run.image_shape],
                  "range": [0, 255]},
        "output": {"name": "logits", "dtype": "float32", "shape": ["batch", len(run.class_names)]},
        "class_names": list(run.class_names),
        "normalization": {"formula": "(x / 255 - mean) / std, applied inside the function",
                          "mean": run.mean.tolist(), "std": run.std.tolist()},
        "platforms": list(exported.platforms),
        "model": config.model.name,
        "checkpoint_step": run.step,
        "ema_weights": run.ema,
        "source_workdir": files.absolute(workdir),
        "jax_version": jax.__version__,
    }
    os.makedirs(export_dir, exist_ok=True)
    path = os.path.join(export_dir, MODEL_FILE)
    with open(path + ".tmp", "wb") as f:
        f.write(exported.serialize())
    os.replace(path + ".tmp", path)
    write_json(os.path.join(export_dir, METADATA_FILE), metadata)
    return json.loads(json.dumps(metadata))

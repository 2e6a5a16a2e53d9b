"""A trained run, read back for inference: its config, checkpoint and input facts.

Reading never writes: the checkpoint manager is opened read-only, so a workdir
with no checkpoint is refused without creating anything in it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax.data import pipeline
from cnnjax.inference.run_config import read_run_config
from cnnjax.training import files
from cnnjax.training.run_data import data_info, parse_data_info, read_data_info


class InferenceError(ValueError):
    """A workdir, checkpoint, data set or image path that inference cannot use."""


@dataclasses.dataclass
class RestoredRun:
    """What inference needs of a run.

    Attributes:
      config: the run's config (with any overrides applied by the caller).
      step: the restored checkpoint's step.
      variables: `{'params', 'batch_stats'}`, the EMA weights when the run kept them.
      ema: whether `variables` are the EMA weights.
      class_names, image_shape, mean, std: the training data's facts.
      apply: `apply(variables, x, train=False)` of the run's model (float input).
    """

    workdir: str
    config: ml_collections.ConfigDict
    step: int
    variables: dict[str, Any]
    ema: bool
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: np.ndarray
    std: np.ndarray
    apply: Callable[..., Any]
    _jitted: Any = dataclasses.field(default=None, repr=False)

    def logits_fn(self) -> Callable[[jax.Array, Any], jax.Array]:
        """`f(uint8 NHWC images, variables) -> float32 logits`, normalising as training did."""
        mean, std, apply = self.mean, self.std, self.apply

        def logits(images, variables):
            out = apply(variables, pipeline.normalize(images, mean, std), train=False)
            out = out[0] if isinstance(out, tuple) else out
            return out.astype(jnp.float32)

        return logits

    def _chunk_program(self, batch_size: int, batches: int) -> Future:
        """A future of the compiled `[batches, batch_size, H, W, C] uint8 -> logits` program (a loop over batches).

        Compiled once per shape, in a background thread: XLA's compile releases
        the GIL, so the caller can decode images meanwhile.
        """
        key = (batch_size, batches)
        if self._jitted is None:
            self._jitted = {}
        if key not in self._jitted:
            logits = self.logits_fn()
            program = jax.jit(lambda x, variables: jax.lax.map(lambda batch: logits(batch, variables), x))
            shape = jax.ShapeDtypeStruct((batches, batch_size, *self.image_shape), jnp.uint8)
            self._jitted[key] = _COMPILER.submit(lambda: program.lower(shape, self.variables).compile())
        return self._jitted[key]

    def prepare(self, batch_size: int, num_examples: int) -> None:
        """Starts compiling the program that `logits_of_chunks` will use for `num_examples` images."""
        self._chunk_program(batch_size, _chunk_batches(num_examples, batch_size))

    def chunk_size(self, batch_size: int, num_examples: int) -> int:
        """Images per call of the inference program (whole batches, at most `CHUNK_BATCHES`)."""
        return _chunk_batches(num_examples, batch_size) * batch_size

    def predict_logits(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        """float32 logits (N, classes) of uint8 images in the run's shape, in fixed-size batches."""
        size = self.chunk_size(batch_size, len(images))
        return self.logits_of_chunks((images[s:s + size] for s in range(0, len(images), size)), batch_size,
                                     len(images))

    def logits_of_chunks(self, chunks: Iterable[np.ndarray], batch_size: int, num_examples: int) -> np.ndarray:
        """float32 logits of the images of `chunks`, in order.

        Each chunk (uint8, the run's shape, at most `chunk_size(batch_size,
        num_examples)` images) is padded to whole batches and sent as one call
        of one compiled program that loops over its batches on the device:
        a quarter of the dispatches of one call per batch, which made a
        10,000-image evaluation take half as long again on the 2-core CPU
        (`experiments/benchmarks/eval_time.py`). A call returns at once (JAX
        dispatches asynchronously), so the next chunk is made (decoded) while
        this one is computed.
        """
        batches = _chunk_batches(num_examples, batch_size)
        per_chunk = batches * batch_size
        program = None
        pending = []
        for chunk in chunks:
            rows = len(chunk)
            if rows == 0:
                continue
            if rows > per_chunk:
                raise ValueError(f"a chunk of {rows} images; at most {per_chunk} fit one call")
            if rows < per_chunk:
                chunk = np.concatenate([chunk, np.zeros((per_chunk - rows, *chunk.shape[1:]), chunk.dtype)])
            program = program or self._chunk_program(batch_size, batches).result()
            pending.append((program(chunk.reshape(batches, batch_size, *chunk.shape[1:]), self.variables), rows))
        if not pending:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate([np.asarray(out).reshape(per_chunk, -1)[:rows] for out, rows in pending])


CHUNK_BATCHES = 4  # batches per call of the inference program (fewer only when there are fewer)
_COMPILER = ThreadPoolExecutor(1, thread_name_prefix="compile")


def _chunk_batches(num_examples: int, batch_size: int) -> int:
    return max(1, min(CHUNK_BATCHES, -(-num_examples // batch_size)))


def checkpoint_steps(workdir: str) -> list[int]:
    """Steps of the checkpoints saved in `workdir` (oldest first)."""
    directory = os.path.join(files.absolute(workdir), "checkpoints")
    if not files.isdir(directory):
        return []
    steps = sorted(int(name) for name in files.listdir(directory) if name.isdigit())
    if files.is_remote(directory):  # in a bucket a save cut short leaves its step directory, unmarked
        steps = [s for s in steps if files.exists(os.path.join(directory, str(s), "commit_success.txt"))]
    return steps


def _read_checkpoint(workdir: str, step: int) -> dict[str, Any]:
    import orbax.checkpoint as ocp

    directory = os.path.join(files.absolute(workdir), "checkpoints")
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    try:
        return manager.restore(step, args=ocp.args.StandardRestore())
    finally:
        manager.close()


def _data_facts(workdir: str) -> dict[str, Any]:
    """`data_info.json`, or for an older run the same facts recomputed from its own training data."""
    info = read_data_info(workdir)
    if info is not None:
        return info
    from cnnjax.data import load_dataset

    dataset = load_dataset(read_run_config(workdir).data)  # the run's own data, never the overrides
    return parse_data_info(data_info(dataset.name, dataset.class_names, dataset.image_shape,
                                     dataset.mean, dataset.std))


def restore_run(workdir: str, config: ml_collections.ConfigDict | None = None,
                step: int | None = None) -> RestoredRun:
    """Restores the run in `workdir` at checkpoint `step` (the latest if None).

    Args:
      workdir: a training run's workdir.
      config: its config with overrides (default: the run's `config.json`); the
        model comes from `model.*` and `precision`, the data facts from the run.
      step: a checkpoint step; must be one of those saved.

    Raises:
      InferenceError: no such workdir / config / checkpoint, naming what exists.
    """
    if not files.isdir(workdir):
        raise InferenceError(f"--workdir={workdir} does not exist; point it at a training run's workdir.")
    if not files.exists(os.path.join(workdir, "config.json")):
        raise InferenceError(f"{workdir} has no config.json: it is not a training run's workdir.")
    steps = checkpoint_steps(workdir)
    if not steps:
        raise InferenceError(f"{workdir} has no checkpoint (nothing in {os.path.join(workdir, 'checkpoints')}); "
                             "train the run first.")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise InferenceError(f"--checkpoint_step={step}: {workdir} has no checkpoint at that step; "
                             f"available steps: {', '.join(map(str, steps))}.")
    config = config if config is not None else read_run_config(workdir)
    facts = _data_facts(workdir)
    from cnnjax.models import get_model
    from cnnjax.training.config import model_overrides
    from cnnjax.training.state import make_apply_fn

    model = get_model(config.model.name, len(facts["class_names"]), **model_overrides(config))
    saved = _read_checkpoint(workdir, step)
    ema = bool(saved.get("ema"))
    source = saved["ema"] if ema else saved
    variables = {"params": source["params"], "batch_stats": source.get("batch_stats") or {}}
    return RestoredRun(
        workdir=workdir, config=config, step=int(step), variables=jax.device_put(variables), ema=ema,
        class_names=facts["class_names"], image_shape=facts["image_shape"], mean=facts["mean"],
        std=facts["std"], apply=make_apply_fn(model, config.get("precision", "float32")),
    )


def convert_images(images: np.ndarray, image_shape: tuple[int, int, int], source: str) -> np.ndarray:
    """uint8 (N, H, W, C) images converted to the run's channels and resized to its (H, W).

    Grayscale becomes RGB by repetition, RGB becomes grayscale by luminance
    (ITU-R 601, as PIL's "L"), an alpha channel is dropped; a different size is
    resized bilinearly.

    Raises:
      InferenceError: images that are not (N, H, W, C) with 1, 3 or 4 channels.
    """
    height, width, channels = image_shape
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or channels not in (1, 3):
        raise InferenceError(
            f"{source}: images of shape {tuple(images.shape[1:])} cannot be converted to the run's input "
            f"{tuple(image_shape)}; only 1 (gray), 3 (RGB) or 4 (RGBA) channels can be converted.")
    if images.shape[-1] == 4:
        images = images[..., :3]
    if images.shape[-1] != channels:
        if channels == 3:
            images = np.repeat(images, 3, axis=-1)
        else:
            weights = np.array([299, 587, 114], np.float32) / 1000
            images = np.clip(np.rint(images.astype(np.float32) @ weights), 0, 255).astype(np.uint8)[..., None]
    if images.shape[1:3] != (height, width):
        from PIL import Image

        mode = "L" if channels == 1 else "RGB"
        images = np.stack([
            np.asarray(Image.fromarray(x[..., 0] if channels == 1 else x, mode).resize((width, height),
                                                                                      Image.BILINEAR))
            for x in images]).reshape(len(images), height, width, channels)
    return images

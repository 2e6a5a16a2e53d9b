"""Per-layer and per-model summaries: parameters and multiply-adds.

    python -m cnnjax.summary --model=resnet50
    python -m cnnjax.summary --model=lenet5 --num_classes=10 --input_shape=28,28,1
    python -m cnnjax.summary --all

Counting conventions:
  * parameters: the `params` collection only (conv and dense weights and biases,
    BN scale and bias, other trainable tensors); BN running statistics and other
    non-trainable state are excluded, so counts match torchvision's `numel`;
  * multiply-adds (MACs) for one example: a conv costs
    out_h * out_w * k_h * k_w * (c_in / groups) * c_out, a dense layer
    in * out; normalisation, activations, pooling and additions are not counted;
  * layers: conv and dense layers, each repetition of a scanned block counted;
    depth: the paper's nominal depth (`cnnjax.models.nominal_depth`).

Everything is traced abstractly with `jax.eval_shape`, so even VGG costs no memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnnjax import models


@dataclasses.dataclass
class LayerRow:
    """One parameterised module: where it is, what it produced, what it costs."""

    path: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    weight_layers: int


@dataclasses.dataclass
class ModelSummary:
    """Per-layer rows and totals for one model at one input shape."""

    rows: list[LayerRow]
    total_params: int
    total_macs: int
    weight_layers: int


def _first_array(tree: Any) -> Any:
    leaves = [leaf for leaf in jax.tree.leaves(tree) if hasattr(leaf, "shape")]
    return leaves[0] if leaves else None


def _subtree(tree: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def summarize(model: nn.Module, input_shape: Sequence[int], *, batch_size: int = 1) -> ModelSummary:
    """Traces `model` on a zero input of shape `(batch_size, *input_shape)`.

    Returns:
      One row per module that owns parameters directly, in call order, and the
      totals; MACs are per example.
    """
    calls: dict[tuple[str, ...], tuple[str, tuple[int, ...]]] = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            array = _first_array(out)
            if array is not None and context.module.path not in calls:
                calls[context.module.path] = (type(context.module).__name__, tuple(array.shape))
        return out

    def init():
        with nn.intercept_methods(record):
            rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
            x = jnp.zeros((batch_size, *input_shape), jnp.float32)
            return model.init(rngs, x, train=False)

    variables = jax.eval_shape(init)
    params = dict(variables.get("params", {}))
    rows = []
    for path, (kind, out_shape) in calls.items():
        owned = _subtree(params, path)
        if not isinstance(owned, dict):
            continue
        direct = {k: v for k, v in owned.items() if hasattr(v, "shape")}
        if not direct:
            continue
        count = sum(math.prod(v.shape) for v in direct.values())
        macs, weight_layers = 0, 0
        first = next(iter(direct.values()))
        # Scanned blocks stack their variables on a leading axis: show "xN".
        stacked = first.ndim > (len(out_shape) if kind == "Conv" else 2 if kind == "Dense" else 1)
        if stacked and kind in ("Conv", "Dense", "BatchNorm"):
            kind = f"{kind} x{first.shape[0]}"
        kernel = direct.get("kernel")
        spatial = math.prod(out_shape[1:-1]) if len(out_shape) > 2 else 1
        base_kind = kind.split(" ")[0]
        if kernel is not None and base_kind in ("Conv", "Dense"):
            # The per-call output shape times the stacked kernel size counts every repeat.
            natural_ndim = 2 if base_kind == "Dense" else len(out_shape)
            repeats = math.prod(kernel.shape[: kernel.ndim - natural_ndim])
            macs = spatial * math.prod(kernel.shape)
            weight_layers = repeats
        rows.append(LayerRow("/".join(path), kind, out_shape, count, macs, weight_layers))
    total = sum(math.prod(v.shape) for v in jax.tree.leaves(params))
    return ModelSummary(
        rows=rows,
        total_params=total,
        total_macs=sum(r.macs for r in rows),
        weight_layers=sum(r.weight_layers for r in rows),
    )


def default_num_classes(name: str) -> int:
    """1000 for models designed for ImageNet-sized inputs, 10 otherwise."""
    return 1000 if models.canonical_input_shape(name)[0] >= 224 else 10


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(header)] + [[f"{c:,}" if isinstance(c, int) else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for index, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 or not c[:1].isdigit() else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            )
        )
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_model(name: str, summary: ModelSummary, input_shape: Sequence[int]) -> str:
    """The per-layer table of one model, with totals."""
    rows = [(r.path, r.kind, "x".join(map(str, r.output_shape[1:])), r.params, r.macs) for r in summary.rows]
    rows.append(("total", "", "", summary.total_params, summary.total_macs))
    title = (
        f"{name} at {'x'.join(map(str, input_shape))}: {summary.total_params:,} parameters, "
        f"{summary.total_macs:,} multiply-adds, {summary.weight_layers} conv/dense layers"
    )
    return title + "\n" + _table(("layer", "type", "output", "params", "MACs"), rows)


def summarize_all(sort_by: str = "depth") -> str:
    """One row per registered model at its canonical input."""
    rows = []
    for name in models.list_models():
        shape = models.canonical_input_shape(name)
        summary = summarize(models.get_model(name, default_num_classes(name)), shape)
        rows.append(
            (
                name,
                "x".join(map(str, shape)),
                summary.total_params,
                summary.total_macs,
                models.nominal_depth(name),
                summary.weight_layers,
            )
        )
    key = {"name": 0, "params": 2, "macs": 3, "depth": 4}[sort_by]
    rows.sort(key=lambda row: (row[key], row[0]))
    return _table(("model", "input", "params", "MACs", "depth", "layers"), rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cnnjax.summary", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="registered model name")
    parser.add_argument("--num_classes", type=int, help="default: 1000 for ImageNet models, else 10")
    parser.add_argument("--input_shape", help="H,W,C (default: the model's canonical input)")
    parser.add_argument("--all", action="store_true", help="one row per registered model")
    parser.add_argument("--sort", default="depth", choices=("name", "params", "macs", "depth"))
    args = parser.parse_args(argv)
    if args.all:
        print(summarize_all(args.sort))
        return
    if not args.model:
        parser.error("give --model=NAME or --all")
    shape = (
        tuple(int(d) for d in args.input_shape.split(","))
        if args.input_shape
        else models.canonical_input_shape(args.model)
    )
    num_classes = args.num_classes or default_num_classes(args.model)
    model = models.get_model(args.model, num_classes)
    print(format_model(args.model, summarize(model, shape), shape))


if __name__ == "__main__":
    main()

"""2-D convolutions on CPU through oneDNN, as XLA custom calls (`onednn_conv`).

XLA's own CPU convolution kernels run ResNet-sized 3x3 layers (16-64
channels) at a fraction of the machine's peak, and every lowering to XLA
matmuls (`im2col_conv`, `banded_conv`) stays near them. oneDNN's direct
convolutions with channel-blocked layouts, the kernels PyTorch uses on CPU,
run the forward pass, the input gradient and the weight gradient near peak.
`onednn_conv` calls them through three XLA FFI handlers
(`onednn_conv.cc`), with a `custom_vjp` so a gradient runs oneDNN's backward
primitives.

The handlers are compiled once per machine with the C++ compiler (`$CXX` or
`g++`) against jaxlib's FFI headers and the oneDNN that pip installed
(`onednn-cpu-gomp`, Linux x86-64), and cached under `$XDG_CACHE_HOME/cnnjax`
(or `~/.cache/cnnjax`). Where any piece is missing (another OS, no compiler,
no oneDNN, a failed build) `available()` is False, `unavailable_reason()` says
why, and `conv_impl=auto` keeps XLA's lowerings. `CNNJAX_ONEDNN=0` turns it
off; `CNNJAX_ONEDNN_ROOT` names another oneDNN install (with `lib/` and
`include/`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any

import jax
import numpy as np

_SOURCE = pathlib.Path(__file__).with_name("onednn_conv.cc")
_HANDLERS = {
    "forward": "CnnjaxConvForward",
    "input_gradient": "CnnjaxConvInputGradient",
    "weight_gradient": "CnnjaxConvWeightGradient",
}
_TARGET_PREFIX = "cnnjax_onednn_conv_"
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}


def _onednn_root() -> pathlib.Path | None:
    candidates = [os.environ.get("CNNJAX_ONEDNN_ROOT"), sys.prefix, sys.base_prefix]
    for root in candidates:
        if root and (pathlib.Path(root) / "lib" / "libdnnl.so.3").exists() and (
                pathlib.Path(root) / "include" / "oneapi" / "dnnl" / "dnnl.h").exists():
            return pathlib.Path(root)
    return None


def _cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "cnnjax"


def _build(root: pathlib.Path) -> pathlib.Path:
    """The compiled handlers' shared library, built on first use and cached (atomic rename)."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'g++')!r} is not on PATH)")
    include = pathlib.Path(jax.ffi.include_dir())
    lib = root / "lib"
    digest = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), jax.__version__.encode(), str(root).encode(), compiler.encode()):
        digest.update(part)
    out_dir = _cache_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        out_dir = pathlib.Path(tempfile.gettempdir()) / "cnnjax-cache"
        out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"onednn_conv-{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    fd, partial = tempfile.mkstemp(dir=out_dir, prefix=target.name + ".", suffix=".partial")
    os.close(fd)
    command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{include}", f"-I{root / 'include'}",
               str(_SOURCE), "-o", partial, f"-L{lib}", "-l:libdnnl.so.3", f"-Wl,-rpath,{lib}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {_SOURCE.name} failed: {result.stderr.strip()[-800:]}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _load() -> str | None:
    """Builds and registers the handlers; the reason they are unavailable, or None."""
    if os.environ.get("CNNJAX_ONEDNN", "1") == "0":
        return "turned off by CNNJAX_ONEDNN=0"
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"oneDNN kernels are built for Linux x86-64 only (this is {sys.platform} {platform.machine()})"
    root = _onednn_root()
    if root is None:
        return ("oneDNN not found (pip install onednn-cpu-gomp onednn-devel-cpu-gomp, "
                "or set CNNJAX_ONEDNN_ROOT to a directory with lib/libdnnl.so.3 and include/oneapi/dnnl)")
    try:
        library = ctypes.CDLL(str(_build(root)))
        for name, symbol in _HANDLERS.items():
            jax.ffi.register_ffi_target(_TARGET_PREFIX + name, jax.ffi.pycapsule(getattr(library, symbol)),
                                        platform="cpu")
    except (OSError, RuntimeError, AttributeError) as error:
        return str(error)
    _STATE["library"] = library
    return None


def unavailable_reason() -> str | None:
    """Why the oneDNN convolutions cannot run here, or None when they can (builds them on first call)."""
    with _LOCK:
        if "reason" not in _STATE:
            _STATE["reason"] = _load()
        return _STATE["reason"]


def available() -> bool:
    return unavailable_reason() is None


def applies(x_shape, kernel_shape, strides, pads, dtype, feature_group_count: int = 1) -> bool:
    """Whether `onednn_conv` takes this layer: float32, ungrouped, padding within the kernel."""
    kh, kw = kernel_shape[:2]
    return (len(x_shape) == 4 and np.dtype(dtype) == np.float32 and feature_group_count == 1
            and all(0 <= lo < k and 0 <= hi < k for (lo, hi), k in zip(pads, (kh, kw))))


def _call(kind: str, shape, a, b, strides, pads):
    (top, bottom), (left, right) = pads
    return jax.ffi.ffi_call(_TARGET_PREFIX + kind, jax.ShapeDtypeStruct(shape, a.dtype), vmap_method="sequential")(
        a, b, stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]), pad_top=np.int64(top),
        pad_bottom=np.int64(bottom), pad_left=np.int64(left), pad_right=np.int64(right))


def onednn_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads) -> jax.Array:
    """oneDNN's convolution of NHWC `x` with an HWIO `kernel` (explicit `pads`), gradients too.

    The same as `xla_conv` up to float32 summation order. Requires `applies(...)`;
    builds and registers the kernels on first use (a RuntimeError says why where
    they are unavailable).
    """
    if (reason := unavailable_reason()) is not None:
        raise RuntimeError(f"oneDNN convolutions are unavailable here: {reason}")
    return _onednn_conv(x, kernel, tuple(strides), tuple(tuple(p) for p in pads))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _onednn_conv(x, kernel, strides, pads):
    n, h, w, _ = x.shape
    kh, kw, _, cout = kernel.shape
    oh = (h + sum(pads[0]) - kh) // strides[0] + 1
    ow = (w + sum(pads[1]) - kw) // strides[1] + 1
    return _call("forward", (n, oh, ow, cout), x, kernel, strides, pads)


def _onednn_conv_fwd(x, kernel, strides, pads):
    return _onednn_conv(x, kernel, strides, pads), (x, kernel)


def _onednn_conv_bwd(strides, pads, residuals, cotangent):
    x, kernel = residuals
    cotangent = cotangent.astype(x.dtype)
    dx = _call("input_gradient", x.shape, cotangent, kernel, strides, pads)
    dkernel = _call("weight_gradient", kernel.shape, x, cotangent, strides, pads)
    return dx, dkernel


_onednn_conv.defvjp(_onednn_conv_fwd, _onednn_conv_bwd)

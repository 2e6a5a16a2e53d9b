"""Max pooling over non-overlapping tiles with a cheap gradient (the CPU lowering of `layers.max_pool`).

XLA lowers the gradient of reduce-window max to select-and-scatter, which on
CPU becomes a scatter with index arrays the size of the input; routing each
window's cotangent from a small saved index is several times faster.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_tiles(x: jax.Array, window: int) -> jax.Array:
    """Max pooling of NHWC `x` over window x window tiles (dimensions divisible by `window`)."""
    return _max_pool_tiles_fwd(x, window)[0]


def _max_pool_tiles_fwd(x: jax.Array, window: int):
    batch, height, width, channels = x.shape
    # A reduction, not an elementwise maximum of slices: XLA then writes the pooled
    # map once instead of recomputing it (and the layers before it) inside every
    # slice the next convolution takes of it.
    pooled = x.reshape(batch, height // window, window, width // window, window, channels).max(axis=(2, 4))
    corners = [x[:, i::window, j::window] for i in range(window) for j in range(window)]
    index_dtype = jnp.int8 if window * window <= 127 else jnp.int32
    # Row-major index of the first element equal to the maximum (ties go to the first).
    first = jnp.full(pooled.shape, window * window - 1, index_dtype)
    for index in range(window * window - 2, -1, -1):
        first = jnp.where(corners[index] == pooled, jnp.asarray(index, index_dtype), first)
    return pooled, first


def _max_pool_tiles_bwd(window: int, first: jax.Array, cotangent: jax.Array):
    batch, height, width, channels = cotangent.shape
    position = window * jnp.arange(window)[:, None] + jnp.arange(window)[None, :]
    chosen = first[:, :, None, :, None, :] == position.astype(first.dtype)[None, None, :, None, :, None]
    grad = jnp.where(chosen, cotangent[:, :, None, :, None, :], jnp.zeros((), cotangent.dtype))
    return (grad.reshape(batch, height * window, width * window, channels),)


max_pool_tiles.defvjp(_max_pool_tiles_fwd, _max_pool_tiles_bwd)

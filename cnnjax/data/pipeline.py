"""Device-resident batching: the data set lives on the accelerator as uint8.

Every epoch draws a permutation on device; each step gathers its batch by index,
normalises it and augments it (random crop with zero padding, horizontal flip) on
device, so no training step waits on the host. All functions are pure and
jit/vmap friendly: a population vmaps them over per-member keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def epoch_permutation(key: jax.Array, epoch: jax.Array | int, num_examples: int) -> jax.Array:
    """The example order of `epoch`: a function of (key, epoch) only, so a resumed
    run sees exactly the order an uninterrupted one would."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


def normalize(images_uint8: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """uint8 images to float32 `(x/255 - mean) / std`."""
    return (images_uint8.astype(jnp.float32) / 255.0 - mean) / std


def random_crop(key: jax.Array, images: jax.Array, padding: int) -> jax.Array:
    """Zero-pads by `padding` pixels and crops back at a random offset per image."""
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

    def crop(image, offset):
        return lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Flips each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1, :], images)


def augment(key: jax.Array, images: jax.Array, crop_padding: int = 0, flip: bool = False) -> jax.Array:
    """Applies the configured augmentations (static switches)."""
    crop_key, flip_key = jax.random.split(key)
    if crop_padding > 0:
        images = random_crop(crop_key, images, crop_padding)
    if flip:
        images = random_flip(flip_key, images)
    return images


def train_batch(
    images: jax.Array,
    labels: jax.Array,
    permutation: jax.Array,
    index: jax.Array | int,
    key: jax.Array,
    *,
    batch_size: int,
    mean: jax.Array,
    std: jax.Array,
    crop_padding: int = 0,
    flip: bool = False,
) -> dict[str, jax.Array]:
    """Batch number `index` of the epoch whose order is `permutation`."""
    rows = lax.dynamic_slice(permutation, (index * batch_size,), (batch_size,))
    x = normalize(images[rows], mean, std)
    x = augment(key, x, crop_padding, flip)
    return {"image": x, "label": labels[rows]}


def pad_for_eval(images: np.ndarray, labels: np.ndarray, batch_size: int):
    """Pads a split to whole batches and reshapes it to [num_batches, batch, ...].

    Returns (images, labels, mask) with mask 1 on real rows.
    """
    n = len(labels)
    num_batches = max(1, -(-n // batch_size))
    total = num_batches * batch_size
    pad = total - n
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    shape = (num_batches, batch_size)
    return (
        images.reshape(shape + images.shape[1:]),
        labels.reshape(shape),
        mask.reshape(shape),
    )
